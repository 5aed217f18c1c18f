// Tests for the raw safetensors reader/writer: round trips, the exact byte
// layout the spec requires, atomic saves that leave the old file intact, and
// a clear error for each kind of corrupt file. No Tensor, no Python.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/safetensors.h"
#include "support.h"

namespace {

using vgrad_test::error_of;

namespace fs = std::filesystem;
namespace st = vgrad::safetensors;
using Bytes = std::vector<uint8_t>;

template <typename T>
st::Entry make_entry(const std::string& dtype, std::vector<int64_t> shape, const std::vector<T>& values) {
  st::Entry entry{dtype, std::move(shape), Bytes(values.size() * sizeof(T))};
  if (!values.empty()) std::memcpy(entry.bytes.data(), values.data(), entry.bytes.size());
  return entry;
}

Bytes read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

void write_file(const fs::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// A file built by hand: 8-byte LE length (the real one unless `declared`),
// the header text as given (no padding), then `data`.
void write_raw(const fs::path& path, const std::string& header, const Bytes& data,
               std::optional<uint64_t> declared = std::nullopt) {
  const uint64_t length = declared.value_or(header.size());
  Bytes bytes;
  for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<uint8_t>(length >> (8 * i)));
  bytes.insert(bytes.end(), header.begin(), header.end());
  bytes.insert(bytes.end(), data.begin(), data.end());
  write_file(path, bytes);
}

uint64_t u64_le(const Bytes& bytes, size_t at) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | bytes[at + i];
  return value;
}



std::vector<std::string> list_dir(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& item : fs::directory_iterator(dir)) names.push_back(item.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

class SafetensorsTest : public vgrad_test::TempDirTest {
 protected:
  // Loads a hand-built file and returns the error message.
  std::string load_error(const std::string& header, const Bytes& data,
                         std::optional<uint64_t> declared = std::nullopt) {
    write_raw(path("bad.safetensors"), header, data, declared);
    return error_of([&] { st::load(path("bad.safetensors")); });
  }
};

TEST(SafetensorsDtype, Sizes) {
  EXPECT_EQ(st::dtype_size("F32"), 4);
  EXPECT_EQ(st::dtype_size("F64"), 8);
  EXPECT_EQ(st::dtype_size("I64"), 8);
  EXPECT_EQ(st::dtype_size("F16"), 2);
  EXPECT_EQ(st::dtype_size("BF16"), 2);
  EXPECT_EQ(st::dtype_size("I32"), 4);
  EXPECT_EQ(st::dtype_size("U8"), 1);
  EXPECT_EQ(st::dtype_size("BOOL"), 1);
  EXPECT_EQ(st::dtype_size("f32"), 0);  // names are case-sensitive in the spec
  EXPECT_EQ(st::dtype_size("F4"), 0);   // sub-byte types are not supported
}

TEST_F(SafetensorsTest, RoundTripKeepsEverything) {
  std::map<std::string, st::Entry> tensors;
  tensors["fc1.weight"] = make_entry<float>("F32", {2, 3}, {1.f, -2.f, 3.5f, 0.f, 1e-30f, -7.25f});
  tensors["fc1.bias"] = make_entry<float>("F32", {3}, {0.1f, 0.2f, 0.3f});
  tensors["step"] = make_entry<int64_t>("I64", {}, {int64_t{1} << 40});
  tensors["w64"] = make_entry<double>("F64", {2, 2}, {1.0 / 3, -2.0, 1e300, -0.0});
  tensors["mask"] = make_entry<uint8_t>("U8", {5}, {0, 1, 255, 7, 9});
  tensors["half"] = make_entry<uint16_t>("BF16", {3}, {0x3F80, 0xC000, 0x7F80});
  tensors["empty"] = make_entry<float>("F32", {0, 4}, {});
  tensors["층.가중치"] = make_entry<int32_t>("I32", {1, 1}, {-5});
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"epoch", "3"}, {"note", "a \"quoted\"\n"}};

  st::save(path("m.safetensors"), tensors, metadata);
  const st::File file = st::load(path("m.safetensors"));

  EXPECT_EQ(file.metadata, metadata);
  ASSERT_EQ(file.tensors.size(), tensors.size());
  for (const auto& [name, expected] : tensors) {
    ASSERT_EQ(file.tensors.count(name), 1u) << name;
    const st::Entry& got = file.tensors.at(name);
    EXPECT_EQ(got.dtype, expected.dtype) << name;
    EXPECT_EQ(got.shape, expected.shape) << name;
    EXPECT_EQ(got.bytes, expected.bytes) << name;
  }
  EXPECT_EQ(list_dir(dir_), std::vector<std::string>{"m.safetensors"});  // no temp left behind
}

TEST_F(SafetensorsTest, ByteLayoutFollowsTheSpec) {
  std::map<std::string, st::Entry> tensors;
  tensors["b"] = make_entry<float>("F32", {2}, {1.5f, -2.f});
  tensors["a"] = make_entry<uint8_t>("U8", {3}, {1, 2, 3});
  tensors["c"] = make_entry<double>("F64", {1}, {0.25});
  st::save(path("l.safetensors"), tensors, {{"k", "v"}});

  const Bytes bytes = read_file(path("l.safetensors"));
  ASSERT_GE(bytes.size(), 8u);
  const uint64_t header_size = u64_le(bytes, 0);
  EXPECT_EQ(header_size % 8, 0u);
  ASSERT_EQ(bytes.size(), 8 + header_size + 8 + 8 + 3);
  const std::string header(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(header_size));
  EXPECT_EQ(header.front(), '{');
  const size_t last = header.find_last_not_of(' ');
  EXPECT_EQ(header[last], '}');
  EXPECT_LT(header.size() - (last + 1), 8u);  // at most 7 spaces of padding

  const auto json = nlohmann::json::parse(header);
  EXPECT_EQ(json["__metadata__"], (nlohmann::json{{"k", "v"}}));
  // Largest dtype first keeps each tensor aligned: F64, then F32, then U8.
  EXPECT_EQ(json["c"], (nlohmann::json{{"dtype", "F64"}, {"shape", {1}}, {"data_offsets", {0, 8}}}));
  EXPECT_EQ(json["b"], (nlohmann::json{{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {8, 16}}}));
  EXPECT_EQ(json["a"], (nlohmann::json{{"dtype", "U8"}, {"shape", {3}}, {"data_offsets", {16, 19}}}));
  EXPECT_EQ(json.size(), 4u);

  // The data is little-endian: 0.25 = 0x3FD0000000000000, 1.5f = 0x3FC00000, -2.f = 0xC0000000.
  const Bytes data(bytes.begin() + 8 + static_cast<long>(header_size), bytes.end());
  EXPECT_EQ(data, (Bytes{0, 0, 0, 0, 0, 0, 0xD0, 0x3F, 0, 0, 0xC0, 0x3F, 0, 0, 0, 0xC0, 1, 2, 3}));
}

TEST_F(SafetensorsTest, EmptyFileHasPaddedHeader) {
  st::save(path("e.safetensors"), {});
  const Bytes bytes = read_file(path("e.safetensors"));
  ASSERT_EQ(bytes.size(), 16u);
  EXPECT_EQ(u64_le(bytes, 0), 8u);
  EXPECT_EQ(std::string(bytes.begin() + 8, bytes.end()), "{}      ");
  const st::File file = st::load(path("e.safetensors"));
  EXPECT_TRUE(file.tensors.empty());
  EXPECT_TRUE(file.metadata.empty());
}

TEST_F(SafetensorsTest, ReadsFilesFromOtherWriters) {
  // As another writer may produce it: no padding, keys not in data order,
  // extra whitespace, metadata last.
  const std::string header =
      R"({ "y": {"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
      R"( "x": {"dtype":"F32","shape":[2],"data_offsets":[8,16]}, "__metadata__": {"format":"pt"} })";
  ASSERT_NE(header.size() % 8, 0u);
  const Bytes data = {42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x3F, 0, 0, 0x20, 0xC1};
  write_raw(path("o.safetensors"), header, data);
  const st::File file = st::load(path("o.safetensors"));
  EXPECT_EQ(file.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(file.tensors.size(), 2u);
  EXPECT_EQ(file.tensors.at("y").dtype, "I64");
  EXPECT_EQ(file.tensors.at("y").bytes, Bytes(data.begin(), data.begin() + 8));
  float x[2];
  std::memcpy(x, file.tensors.at("x").bytes.data(), sizeof x);
  EXPECT_EQ(x[0], 1.0f);
  EXPECT_EQ(x[1], -10.0f);
}

TEST_F(SafetensorsTest, SaveOverwritesAtomically) {
  st::save(path("m.safetensors"), {{"a", make_entry<float>("F32", {1}, {1.f})}});
  st::save(path("m.safetensors"), {{"b", make_entry<double>("F64", {2}, {2.0, 3.0})}});
  const st::File file = st::load(path("m.safetensors"));
  ASSERT_EQ(file.tensors.size(), 1u);
  EXPECT_EQ(file.tensors.count("b"), 1u);
  EXPECT_EQ(list_dir(dir_), std::vector<std::string>{"m.safetensors"});
}

TEST_F(SafetensorsTest, RejectedSaveLeavesPreviousFileIntact) {
  st::save(path("m.safetensors"), {{"a", make_entry<float>("F32", {2}, {1.f, 2.f})}}, {{"v", "1"}});
  const Bytes before = read_file(path("m.safetensors"));

  std::map<std::string, st::Entry> bad;
  bad["ok"] = make_entry<float>("F32", {2}, {1.f, 2.f});
  bad["w"] = make_entry<float>("F32", {2, 3}, {1.f, 2.f, 3.f, 4.f, 5.f});  // 20 bytes, needs 24
  EXPECT_EQ(
      error_of([&] { st::save(path("m.safetensors"), bad); }),
      "safetensors: " + path("m.safetensors") + ": tensor 'w': dtype F32 with shape [2, 3] needs 24 bytes, got 20");
  EXPECT_EQ(read_file(path("m.safetensors")), before);
  EXPECT_EQ(list_dir(dir_), std::vector<std::string>{"m.safetensors"});

  // Other rejections, all before anything is written.
  EXPECT_CONTAINS(error_of([&] {
                    st::save(path("m.safetensors"), {{"q", make_entry<float>("F17", {1}, {1.f})}});
                  }),
                  "tensor 'q': unknown dtype 'F17'");
  EXPECT_CONTAINS(error_of([&] {
                    st::save(path("m.safetensors"), {{"n", make_entry<float>("F32", {-1}, {})}});
                  }),
                  "tensor 'n': negative dimension in shape [-1]");
  EXPECT_CONTAINS(error_of([&] {
                    st::save(path("m.safetensors"), {{"__metadata__", make_entry<float>("F32", {1}, {1.f})}});
                  }),
                  "'__metadata__' is reserved");
  EXPECT_CONTAINS(error_of([&] {
                    st::save(path("m.safetensors"), {{"", make_entry<float>("F32", {1}, {1.f})}});
                  }),
                  "empty name");
  EXPECT_CONTAINS(error_of([&] {
                    st::save(path("m.safetensors"), {{"bad\xff", make_entry<float>("F32", {1}, {1.f})}});
                  }),
                  "cannot encode header");
  EXPECT_EQ(read_file(path("m.safetensors")), before);
  EXPECT_EQ(list_dir(dir_), std::vector<std::string>{"m.safetensors"});
}

TEST_F(SafetensorsTest, FailedRenameRemovesTempFile) {
  // The target is a non-empty directory: the temp file gets fully written,
  // then rename fails, and the temp must not be left behind.
  fs::create_directories(dir_ / "target" / "inside");
  const std::string message = error_of([&] {
    st::save(path("target"), {{"a", make_entry<float>("F32", {1}, {1.f})}});
  });
  EXPECT_CONTAINS(message, "safetensors: " + path("target") + ": cannot rename");
  EXPECT_EQ(list_dir(dir_), std::vector<std::string>{"target"});
  EXPECT_TRUE(fs::is_directory(dir_ / "target" / "inside"));
}

TEST_F(SafetensorsTest, SaveIntoMissingDirectory) {
  const std::string target = path("no/such/dir/m.safetensors");
  EXPECT_CONTAINS(error_of([&] { st::save(target, {}); }), "safetensors: " + target + ": cannot create");
}

TEST_F(SafetensorsTest, LoadMissingFile) {
  EXPECT_THROW(st::load(path("nope")), vgrad::Error);  // callers can catch vgrad's one error type
  EXPECT_CONTAINS(error_of([&] { st::load(path("nope")); }), "safetensors: " + path("nope") + ": cannot open");
}

TEST_F(SafetensorsTest, LoadTooShort) {
  write_file(path("s"), {1, 0, 0, 0, 0});
  EXPECT_EQ(error_of([&] { st::load(path("s")); }),
            "safetensors: " + path("s") +
                ": file too short: 5 bytes (a safetensors file starts with an 8-byte header length)");
}

TEST_F(SafetensorsTest, LoadHeaderLengthPastEnd) {
  EXPECT_CONTAINS(load_error("{}", {}, 1000), "header length 1000 runs past the end of the file (10 bytes)");
  EXPECT_CONTAINS(load_error("{}", {}, ~uint64_t{0}), "runs past the end of the file");
}

TEST_F(SafetensorsTest, LoadTruncatedFile) {
  st::save(path("t.safetensors"), {{"w", make_entry<double>("F64", {4}, {1, 2, 3, 4})}});
  Bytes bytes = read_file(path("t.safetensors"));
  ASSERT_GT(bytes.size(), 4u);
  bytes.erase(bytes.end() - 4, bytes.end());  // (resize(size - 4) trips a GCC 12 stringop false positive)
  write_file(path("t.safetensors"), bytes);
  EXPECT_CONTAINS(error_of([&] { st::load(path("t.safetensors")); }),
                  "tensor 'w': data_offsets [0, 32] out of range (the data buffer has 28 bytes)");
}

TEST_F(SafetensorsTest, LoadBadJson) {
  EXPECT_CONTAINS(load_error(R"({"a": {"dtype": "F32",)", {}), "header is not valid JSON");
  EXPECT_CONTAINS(load_error("[1, 2]", {}), "header must be a JSON object, got array");
}

TEST_F(SafetensorsTest, LoadMissingOrMistypedFields) {
  const Bytes four(4, 0);
  EXPECT_CONTAINS(load_error(R"({"x":{"shape":[1],"data_offsets":[0,4]}})", four), "tensor 'x': missing field 'dtype'");
  EXPECT_CONTAINS(load_error(R"({"x":{"dtype":"F32","data_offsets":[0,4]}})", four),
                  "tensor 'x': missing field 'shape'");
  EXPECT_CONTAINS(load_error(R"({"x":{"dtype":"F32","shape":[1]}})", four), "tensor 'x': missing field 'data_offsets'");
  EXPECT_CONTAINS(load_error(R"({"x":[1]})", four), "tensor 'x': entry must be an object");
  EXPECT_CONTAINS(load_error(R"({"x":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", four),
                  "tensor 'x': dtype must be a string");
  EXPECT_CONTAINS(load_error(R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", four),
                  "tensor 'x': shape must be a non-negative integer, got -1");
  EXPECT_CONTAINS(load_error(R"({"x":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", four),
                  "tensor 'x': shape must be a non-negative integer, got 1.5");
  EXPECT_CONTAINS(load_error(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", four),
                  "tensor 'x': data_offsets must be [begin, end]");
  EXPECT_CONTAINS(load_error(R"({"x":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}})", four),
                  "tensor 'x': unknown or unsupported dtype 'F99'");
  EXPECT_CONTAINS(load_error(R"({"__metadata__":{"n":1}})", {}), "__metadata__ entry 'n' must be a string, got 1");
  EXPECT_CONTAINS(load_error(R"({"__metadata__":"x"})", {}), "__metadata__ must be an object of strings");
}

TEST_F(SafetensorsTest, LoadSizeMismatchNamesTensor) {
  EXPECT_EQ(load_error(R"({"fc1.weight":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", Bytes(8, 0)),
            "safetensors: " + path("bad.safetensors") +
                ": tensor 'fc1.weight': dtype F32 with shape [3] needs 12 bytes, but data_offsets [0, 8] span 8");
}

TEST_F(SafetensorsTest, LoadOffsetsOutOfRange) {
  EXPECT_CONTAINS(load_error(R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", Bytes(8, 0)),
                  "tensor 'x': data_offsets [0, 16] out of range (the data buffer has 8 bytes)");
  EXPECT_CONTAINS(load_error(R"({"x":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", Bytes(8, 0)),
                  "tensor 'x': data_offsets [8, 4] out of range");
}

TEST_F(SafetensorsTest, ShapesWhoseStridesOverflowAreRefused) {
  // Zero elements, zero bytes, but strides of 2^62 and 2^124: refused before any tensor is made.
  EXPECT_CONTAINS(
      load_error(R"({"x":{"dtype":"F32","shape":[0,4611686018427387904,4611686018427387904],"data_offsets":[0,0]}})",
                 {}),
      "tensor 'x': shape [0, 4611686018427387904, 4611686018427387904] has strides that overflow int64");
  write_raw(path("empty.safetensors"), R"({"x":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}})", {});
  EXPECT_EQ(st::load(path("empty.safetensors")).tensors.at("x").shape, (std::vector<int64_t>{0, 3}));
}

// A sparse file whose tensor is larger than the memory there is: std::bad_alloc becomes a
// vgrad::Error naming the file, the tensor and the size.
TEST_F(SafetensorsTest, AllocationFailureNamesTheFileAndTheSize) {
  vgrad_test::AddressSpaceCap cap(uint64_t(256) << 20);
  if (!cap.active()) GTEST_SKIP() << "no address-space cap here (sanitizer build): 2 GiB would be allocated";
  const int64_t bytes = int64_t(1) << 31;
  const std::string header = R"({"big":{"dtype":"F32","shape":[)" + std::to_string(bytes / 4) +
                             R"(],"data_offsets":[0,)" + std::to_string(bytes) + "]}}";
  write_raw(path("sparse.safetensors"), header, {});
  fs::resize_file(path("sparse.safetensors"), 8 + header.size() + uint64_t(bytes));  // a hole, not 2 GiB on disk
  EXPECT_EQ(
      error_of([&] { st::load(path("sparse.safetensors")); }),
      "safetensors: " + path("sparse.safetensors") + ": tensor 'big': cannot allocate 2147483648 bytes for its data");
}

TEST_F(SafetensorsTest, LoadOverlapGapAndUncoveredTail) {
  EXPECT_CONTAINS(load_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                             Bytes(12, 0)),
                  "tensor 'b': data_offsets start at 4, overlapping tensor 'a' which ends at 8");
  EXPECT_CONTAINS(load_error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                             R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                             Bytes(12, 0)),
                  "tensor 'b': gap in the data buffer: bytes [4, 8) belong to no tensor");
  EXPECT_CONTAINS(load_error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", Bytes(8, 0)),
                  "data buffer has 8 bytes but the tensors cover only 4 (4 bytes belong to no tensor)");
  EXPECT_CONTAINS(load_error("{}", Bytes(3, 0)), "data buffer has 3 bytes but the tensors cover only 0");
}

// ---------------- hostile headers, odd file types, stale temporaries ----------------

std::string nested(const std::string& open, const std::string& close, int depth, const std::string& inner = "1") {
  std::string text;
  text.reserve(depth * (open.size() + close.size()) + inner.size());
  for (int i = 0; i < depth; ++i) text += open;
  text += inner;
  for (int i = 0; i < depth; ++i) text += close;
  return text;
}

TEST_F(SafetensorsTest, DeepNestingIsRefusedWithoutRecursing) {
  // 100,000 levels used to crash (SIGSEGV) while printing the value in the error.
  const std::string deep_shape = nested("[", "]", 100'000);
  std::string message =
      load_error(R"({"x":{"dtype":"F32","shape":)" + deep_shape + R"(,"data_offsets":[0,4]}})", Bytes(4, 0));
  EXPECT_CONTAINS(message, "safetensors: " + path("bad.safetensors") + ": ");
  EXPECT_CONTAINS(message, "nested deeper than");
  EXPECT_CONTAINS(message, "tensor 'x'");
  EXPECT_LT(message.size(), 400u);

  message = load_error(R"({"__metadata__":{"k":)" + nested("{\"a\":", "}", 100'000) + "}}", {});
  EXPECT_CONTAINS(message, "nested deeper than");
  EXPECT_CONTAINS(message, "__metadata__");
  EXPECT_LT(message.size(), 400u);
}

// A key twice in one object was read as its last value (nlohmann's rule): a tensor named twice
// could turn F32 data into I32 silently. Refused, naming the key; the same key in two objects
// is fine.
TEST_F(SafetensorsTest, AKeyRepeatedInOneObjectIsRefused) {
  const std::string tensor = R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})";
  EXPECT_CONTAINS(
      load_error(R"({"x":)" + tensor + R"(,"x":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})", Bytes(4, 0)),
      "header names 'x' twice in one object");
  EXPECT_CONTAINS(load_error(R"({"x":{"dtype":"F32","dtype":"I32","shape":[1],"data_offsets":[0,4]}})", Bytes(4, 0)),
                  "tensor 'x': header names 'dtype' twice in one object");
  EXPECT_CONTAINS(load_error(R"({"__metadata__":{"a":"1"},"__metadata__":{"a":"2"}})", {}),
                  "header names '__metadata__' twice");
  EXPECT_CONTAINS(load_error(R"({"__metadata__":{"a":"1","a":"2"}})", {}), "header names 'a' twice");
  write_raw(path("good.safetensors"), R"({"__metadata__":{"dtype":"x"},"x":)" + tensor + "}", Bytes(4, 0));
  const st::File file = st::load(path("good.safetensors"));
  EXPECT_EQ(file.tensors.at("x").shape, (std::vector<int64_t>{1}));
  EXPECT_EQ(file.metadata.at("dtype"), "x");
}

TEST_F(SafetensorsTest, ErrorsQuoteOnlyAnExcerptOfAValue) {
  // A shallow but huge value: the message shows its start and its size, not all of it.
  const std::string long_text = "\"" + std::string(20'000, 'a') + "\"";
  const std::string message =
      load_error(R"({"x":{"dtype":"F32","shape":)" + long_text + R"(,"data_offsets":[0,4]}})", Bytes(4, 0));
  EXPECT_CONTAINS(message, "tensor 'x': shape must be an array, got \"aaaa");
  EXPECT_CONTAINS(message, "(20002 characters)");
  EXPECT_LT(message.size(), 400u);
  const std::string metadata_message = load_error(R"({"__metadata__":{"k":[)" + long_text + "]}}", {});
  EXPECT_CONTAINS(metadata_message, "__metadata__ entry 'k' must be a string, got [\"aaaa");
  EXPECT_CONTAINS(metadata_message, "(20004 characters)");
  EXPECT_LT(metadata_message.size(), 400u);
  // A 20,000-digit number overflows a double: nlohmann's own message is cut too.
  EXPECT_LT(load_error(R"({"x":{"dtype":"F32","shape":[)" + std::string(20'000, '7') + R"(],"data_offsets":[0,4]}})",
                       Bytes(4, 0)).size(), 400u);
}

TEST_F(SafetensorsTest, JsonNumberOverflowNamesFileAndTensor) {
  // nlohmann throws out_of_range (not parse_error) for 1e999; it used to escape raw.
  EXPECT_CONTAINS(load_error(R"({"w":{"dtype":"F32","shape":[1e999],"data_offsets":[0,4]}})", Bytes(4, 0)),
                  "safetensors: " + path("bad.safetensors") + ": tensor 'w': header is not valid JSON");
  EXPECT_CONTAINS(load_error(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,1e999]}})", Bytes(4, 0)),
                  "tensor 'w'");
  EXPECT_CONTAINS(load_error(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"v":[-1e999]})", Bytes(4, 0)),
                  "tensor 'v'");
}

TEST_F(SafetensorsTest, NonRegularFilesAreRefusedByType) {
  // A FIFO used to block forever in fopen; the watchdog turns a hang into a failure.
  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0600), 0);
  ::alarm(20);
  EXPECT_EQ(error_of([&] { st::load(path("fifo")); }), "safetensors: " + path("fifo") + ": not a regular file (a FIFO)");
  fs::create_directories(dir_ / "folder");
  EXPECT_EQ(error_of([&] { st::load(path("folder")); }),
            "safetensors: " + path("folder") + ": not a regular file (a directory)");
  EXPECT_EQ(error_of([&] { st::load("/dev/zero"); }), "safetensors: /dev/zero: not a regular file (a character device)");
  ::alarm(0);
}

// A pid that belonged to a process which has exited (and been reaped).
pid_t dead_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  return child;
}

TEST_F(SafetensorsTest, SaveRemovesStaleTemporariesOfDeadProcessesOnly) {
  const pid_t live = ::fork();  // a live process whose save is "in progress"
  if (live == 0) {
    ::pause();
    ::_exit(0);
  }
  const std::string dead = std::to_string(dead_pid());
  const std::vector<std::string> temporaries = {"m.safetensors.tmp." + dead, "m.safetensors.tmp." + std::to_string(live),
                                                "other.safetensors.tmp." + dead, "m.safetensors.tmp.notapid",
                                                "m.safetensors.tmp."};
  for (const std::string& name : temporaries) write_file(dir_ / name, Bytes(16, 1));
  st::save(path("m.safetensors"), {{"a", make_entry<float>("F32", {1}, {1.f})}});
  ::kill(live, SIGKILL);
  ::waitpid(live, nullptr, 0);
  // Only the dead process's temporary of this target is gone.
  EXPECT_EQ(list_dir(dir_), (std::vector<std::string>{"m.safetensors", "m.safetensors.tmp.",
                                                      "m.safetensors.tmp." + std::to_string(live),
                                                      "m.safetensors.tmp.notapid", "other.safetensors.tmp." + dead}));
  EXPECT_EQ(st::load(path("m.safetensors")).tensors.size(), 1u);
}

}  // namespace
