// IDX reader implementation: zlib gz* streaming reads with strict header and
// length checks. Not a decoder for IDX types other than 0x08 (uint8).
#include "data/idx.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <stdexcept>

#include "core/error.h"
#include "core/regular_file.h"

namespace vgrad::data {
namespace {

[[noreturn]] void throw_error(const std::string& path, const std::string& why) {
  throw Error("idx: " + path + ": " + why);
}

std::string hex32(uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%08X", value);
  return text;
}

std::string hex8(uint8_t value) {
  char text[8];
  std::snprintf(text, sizeof text, "0x%02X", value);
  return text;
}

// Owns a gzFile. zlib reads plain files transparently, so one path serves both.
class GzReader {
 public:
  explicit GzReader(const std::string& path) : path_(path) {
    const int fd = open_regular_file(path, "idx");  // a FIFO would block gzopen forever
    errno = 0;
    file_ = gzdopen(fd, "rb");
    if (file_ == nullptr) {
      ::close(fd);
      throw_error(path_, std::string("cannot open: ") + (errno != 0 ? std::strerror(errno) : "gzdopen failed"));
    }
    // A larger input buffer than zlib's 8 KiB default cuts syscalls on the
    // 26 MB training images; failure here only costs speed, so it is ignored.
    gzbuffer(file_, 1 << 17);
  }
  ~GzReader() {
    if (file_ != nullptr) gzclose(file_);
  }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;

  // Reads up to `count` bytes into `dst`; returns how many were read (fewer
  // only at end of input). Throws on a read or decompression error.
  int64_t read(uint8_t* dst, int64_t count) {
    // gzread takes an unsigned and returns an int: feed it bounded chunks.
    constexpr int64_t kChunk = 1 << 20;
    int64_t total = 0;
    while (total < count) {
      const auto want = static_cast<unsigned>(std::min(kChunk, count - total));
      // gzread gives -1 on any hard error (zlib drops what that call decoded);
      // only "unexpected end of file" comes back as a short read instead.
      const int got = gzread(file_, dst + total, want);
      if (got < 0) throw_error(path_, "read error: " + error_text());
      total += got;
      if (static_cast<unsigned>(got) < want) break;  // end of input
    }
    return total;
  }

  // zlib's message for a pending error, or "" when there is none. A gzip
  // stream cut short reads as a short read plus "unexpected end of file".
  std::string error_text() const {
    int code = Z_OK;
    const char* message = gzerror(file_, &code);
    if (code == Z_OK) return "";
    // For Z_ERRNO zlib has already captured strerror in the message; errno
    // itself may be stale by now.
    std::string text = message != nullptr ? message : "unknown zlib error";
    // zlib prefixes "<fd:N>: " (the file was opened with gzdopen); our own prefix
    // already names the path.
    if (text.rfind("<fd:", 0) == 0) {
      if (const size_t end = text.find(">: "); end != std::string::npos) text.erase(0, end + 3);
    }
    return text;
  }

 private:
  std::string path_;
  gzFile file_ = nullptr;
};

// Appends " (gzip: ...)" when zlib has an error to explain a short read.
std::string with_zlib_reason(const GzReader& reader) {
  const std::string reason = reader.error_text();
  return reason.empty() ? "" : " (gzip: " + reason + ")";
}

// Reads and checks the magic and the dims; leaves `reader` at the first data byte.
IdxArray read_header(GzReader& reader, const std::string& path, std::optional<uint32_t> expected_magic) {
  // Every check below follows a read; if zlib saw the input end early, say so,
  // since a cut-off or garbled .gz can decode into plausible-looking bytes.
  const auto throw_read_error = [&](const std::string& why) { throw_error(path, why + with_zlib_reason(reader)); };

  uint8_t header[4] = {};
  const int64_t header_got = reader.read(header, 4);
  if (header_got < 4) {
    throw_read_error("truncated header: expected 4 bytes, got " + std::to_string(header_got));
  }
  const uint32_t magic =
      (uint32_t{header[0]} << 24) | (uint32_t{header[1]} << 16) | (uint32_t{header[2]} << 8) | uint32_t{header[3]};
  if (expected_magic && magic != *expected_magic) {
    throw_read_error("bad magic " + hex32(magic) + " (expected " + hex32(*expected_magic) + ")");
  }
  if (header[0] != 0 || header[1] != 0) {
    throw_read_error("bad magic " + hex32(magic) + " (the first two bytes of an IDX file must be zero)");
  }
  const uint8_t type_code = header[2];
  const int ndims = header[3];
  if (type_code != 0x08) {
    throw_read_error("unsupported IDX type " + hex8(type_code) + " (only 0x08, unsigned byte, is supported)");
  }
  if (ndims < 1 || ndims > 4) {
    throw_read_error("bad number of dimensions " + std::to_string(ndims) + " (expected 1 to 4)");
  }

  uint8_t dim_bytes[16] = {};
  const int64_t dims_expected = 4 * int64_t{ndims};
  const int64_t dims_got = reader.read(dim_bytes, dims_expected);
  if (dims_got < dims_expected) {
    throw_read_error("truncated header: expected " + std::to_string(dims_expected) + " bytes of dimensions, got " +
                     std::to_string(dims_got));
  }

  IdxArray result;
  result.type_code = type_code;
  int64_t expected_bytes = 1;
  for (int d = 0; d < ndims; ++d) {
    const uint8_t* b = dim_bytes + 4 * d;
    const int64_t size = (int64_t{b[0]} << 24) | (int64_t{b[1]} << 16) | (int64_t{b[2]} << 8) | int64_t{b[3]};
    result.dims.push_back(size);
    // Four uint32 dims can exceed int64; refuse rather than wrap.
    if (__builtin_mul_overflow(expected_bytes, size, &expected_bytes)) {
      throw_read_error("dimensions overflow a 64-bit element count");
    }
  }
  return result;
}

int64_t element_count(const IdxArray& array) {
  int64_t count = 1;
  for (int64_t size : array.dims) count *= size;  // read_header has ruled out overflow
  return count;
}

std::string dims_text(const std::vector<int64_t>& dims) {
  std::string text;
  for (size_t i = 0; i < dims.size(); ++i) text += (i ? " x " : "") + std::to_string(dims[i]);
  return text;
}

}  // namespace

IdxArray read_idx_header(const std::string& path, std::optional<uint32_t> expected_magic) {
  GzReader reader(path);
  return read_header(reader, path, expected_magic);
}

IdxArray read_idx(const std::string& path, std::optional<uint32_t> expected_magic, int64_t max_bytes) {
  GzReader reader(path);
  const auto throw_read_error = [&](const std::string& why) { throw_error(path, why + with_zlib_reason(reader)); };
  IdxArray result = read_header(reader, path, expected_magic);
  const int64_t expected_bytes = element_count(result);
  // The header is checked before a byte is allocated: a 2 GB size declared in a
  // 2 MB .gz (a gzip bomb) would otherwise end in std::bad_alloc.
  if (expected_bytes > max_bytes) {
    throw_error(path, "header declares " + dims_text(result.dims) + " = " + std::to_string(expected_bytes) +
                          " data bytes, over the limit of " + std::to_string(max_bytes) +
                          " (pass a larger max_bytes to read it)");
  }

  // Grow in chunks instead of allocating product(dims) up front: a corrupt
  // header must give "truncated", not a multi-terabyte allocation.
  constexpr int64_t kGrowStep = int64_t{1} << 24;
  result.bytes.reserve(static_cast<size_t>(std::min(expected_bytes, kGrowStep)));
  int64_t data_got = 0;
  while (data_got < expected_bytes) {
    const int64_t step = std::min(kGrowStep, expected_bytes - data_got);
    result.bytes.resize(static_cast<size_t>(data_got + step));
    const int64_t got = reader.read(result.bytes.data() + data_got, step);
    data_got += got;
    if (got < step) break;
  }
  if (data_got < expected_bytes) {
    throw_read_error("truncated: expected " + std::to_string(expected_bytes) + " data bytes, got " +
                     std::to_string(data_got));
  }

  // Anything after the data means the header lies about the size (or two files
  // were concatenated); reading it also surfaces a bad gzip CRC, which zlib
  // reports only once the stream's trailer is reached.
  int64_t trailing = 0;
  uint8_t scratch[4096];
  for (int64_t got; (got = reader.read(scratch, sizeof scratch)) > 0;) trailing += got;
  if (trailing > 0) {
    throw_read_error(std::to_string(trailing) + " trailing bytes after the " + std::to_string(expected_bytes) +
                     " data bytes the header describes");
  }
  if (const std::string reason = reader.error_text(); !reason.empty()) {
    throw_error(path, "gzip error: " + reason);
  }
  return result;
}

RawImageSet read_mnist_pair(const std::string& images_path, const std::string& labels_path, int64_t max_bytes) {
  // Labels first: the small file fails fast if the pair is wrong.
  IdxArray labels = read_idx(labels_path, kIdxMagicLabels, max_bytes);
  IdxArray images = read_idx(images_path, kIdxMagicImages, max_bytes);
  if (images.dims[0] != labels.dims[0]) {
    throw Error("mnist: image/label count mismatch: " + images_path + " has " + std::to_string(images.dims[0]) +
                " images but " + labels_path + " has " + std::to_string(labels.dims[0]) + " labels");
  }
  // An empty split would train nothing and score 0/0 = NaN accuracy.
  if (images.dims[0] == 0) throw Error("mnist: " + images_path + ": holds no images (an empty data set)");
  if (images.dims[1] == 0 || images.dims[2] == 0) {
    throw Error("mnist: " + images_path + ": images of " + dims_text({images.dims[1], images.dims[2]}) +
                " pixels hold nothing");
  }
  RawImageSet set;
  set.count = images.dims[0];
  set.rows = images.dims[1];
  set.cols = images.dims[2];
  set.pixels = std::move(images.bytes);
  set.labels = std::move(labels.bytes);
  return set;
}

MnistPaths resolve_mnist_paths(const std::string& directory, const std::string& split) {
  std::string prefix;
  if (split == "train") {
    prefix = "train";
  } else if (split == "test" || split == "t10k") {
    prefix = "t10k";
  } else {
    throw Error("mnist: unknown split '" + split + "' (expected \"train\" or \"test\")");
  }

  namespace fs = std::filesystem;
  const auto pick = [&](const std::string& stem) {
    const fs::path gz = fs::path(directory) / (prefix + stem + ".gz");
    const fs::path plain = fs::path(directory) / (prefix + stem);
    std::error_code ec;
    if (fs::is_regular_file(gz, ec)) return gz.string();
    if (fs::is_regular_file(plain, ec)) return plain.string();
    throw Error("mnist: no " + split + " file in " + directory + ": looked for " + gz.string() + " and " +
                plain.string());
  };
  MnistPaths paths;
  paths.images = pick("-images-idx3-ubyte");
  paths.labels = pick("-labels-idx1-ubyte");
  return paths;
}

RawImageSet read_mnist_split(const std::string& directory, const std::string& split, int64_t max_bytes) {
  const MnistPaths paths = resolve_mnist_paths(directory, split);
  return read_mnist_pair(paths.images, paths.labels, max_bytes);
}

}  // namespace vgrad::data
