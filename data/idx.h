// IDX (MNIST-format) file reader at the raw byte level: header checks, gzip or
// plain input, and the MNIST image/label pair. It returns bytes and dims only;
// it is not a Dataset and knows nothing about Tensor (data/ builds those on top).
// Every failure is a vgrad::Error (a std::runtime_error) naming the file, what and why.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace vgrad::data {

// IDX header magics (big-endian first four bytes): 0x00, 0x00, type, ndims.
inline constexpr uint32_t kIdxMagicLabels = 0x00000801;  // uint8, 1 dim (N)
inline constexpr uint32_t kIdxMagicImages = 0x00000803;  // uint8, 3 dims (N, rows, cols)

// One IDX file. Only type 0x08 (unsigned byte) is supported, so `bytes` is the
// payload as stored: no byte-order conversion is needed.
struct IdxArray {
  uint8_t type_code = 0;
  std::vector<int64_t> dims;
  std::vector<uint8_t> bytes;  // row-major, product(dims) elements

  // The four header bytes as one big-endian number (e.g. 0x00000803).
  uint32_t magic() const { return (uint32_t{type_code} << 8) | static_cast<uint32_t>(dims.size()); }
};

// The most data bytes read_idx accepts unless the caller passes more: 1 GiB, 20
// times MNIST's training images. A header's size is checked against it before
// anything is allocated, so a gzip bomb (a 2 GB size declared in a 2 MB .gz) is
// refused with the file's name instead of ending in std::bad_alloc.
inline constexpr int64_t kDefaultIdxMaxBytes = int64_t{1} << 30;

// Reads `path` through zlib, so both .gz and plain files work. When
// `expected_magic` is given it is checked right after the first four bytes,
// before any data is read. Throws on: missing/unreadable file or one that is not
// a regular file (FIFO, directory, device), header shorter than 4 bytes, nonzero
// first two bytes, bad magic, type other than 0x08, ndims outside 1..4, truncated
// dims, a declared size over `max_bytes`, truncated data (expected vs got bytes),
// trailing bytes after the data, and gzip corruption (zlib's own message).
IdxArray read_idx(const std::string& path, std::optional<uint32_t> expected_magic = std::nullopt,
                  int64_t max_bytes = kDefaultIdxMaxBytes);

// The header alone (type and dims; `bytes` stays empty), with read_idx's header
// checks: reads 4 + 4 * ndims bytes, whatever the file's size.
IdxArray read_idx_header(const std::string& path, std::optional<uint32_t> expected_magic = std::nullopt);

// An MNIST-style split: `count` images of rows x cols uint8 pixels (row-major,
// N x rows x cols) and one uint8 label per image.
struct RawImageSet {
  int64_t count = 0;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<uint8_t> pixels;
  std::vector<uint8_t> labels;
};

// Reads an images file (magic 0x803) and a labels file (magic 0x801) and checks
// that they hold the same number of items (the error names both files and both
// counts), and that there is at least one image of at least one pixel.
RawImageSet read_mnist_pair(const std::string& images_path, const std::string& labels_path,
                            int64_t max_bytes = kDefaultIdxMaxBytes);

struct MnistPaths {
  std::string images;
  std::string labels;
};

// Resolves `directory` + split ("train", or "test"/"t10k") to the standard file
// names, e.g. train-images-idx3-ubyte(.gz). When both the .gz and the plain
// file exist the .gz wins: it carries a CRC, so a damaged copy is detected.
// Throws listing every path it looked for when neither exists.
MnistPaths resolve_mnist_paths(const std::string& directory, const std::string& split);

// resolve_mnist_paths + read_mnist_pair.
RawImageSet read_mnist_split(const std::string& directory, const std::string& split,
                             int64_t max_bytes = kDefaultIdxMaxBytes);

}  // namespace vgrad::data
