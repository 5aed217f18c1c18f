// Tests for the IDX/MNIST reader: good reads of plain and gzip files, every
// header/data error with its message, the image/label pair and path resolution,
// and the checks the Mnist dataset makes at load (labels, empty sets, split sizes).
// Files are generated in a temp dir; the real Fashion-MNIST test is skipped if absent.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/dataset.h"
#include "data/idx.h"
#include "support.h"

namespace {

using vgrad_test::error_of;

namespace fs = std::filesystem;
using vgrad::data::IdxArray;
using vgrad::data::read_idx;
using vgrad::data::read_idx_header;

using Bytes = std::vector<uint8_t>;

// An IDX file image: magic 0x0000 type ndims, big-endian dims, then data.
Bytes idx_bytes(uint8_t type_code, const std::vector<uint32_t>& dims, const Bytes& data) {
  Bytes out = {0, 0, type_code, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    out.push_back(static_cast<uint8_t>(d >> 24));
    out.push_back(static_cast<uint8_t>(d >> 16));
    out.push_back(static_cast<uint8_t>(d >> 8));
    out.push_back(static_cast<uint8_t>(d));
  }
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

Bytes iota_bytes(size_t count, uint8_t start = 0) {
  Bytes out(count);
  for (size_t i = 0; i < count; ++i) out[i] = static_cast<uint8_t>(start + i * 7);
  return out;
}

void write_plain(const fs::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

void write_gz(const fs::path& path, const Bytes& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr) << path;
  if (!bytes.empty()) {
    ASSERT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  }
  ASSERT_EQ(gzclose(file), Z_OK);
}

Bytes read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}



using IdxTest = vgrad_test::TempDirTest;

TEST_F(IdxTest, ReadsPlainThreeDims) {
  const Bytes data = iota_bytes(2 * 3 * 4);
  write_plain(path("a.idx"), idx_bytes(0x08, {2, 3, 4}, data));
  const IdxArray array = read_idx(path("a.idx"));
  EXPECT_EQ(array.type_code, 0x08);
  EXPECT_EQ(array.dims, (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(array.bytes, data);
  EXPECT_EQ(array.magic(), 0x00000803u);
}

TEST_F(IdxTest, ReadsGzipSameAsPlain) {
  const Bytes data = iota_bytes(5 * 6, 3);
  const Bytes file = idx_bytes(0x08, {5, 6}, data);
  write_plain(path("b.idx"), file);
  write_gz(path("b.idx.gz"), file);
  // The .gz must really be compressed, or this would not test decompression.
  ASSERT_NE(read_file(path("b.idx.gz")), file);
  const IdxArray plain = read_idx(path("b.idx"));
  const IdxArray gz = read_idx(path("b.idx.gz"), 0x00000802);
  EXPECT_EQ(gz.dims, (std::vector<int64_t>{5, 6}));
  EXPECT_EQ(gz.bytes, data);
  EXPECT_EQ(gz.dims, plain.dims);
  EXPECT_EQ(gz.bytes, plain.bytes);
}

TEST_F(IdxTest, ReadsOneAndFourDimsAndLargeSizes) {
  const Bytes labels = {9, 0, 255, 1, 7};
  write_gz(path("l.gz"), idx_bytes(0x08, {5}, labels));
  const IdxArray one = read_idx(path("l.gz"), vgrad::data::kIdxMagicLabels);
  EXPECT_EQ(one.dims, (std::vector<int64_t>{5}));
  EXPECT_EQ(one.bytes, labels);

  // Dims above 255 exercise all four big-endian bytes: 300 * 2 * 1 * 70 = 42000.
  const Bytes data = iota_bytes(42000);
  write_gz(path("four.gz"), idx_bytes(0x08, {300, 2, 1, 70}, data));
  const IdxArray four = read_idx(path("four.gz"));
  EXPECT_EQ(four.dims, (std::vector<int64_t>{300, 2, 1, 70}));
  EXPECT_EQ(four.bytes, data);
}

TEST_F(IdxTest, ZeroSizedDimensionIsEmpty) {
  write_plain(path("empty.idx"), idx_bytes(0x08, {0, 28, 28}, {}));
  const IdxArray array = read_idx(path("empty.idx"));
  EXPECT_EQ(array.dims, (std::vector<int64_t>{0, 28, 28}));
  EXPECT_TRUE(array.bytes.empty());
}

TEST_F(IdxTest, MissingFile) {
  const std::string missing = path("nope.gz");
  EXPECT_THROW(read_idx(missing), vgrad::Error);  // callers can catch vgrad's one error type
  const std::string message = error_of([&] { read_idx(missing); });
  EXPECT_CONTAINS(message, "idx: " + missing + ": cannot open");
  EXPECT_CONTAINS(message, "No such file");
}

TEST_F(IdxTest, NonRegularFilesAreRefusedByType) {
  EXPECT_EQ(error_of([&] { read_idx(dir_.string()); }), "idx: " + dir_.string() + ": not a regular file (a directory)");
  // A FIFO used to block gzopen forever; the watchdog turns a hang into a failure.
  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0600), 0);
  ::alarm(20);
  EXPECT_EQ(error_of([&] { read_idx(path("fifo")); }), "idx: " + path("fifo") + ": not a regular file (a FIFO)");
  EXPECT_EQ(error_of([&] { read_idx_header("/dev/zero"); }), "idx: /dev/zero: not a regular file (a character device)");
  ::alarm(0);
}

TEST_F(IdxTest, BadMagicNamesBothValues) {
  write_gz(path("train-images-idx3-ubyte.gz"), idx_bytes(0x08, {3}, {1, 2, 3}));
  const std::string message =
      error_of([&] { read_idx(path("train-images-idx3-ubyte.gz"), vgrad::data::kIdxMagicImages); });
  EXPECT_EQ(message, "idx: " + path("train-images-idx3-ubyte.gz") + ": bad magic 0x00000801 (expected 0x00000803)");
}

TEST_F(IdxTest, FirstTwoBytesMustBeZero) {
  Bytes file = idx_bytes(0x08, {2}, {1, 2});
  file[1] = 0x01;
  write_plain(path("x"), file);
  const std::string message = error_of([&] { read_idx(path("x")); });
  EXPECT_CONTAINS(message, "bad magic 0x00010801");
  EXPECT_CONTAINS(message, "first two bytes");
}

TEST_F(IdxTest, UnsupportedType) {
  write_plain(path("floats"), idx_bytes(0x0D, {1}, {0, 0, 0, 0}));
  const std::string message = error_of([&] { read_idx(path("floats")); });
  EXPECT_CONTAINS(message, "unsupported IDX type 0x0D");
}

TEST_F(IdxTest, BadDimensionCount) {
  write_plain(path("zero"), {0, 0, 8, 0});
  EXPECT_CONTAINS(error_of([&] { read_idx(path("zero")); }), "bad number of dimensions 0 (expected 1 to 4)");
  write_plain(path("five"), idx_bytes(0x08, {1, 1, 1, 1, 1}, {42}));
  EXPECT_CONTAINS(error_of([&] { read_idx(path("five")); }), "bad number of dimensions 5");
}

TEST_F(IdxTest, HeaderShorterThanFourBytes) {
  write_plain(path("short"), {0, 0});
  EXPECT_CONTAINS(error_of([&] { read_idx(path("short")); }),
                  "idx: " + path("short") + ": truncated header: expected 4 bytes, got 2");
  write_gz(path("empty.gz"), {});
  EXPECT_CONTAINS(error_of([&] { read_idx(path("empty.gz")); }), "truncated header: expected 4 bytes, got 0");
}

TEST_F(IdxTest, TruncatedDimensions) {
  Bytes file = idx_bytes(0x08, {10, 28, 28}, {});
  file.resize(4 + 6);  // 6 of the 12 dimension bytes
  write_plain(path("dims"), file);
  EXPECT_CONTAINS(error_of([&] { read_idx(path("dims")); }),
                  "truncated header: expected 12 bytes of dimensions, got 6");
}

TEST_F(IdxTest, TruncatedDataSaysExpectedAndGot) {
  Bytes file = idx_bytes(0x08, {4, 6}, iota_bytes(24));
  // erase, not a shrinking resize: GCC 12 under the sanitizers misreads that as a huge memset.
  file.erase(file.end() - 14, file.end());
  write_plain(path("t.idx"), file);
  write_gz(path("t.idx.gz"), file);
  for (const char* name : {"t.idx", "t.idx.gz"}) {
    EXPECT_EQ(error_of([&] { read_idx(path(name)); }),
              "idx: " + path(name) + ": truncated: expected 24 data bytes, got 10");
  }
}

TEST_F(IdxTest, HugeDimsGiveTruncatedNotAllocation) {
  // 4 x 2^32-1 would be ~2^128 bytes: must be refused as overflow, not attempted.
  write_plain(path("huge4"), idx_bytes(0x08, {0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, {1}));
  EXPECT_CONTAINS(error_of([&] { read_idx(path("huge4")); }), "overflow");
  // (2^32-1) x (2^31-1) fits int64 but the file has 3 bytes: under a raised limit,
  // report it, no giant buffer.
  write_plain(path("huge2"), idx_bytes(0x08, {0xFFFFFFFF, 0x7FFFFFFF}, {1, 2, 3}));
  EXPECT_CONTAINS(error_of([&] { read_idx(path("huge2"), std::nullopt, INT64_MAX); }),
                  "truncated: expected 9223372030412324865 data bytes, got 3");
}

TEST_F(IdxTest, GzipBombIsRefusedBeforeAllocating) {
  // An honest header for 2^31 bytes (one 46341 x 46341 image) whose data is 1 MB of
  // zeros that compress to ~1 KB. The whole 2 GB stream would compress to ~2 MB;
  // it used to end in std::bad_alloc once the dataset converted it to float.
  Bytes file = idx_bytes(0x08, {1, 46341, 46341}, Bytes(1 << 20, 0));
  write_gz(path("bomb.gz"), file);
  ASSERT_LT(fs::file_size(path("bomb.gz")), 10'000u);
  EXPECT_EQ(error_of([&] { read_idx(path("bomb.gz")); }),
            "idx: " + path("bomb.gz") +
                ": header declares 1 x 46341 x 46341 = 2147488281 data bytes, over the limit of 1073741824 (pass a "
                "larger max_bytes to read it)");
}

TEST_F(IdxTest, ByteLimitIsTheCallersToRaise) {
  write_gz(path("l.gz"), idx_bytes(0x08, {100}, iota_bytes(100)));
  EXPECT_CONTAINS(error_of([&] { read_idx(path("l.gz"), std::nullopt, 99); }), "100 data bytes, over the limit of 99");
  EXPECT_EQ(read_idx(path("l.gz"), std::nullopt, 100).bytes.size(), 100u);
  EXPECT_EQ(vgrad::data::kDefaultIdxMaxBytes, int64_t{1} << 30);
}

TEST_F(IdxTest, HeaderAloneReadsOnlyTheHeader) {
  // Truncated data does not matter: only 4 + 4 * ndims bytes are read.
  write_gz(path("i.gz"), idx_bytes(0x08, {60000, 28, 28}, {1, 2, 3}));
  const IdxArray header = read_idx_header(path("i.gz"), vgrad::data::kIdxMagicImages);
  EXPECT_EQ(header.dims, (std::vector<int64_t>{60000, 28, 28}));
  EXPECT_TRUE(header.bytes.empty());
  EXPECT_CONTAINS(error_of([&] { read_idx_header(path("i.gz"), vgrad::data::kIdxMagicLabels); }),
                  "bad magic 0x00000803 (expected 0x00000801)");
}

TEST_F(IdxTest, TrailingBytesAreAnError) {
  Bytes file = idx_bytes(0x08, {3}, {1, 2, 3});
  file.insert(file.end(), {9, 9, 9, 9, 9});
  write_plain(path("trail"), file);
  write_gz(path("trail.gz"), file);
  for (const char* name : {"trail", "trail.gz"}) {
    EXPECT_EQ(error_of([&] { read_idx(path(name)); }),
              "idx: " + path(name) + ": 5 trailing bytes after the 3 data bytes the header describes");
  }
}

// The gzip of an IDX file of `n` bytes written to `file`, then `damage` applied to its
// bytes: what read_idx says about it.
template <class Damage> std::string damaged_gz_error(const std::string& file, uint32_t n, Damage damage) {
  write_gz(file, idx_bytes(0x08, {n}, iota_bytes(n)));
  Bytes gz = read_file(file);
  damage(gz);
  write_plain(file, gz);
  return error_of([&] { read_idx(file); });
}

TEST_F(IdxTest, GzipCorruptCrc) {
  // The gzip trailer: CRC32 then ISIZE.
  EXPECT_EQ(damaged_gz_error(path("crc.gz"), 100, [](Bytes& gz) { gz[gz.size() - 8] ^= 0xFF; }),
            "idx: " + path("crc.gz") + ": read error: incorrect data check");
}

TEST_F(IdxTest, GzipInvalidFirstBlock) {
  // First deflate block header: BFINAL=1, BTYPE=11 (reserved).
  EXPECT_EQ(damaged_gz_error(path("block.gz"), 100, [](Bytes& gz) { gz[10] = 0x07; }),
            "idx: " + path("block.gz") + ": read error: invalid block type");
}

TEST_F(IdxTest, GzipMissingTrailer) {
  // All data present but the CRC/size trailer cut off: still a damaged file.
  EXPECT_EQ(damaged_gz_error(path("notrailer.gz"), 100, [](Bytes& gz) { gz.erase(gz.end() - 8, gz.end()); }),
            "idx: " + path("notrailer.gz") + ": gzip error: unexpected end of file");
}

TEST_F(IdxTest, GzipCutShort) {
  const std::string message = damaged_gz_error(path("cut.gz"), 2000, [](Bytes& gz) { gz.erase(gz.begin() + gz.size() / 2, gz.end()); });
  EXPECT_CONTAINS(message, "idx: " + path("cut.gz") + ": truncated: expected 2000 data bytes, got ");
  EXPECT_CONTAINS(message, " (gzip: unexpected end of file)");
}

TEST_F(IdxTest, GzipGarbledStream) {
  // Keep the gzip header and the first deflate bytes, so zlib decodes some output (a
  // plausible IDX header) before it reaches the damage; that output must not be
  // reported as a bad magic or size: the error is the corrupt stream itself.
  const std::string message = damaged_gz_error(path("bad.gz"), 2000, [](Bytes& gz) {
    for (size_t i = 20; i < gz.size() - 8; ++i) gz[i] = 0x55;
  });
  EXPECT_CONTAINS(message, "idx: " + path("bad.gz") + ": read error: ");
}

// A level-0 gzip holds the bytes verbatim (10-byte gzip header, 5-byte stored
// block header, data), so cutting it at a byte count is exact.
void write_stored_gz_cut(const fs::path& path, const Bytes& bytes, size_t data_bytes_kept) {
  gzFile file = gzopen(path.c_str(), "wb0");
  ASSERT_NE(file, nullptr) << path;
  ASSERT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(file), Z_OK);
  Bytes gz = read_file(path);
  ASSERT_GE(gz.size(), 15 + bytes.size());
  ASSERT_TRUE(std::equal(bytes.begin(), bytes.end(), gz.begin() + 15));
  gz.resize(15 + data_bytes_kept);
  write_plain(path, gz);
}

TEST_F(IdxTest, GzipCutInHeaderSaysWhy) {
  const Bytes file = idx_bytes(0x08, {3}, {1, 2, 3});
  write_stored_gz_cut(path("h.gz"), file, 2);
  EXPECT_EQ(error_of([&] { read_idx(path("h.gz")); }),
            "idx: " + path("h.gz") + ": truncated header: expected 4 bytes, got 2 (gzip: unexpected end of file)");
  write_stored_gz_cut(path("d.gz"), file, 6);
  EXPECT_EQ(error_of([&] { read_idx(path("d.gz")); }),
            "idx: " + path("d.gz") +
                ": truncated header: expected 4 bytes of dimensions, got 2 (gzip: unexpected end of file)");
  // A header check that fails on a cut stream also names the cut.
  Bytes bad = file;
  bad[1] = 0x01;
  write_stored_gz_cut(path("m.gz"), bad, 4);
  EXPECT_EQ(
      error_of([&] { read_idx(path("m.gz")); }),
      "idx: " + path("m.gz") +
          ": bad magic 0x00010801 (the first two bytes of an IDX file must be zero) (gzip: unexpected end of file)");
}

// --- the MNIST pair ----------------------------------------------------------

TEST_F(IdxTest, ReadsMnistPair) {
  const Bytes pixels = iota_bytes(3 * 2 * 4);
  write_gz(path("imgs.gz"), idx_bytes(0x08, {3, 2, 4}, pixels));
  write_plain(path("labels"), idx_bytes(0x08, {3}, {7, 0, 9}));
  const auto set = vgrad::data::read_mnist_pair(path("imgs.gz"), path("labels"));
  EXPECT_EQ(set.count, 3);
  EXPECT_EQ(set.rows, 2);
  EXPECT_EQ(set.cols, 4);
  EXPECT_EQ(set.pixels, pixels);
  EXPECT_EQ(set.labels, (Bytes{7, 0, 9}));
}

TEST_F(IdxTest, MnistPairCountMismatchNamesBothFilesAndCounts) {
  write_gz(path("imgs.gz"), idx_bytes(0x08, {3, 2, 2}, iota_bytes(12)));
  write_gz(path("labels.gz"), idx_bytes(0x08, {4}, {1, 2, 3, 4}));
  const std::string message = error_of([&] { vgrad::data::read_mnist_pair(path("imgs.gz"), path("labels.gz")); });
  EXPECT_EQ(message, "mnist: image/label count mismatch: " + path("imgs.gz") + " has 3 images but " +
                         path("labels.gz") + " has 4 labels");
}

TEST_F(IdxTest, MnistPairRefusesEmptySetsAndEmptyImages) {
  // 0 images and 0 labels used to load, then score "test accuracy -nan%".
  write_gz(path("imgs.gz"), idx_bytes(0x08, {0, 28, 28}, {}));
  write_gz(path("labels.gz"), idx_bytes(0x08, {0}, {}));
  EXPECT_EQ(error_of([&] { vgrad::data::read_mnist_pair(path("imgs.gz"), path("labels.gz")); }),
            "mnist: " + path("imgs.gz") + ": holds no images (an empty data set)");
  write_gz(path("imgs.gz"), idx_bytes(0x08, {2, 0, 28}, {}));
  write_gz(path("labels.gz"), idx_bytes(0x08, {2}, {1, 2}));
  EXPECT_EQ(error_of([&] { vgrad::data::read_mnist_pair(path("imgs.gz"), path("labels.gz")); }),
            "mnist: " + path("imgs.gz") + ": images of 0 x 28 pixels hold nothing");
}

TEST_F(IdxTest, MnistPairSwappedFilesIsBadMagic) {
  write_gz(path("imgs.gz"), idx_bytes(0x08, {1, 2, 2}, {1, 2, 3, 4}));
  write_gz(path("labels.gz"), idx_bytes(0x08, {1}, {5}));
  EXPECT_EQ(error_of([&] { vgrad::data::read_mnist_pair(path("labels.gz"), path("imgs.gz")); }),
            "idx: " + path("imgs.gz") + ": bad magic 0x00000803 (expected 0x00000801)");
}

TEST_F(IdxTest, ResolvePrefersGzAndFallsBackToPlain) {
  write_gz(path("train-images-idx3-ubyte.gz"), idx_bytes(0x08, {1, 1, 2}, {10, 20}));
  write_plain(path("train-images-idx3-ubyte"), idx_bytes(0x08, {1, 1, 2}, {10, 20}));
  write_plain(path("train-labels-idx1-ubyte"), idx_bytes(0x08, {1}, {4}));
  const auto paths = vgrad::data::resolve_mnist_paths(dir_.string(), "train");
  EXPECT_EQ(paths.images, path("train-images-idx3-ubyte.gz"));
  EXPECT_EQ(paths.labels, path("train-labels-idx1-ubyte"));

  const auto set = vgrad::data::read_mnist_split(dir_.string(), "train");
  EXPECT_EQ(set.count, 1);
  EXPECT_EQ(set.pixels, (Bytes{10, 20}));
  EXPECT_EQ(set.labels, (Bytes{4}));
}

TEST_F(IdxTest, ResolveTestSplitIsT10k) {
  write_gz(path("t10k-images-idx3-ubyte.gz"), idx_bytes(0x08, {1, 1, 1}, {1}));
  write_gz(path("t10k-labels-idx1-ubyte.gz"), idx_bytes(0x08, {1}, {1}));
  for (const char* split : {"test", "t10k"}) {
    const auto paths = vgrad::data::resolve_mnist_paths(dir_.string(), split);
    EXPECT_EQ(paths.images, path("t10k-images-idx3-ubyte.gz"));
    EXPECT_EQ(paths.labels, path("t10k-labels-idx1-ubyte.gz"));
  }
}

TEST_F(IdxTest, ResolveListsWhatItLookedFor) {
  const std::string message = error_of([&] { vgrad::data::resolve_mnist_paths(dir_.string(), "test"); });
  EXPECT_CONTAINS(message,
                  "looked for " + path("t10k-images-idx3-ubyte.gz") + " and " + path("t10k-images-idx3-ubyte"));
  EXPECT_CONTAINS(error_of([&] { vgrad::data::resolve_mnist_paths(dir_.string(), "validation"); }),
                  "unknown split 'validation'");
}

// --- the Mnist dataset's checks at load --------------------------------------

// A split in MNIST's file names: images of rows x cols (pixel values unimportant).
void write_split(const fs::path& dir, const std::string& prefix, uint32_t rows, uint32_t cols, const Bytes& labels) {
  const auto count = static_cast<uint32_t>(labels.size());
  write_gz(dir / (prefix + "-images-idx3-ubyte.gz"), idx_bytes(0x08, {count, rows, cols}, iota_bytes(count * rows * cols)));
  write_gz(dir / (prefix + "-labels-idx1-ubyte.gz"), idx_bytes(0x08, {count}, labels));
}

TEST_F(IdxTest, MnistRefusesLabelsOutsideTheClassesNamingFileAndRecord) {
  // Label 200 used to load; in a test set it was silently scored wrong, in a training
  // set it failed as "row 7" of a shuffled batch, without the file.
  write_split(dir_, "t10k", 2, 2, {1, 9, 0, 3, 4, 5, 6, 200, 2});
  EXPECT_EQ(error_of([&] { vgrad::data::Mnist(dir_.string(), "test"); }),
            "mnist: " + path("t10k-labels-idx1-ubyte.gz") + ": label 200 of record 7 out of range for 10 classes");
  // The class count is the caller's: 3 classes refuse label 9 (record 1).
  write_split(dir_, "t10k", 2, 2, {1, 9, 0});
  EXPECT_CONTAINS(error_of([&] { vgrad::data::Mnist(dir_.string(), "test", {.classes = 3}); }),
                  "label 9 of record 1 out of range for 3 classes");
  const vgrad::data::Mnist ten(dir_.string(), "test");
  EXPECT_EQ(ten.classes(), 10);
  EXPECT_EQ(ten.targets().to_vector<int64_t>(), (std::vector<int64_t>{1, 9, 0}));
}

TEST_F(IdxTest, MnistRefusesAnEmptySplit) {
  write_split(dir_, "t10k", 28, 28, {});
  EXPECT_EQ(error_of([&] { vgrad::data::Mnist(dir_.string(), "test"); }),
            "mnist: " + path("t10k-images-idx3-ubyte.gz") + ": holds no images (an empty data set)");
}

TEST_F(IdxTest, MnistRefusesSplitsWhoseImageSizesDifferNamingBothFiles) {
  // 27x28 training images with 28x28 test images used to fail only after an epoch.
  write_split(dir_, "train", 27, 28, {1, 2});
  write_split(dir_, "t10k", 28, 28, {3});
  const std::string train_images = path("train-images-idx3-ubyte.gz"), test_images = path("t10k-images-idx3-ubyte.gz");
  EXPECT_EQ(error_of([&] { vgrad::data::Mnist(dir_.string(), "train"); }),
            "mnist: image sizes differ between splits: " + train_images + " holds 27x28 images but " + test_images +
                " holds 28x28");
  EXPECT_EQ(error_of([&] { vgrad::data::Mnist(dir_.string(), "test"); }),
            "mnist: image sizes differ between splits: " + test_images + " holds 28x28 images but " + train_images +
                " holds 27x28");
  // Same sizes load; a split without its sibling loads on its own.
  write_split(dir_, "train", 28, 28, {1, 2});
  EXPECT_EQ(vgrad::data::Mnist(dir_.string(), "train").size(), 2);
  fs::remove(test_images);
  EXPECT_EQ(vgrad::data::Mnist(dir_.string(), "train").size(), 2);
}

TEST(IdxRealData, FashionMnistTestSplit) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(dir + "/t10k-images-idx3-ubyte.gz") || !fs::exists(dir + "/t10k-labels-idx1-ubyte.gz")) {
    GTEST_SKIP() << "Fashion-MNIST not installed at " << dir;
  }
  const auto set = vgrad::data::read_mnist_split(dir, "test");
  EXPECT_EQ(set.count, 10000);
  EXPECT_EQ(set.rows, 28);
  EXPECT_EQ(set.cols, 28);
  ASSERT_EQ(set.pixels.size(), 10000u * 28 * 28);
  ASSERT_EQ(set.labels.size(), 10000u);
  std::vector<int> per_class(10, 0);
  for (uint8_t label : set.labels) {
    ASSERT_LT(label, 10);
    ++per_class[label];
  }
  // Fashion-MNIST's test split is balanced: 1000 of each class.
  for (int c = 0; c < 10; ++c) EXPECT_EQ(per_class[c], 1000) << "class " << c;
  // Real images use the full 0..255 range; an all-zero buffer would mean a bad read.
  EXPECT_EQ(*std::max_element(set.pixels.begin(), set.pixels.end()), 255);
}

}  // namespace
