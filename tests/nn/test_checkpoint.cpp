// Tests for nn checkpoints: model round trips through safetensors files, the file
// layout against the format's spec, key/shape errors, atomic saves.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nn/checkpoint.h"
#include "nn/layers.h"
#include "support.h"

namespace {

using namespace vgrad;
namespace fs = std::filesystem;
using vgrad_test::uniform_tensor;
using vgrad_test::vals;

using Mlp = vgrad_test::Mlp;
using Checkpoint = vgrad_test::TempDirTest;

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

TEST_F(Checkpoint, ModelRoundTrip) {
  manual_seed(1);
  Mlp a(6, 5, 3);
  manual_seed(2);
  Mlp b(6, 5, 3);
  ASSERT_NE(vals(a.fc1->weight), vals(b.fc1->weight));
  nn::save(a, path("model.safetensors"));
  nn::load(b, path("model.safetensors"));
  for (const auto& [name, p] : a.named_parameters()) {
    const Tensor other = b.state_dict().at(name);
    EXPECT_EQ(vals(p), vals(other)) << name;  // bit-exact
  }
  const Tensor x = uniform_tensor({4, 6}, 3);
  EXPECT_EQ(vals(a(x)), vals(b(x)));
  // load_tensors gives the same names, shapes and dtypes.
  const auto tensors = nn::load_tensors(path("model.safetensors"));
  ASSERT_EQ(tensors.size(), 4u);
  EXPECT_EQ(tensors.at("fc2.bias").shape(), (Shape{3}));
  EXPECT_EQ(tensors.at("fc1.weight").dtype(), DType::Float32);
}

TEST_F(Checkpoint, TensorsOfEveryDtypeRoundTrip) {
  const std::map<std::string, Tensor> tensors = {
      {"f32", uniform_tensor({2, 3}, 4)},
      {"f64", uniform_tensor({5}, 5, -1, 1, DType::Float64)},
      {"i64", tensor(std::vector<int64_t>{-3, 0, 1LL << 40}, {3})},
      {"scalar", scalar_tensor(2.5)},
      {"strided", uniform_tensor({3, 4}, 6).t()},  // non-contiguous: saved in logical order
  };
  nn::save_tensors(path("t.safetensors"), tensors, {{"note", "hello"}});
  const auto back = nn::load_tensors(path("t.safetensors"));
  ASSERT_EQ(back.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    EXPECT_EQ(back.at(name).shape(), t.shape()) << name;
    EXPECT_EQ(back.at(name).dtype(), t.dtype()) << name;
    EXPECT_EQ(vals(back.at(name)), vals(t)) << name;
  }
}

TEST_F(Checkpoint, FileFollowsTheSafetensorsSpec) {
  manual_seed(3);
  Mlp model(4, 3, 2);
  nn::save(model, path("m.safetensors"));
  const auto bytes = read_bytes(path("m.safetensors"));
  ASSERT_GE(bytes.size(), 8u);
  // 8-byte little-endian header length.
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  ASSERT_LE(8 + header_len, bytes.size());
  const std::string header(bytes.begin() + 8, bytes.begin() + 8 + long(header_len));
  EXPECT_EQ(header.front(), '{');
  const auto json = nlohmann::json::parse(header);
  const size_t data_start = 8 + header_len;
  const size_t data_len = bytes.size() - data_start;

  ASSERT_TRUE(json.contains("__metadata__"));
  EXPECT_EQ(json["__metadata__"]["format"], "pt");

  size_t covered = 0;
  for (const auto& [name, p] : model.named_parameters()) {
    ASSERT_TRUE(json.contains(name)) << name;
    const auto& entry = json[name];
    EXPECT_EQ(entry["dtype"], "F32") << name;
    EXPECT_EQ(entry["shape"].get<std::vector<int64_t>>(), p.shape()) << name;
    const auto offsets = entry["data_offsets"].get<std::vector<size_t>>();
    ASSERT_EQ(offsets.size(), 2u);
    ASSERT_EQ(offsets[1] - offsets[0], size_t(p.numel()) * 4) << name;
    ASSERT_LE(offsets[1], data_len) << name;
    covered += offsets[1] - offsets[0];
    // Raw little-endian float32, row-major.
    std::vector<float> raw(size_t(p.numel()));
    std::memcpy(raw.data(), bytes.data() + data_start + offsets[0], offsets[1] - offsets[0]);
    const auto expect = vals(p);
    for (size_t i = 0; i < raw.size(); ++i) EXPECT_EQ(double(raw[i]), expect[i]) << name << "[" << i << "]";
  }
  EXPECT_EQ(covered, data_len);  // no gaps, nothing else in the buffer
  EXPECT_EQ(json["fc1.weight"]["shape"], nlohmann::json::array({3, 4}));
  EXPECT_EQ(json.size(), 5u);  // four tensors and __metadata__
}

TEST_F(Checkpoint, LoadErrorsNameTheKey) {
  Mlp model(4, 3, 2);
  // Missing key: a checkpoint without fc2.bias.
  auto state = model.state_dict();
  state.erase("fc2.bias");
  nn::save_tensors(path("missing.safetensors"), state);
  EXPECT_ERROR(nn::load(model, path("missing.safetensors")), "missing key 'fc2.bias'");
  EXPECT_ERROR(nn::load(model, path("missing.safetensors")), "missing.safetensors");
  // Wrong shape: a model with a different hidden size.
  Mlp wider(4, 8, 2);
  nn::save(wider, path("wider.safetensors"));
  EXPECT_ERROR(nn::load(model, path("wider.safetensors")), "'fc1.weight' has shape [8, 4], the model expects [3, 4]");
  // Unexpected key.
  state = model.state_dict();
  state["fc3.weight"] = zeros({2, 2});
  nn::save_tensors(path("extra.safetensors"), state);
  EXPECT_ERROR(nn::load(model, path("extra.safetensors")), "unexpected key 'fc3.weight'");
  // A missing file names the file.
  EXPECT_ERROR(nn::load(model, path("nope.safetensors")), "nope.safetensors");
}

// All or nothing: a file refused for any key leaves every parameter as it was, even where the
// keys sorted before the bad one would have fit.
TEST_F(Checkpoint, RefusedLoadChangesNothing) {
  manual_seed(3);
  Mlp model(4, 3, 2);
  const auto before = model.state_dict();
  auto snapshot = [&] {
    std::map<std::string, std::vector<double>> values;
    for (const auto& [name, t] : model.state_dict()) values[name] = vals(t);
    return values;
  };
  const auto original = snapshot();
  // Every key fits but holds 7s; then one thing is wrong.
  auto sevens = [&] {
    std::map<std::string, Tensor> state;
    for (const auto& [name, t] : before) state[name] = full(t.shape(), 7.0);
    return state;
  };
  auto state = sevens();
  state["zz.extra"] = zeros({1});  // sorts after every model key
  nn::save_tensors(path("unexpected.safetensors"), state);
  EXPECT_ERROR(nn::load(model, path("unexpected.safetensors")), "unexpected.safetensors", "unexpected key 'zz.extra'");
  EXPECT_EQ(snapshot(), original);

  state = sevens();
  state["fc2.bias"] = full({3}, 7.0);  // the last key, of the wrong shape
  nn::save_tensors(path("bias_shape.safetensors"), state);
  EXPECT_ERROR(nn::load(model, path("bias_shape.safetensors")), "key 'fc2.bias' has shape [3], the model expects [2]");
  EXPECT_EQ(snapshot(), original);

  state = sevens();
  state.erase("fc2.weight");
  nn::save_tensors(path("missing.safetensors"), state);
  EXPECT_ERROR(nn::load(model, path("missing.safetensors")), "missing key 'fc2.weight'");
  EXPECT_EQ(snapshot(), original);

  // Integers into a floating parameter: PyTorch's copy_ would convert; vgrad refuses the mix.
  state = sevens();
  state["fc2.bias"] = tensor(std::vector<int64_t>{7, 7}, {2});
  nn::save_tensors(path("int_bias.safetensors"), state);
  EXPECT_ERROR(nn::load(model, path("int_bias.safetensors")), "key 'fc2.bias' is int64, the model's entry is float32");
  EXPECT_EQ(snapshot(), original);

  // The good file loads, float64 into float32 included.
  state = sevens();
  state["fc1.bias"] = full({3}, 7.0, {.dtype = DType::Float64});
  nn::save_tensors(path("good.safetensors"), state);
  nn::load(model, path("good.safetensors"));
  for (const auto& [name, values] : snapshot()) EXPECT_EQ(values, std::vector<double>(values.size(), 7.0)) << name;
}

TEST_F(Checkpoint, FailedSaveLeavesThePreviousFileIntact) {
  manual_seed(4);
  Mlp first(4, 3, 2);
  manual_seed(5);
  Mlp second(4, 3, 2);
  const std::string target = path("model.safetensors");
  nn::save(first, target);
  const auto before = read_bytes(target);
  ASSERT_FALSE(before.empty());

  // Make the write fail: the temp file's path is taken by a directory (this works as root too).
  const std::string temp = target + ".tmp." + std::to_string(::getpid());
  fs::create_directories(fs::path(temp) / "blocker");
  EXPECT_THROW(nn::save(second, target), Error);
  EXPECT_EQ(read_bytes(target), before);
  fs::remove_all(temp);

  // And, where permissions are enforced (not root), an unwritable directory.
  if (::geteuid() != 0) {
    fs::permissions(dir_, fs::perms::owner_read | fs::perms::owner_exec);
    EXPECT_THROW(nn::save(second, target), Error);
    fs::permissions(dir_, fs::perms::owner_all);
    EXPECT_EQ(read_bytes(target), before);
  }

  // The previous checkpoint still loads with the first model's values; no temp files are left.
  Mlp loaded(4, 3, 2);
  nn::load(loaded, target);
  EXPECT_EQ(vals(loaded.fc1->weight), vals(first.fc1->weight));
  for (const auto& entry : fs::directory_iterator(dir_))
    EXPECT_EQ(entry.path().filename(), "model.safetensors") << "left behind: " << entry.path();

  // A successful save replaces it.
  nn::save(second, target);
  nn::load(loaded, target);
  EXPECT_EQ(vals(loaded.fc1->weight), vals(second.fc1->weight));
}

// ---------------- 16-bit safetensors, both ways with PyTorch ----------------

namespace torch_half {

const float kInf = std::numeric_limits<float>::infinity(), kNaN = std::numeric_limits<float>::quiet_NaN();

// What scripts/reference/make_torch_half_safetensors.py stored, as exact values: PyTorch
// rounded 1/3 to nearest even and flushed the last (below the smallest subnormal) to 0.
const std::vector<float> kExpectedBFloat16 = {0.0f, -0.0f, 1.0f, -2.5f, std::ldexp(255.0f, 120), -std::ldexp(255.0f, 120),
                                              std::ldexp(1.0f, -126), std::ldexp(1.0f, -133), std::ldexp(3.0f, -133),
                                              kInf, -kInf, kNaN, 0.333984375f, 0.0f};
const std::vector<float> kExpectedFloat16 = {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, -65504.0f, std::ldexp(1.0f, -14),
                                             std::ldexp(1.0f, -24), std::ldexp(3.0f, -24), kInf, -kInf, kNaN,
                                             0.333251953125f, 0.0f};

// Every element equal to `expected` (NaN as NaN, and the sign of zero).
void expect_values(const Tensor& got, DType dtype, const std::vector<float>& expected, const char* name) {
  ASSERT_EQ(got.dtype(), dtype) << name;
  ASSERT_EQ(got.shape(), Shape({int64_t(expected.size())})) << name;
  const std::vector<float> values = got.to(DType::Float32).to_vector<float>();
  for (size_t i = 0; i < expected.size(); ++i) {
    if (std::isnan(expected[i])) {
      EXPECT_TRUE(std::isnan(values[i])) << name << "[" << i << "] = " << values[i] << ", expected NaN";
    } else {
      EXPECT_EQ(values[i], expected[i]) << name << "[" << i << "]";
      EXPECT_EQ(std::signbit(values[i]), std::signbit(expected[i])) << name << "[" << i << "]: sign of " << values[i];
    }
  }
}

}  // namespace torch_half

TEST(TorchHalfSafetensors, PyTorchFilesLoad) {
  const auto tensors = nn::load_tensors(std::string(VGRAD_REFERENCE_DIR) + "/torch_half.safetensors");
  ASSERT_EQ(tensors.size(), 4u);
  torch_half::expect_values(tensors.at("bf16"), DType::BFloat16, torch_half::kExpectedBFloat16, "bf16");
  torch_half::expect_values(tensors.at("f16"), DType::Float16, torch_half::kExpectedFloat16, "f16");
  for (const auto& [name, dtype] : {std::pair{"bf16_matrix", DType::BFloat16}, std::pair{"f16_matrix", DType::Float16}}) {
    const Tensor& matrix = tensors.at(name);
    EXPECT_EQ(matrix.dtype(), dtype) << name;
    EXPECT_EQ(matrix.shape(), Shape({2, 3})) << name;
    EXPECT_EQ(vals(matrix), (std::vector<double>{1, 2, 3, -4, 5.5, -6})) << name;  // row-major
  }
}

// Writes the file scripts/reference/check_vgrad_half_safetensors.py checks in PyTorch (kept
// where VGRAD_KEEP_HALF_SAFETENSORS says); here, it must read back bit for bit.
TEST_F(Checkpoint, HalfTensorsForPyTorchRoundTripBitForBit) {
  const float inf = std::numeric_limits<float>::infinity();
  // The script's `source` list, in order.
  const Tensor source = tensor(std::vector<float>{0.0f, -0.0f, 1.0f, -2.5f, 3e38f, -65504.0f, std::ldexp(1.0f, -126),
                                                  std::ldexp(1.0f, -24), 1.0f / 3, 65520.0f, inf, -inf,
                                                  std::numeric_limits<float>::quiet_NaN(), 1e-45f},
                               {14});
  const std::map<std::string, Tensor> tensors = {
      {"bf16", source.to(DType::BFloat16)},
      {"f16", source.to(DType::Float16)},
      {"bf16_matrix", tensor(std::vector<float>{1, 2, 3, -4, 5.5f, -6}, {2, 3}).to(DType::BFloat16)},
  };
  const char* keep = std::getenv("VGRAD_KEEP_HALF_SAFETENSORS");
  const std::string file = keep && *keep ? std::string(keep) : path("half.safetensors");
  nn::save_tensors(file, tensors);
  const auto back = nn::load_tensors(file);
  for (const auto& [name, t] : tensors) {
    ASSERT_EQ(back.at(name).dtype(), t.dtype()) << name;
    ASSERT_EQ(back.at(name).shape(), t.shape()) << name;
    EXPECT_EQ(std::memcmp(back.at(name).contiguous().data_ptr(), t.contiguous().data_ptr(), size_t(t.numel()) * 2), 0)
        << name;
  }
}

}  // namespace
