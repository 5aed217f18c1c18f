// bfloat16 and float16: conversion bits against PyTorch's (stored in half_reference.h),
// promotion, the kernels' float32 compute (elementwise, reductions, softmax, GEMM),
// printing, creation, autograd and safetensors files in both directions. Each value
// test runs on every device present (CUDA where a GPU is; see HalfOnCuda).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>

#include "core/backend.h"
#include "half_reference.h"
#include "nn/checkpoint.h"
#include "nn/functional.h"
#include "support.h"

namespace {

using namespace vgrad;
using vgrad_test::expect_near_all;
using vgrad_test::uniform_tensor;
using vgrad_test::vals;

constexpr DType kHalfTypes[] = {DType::BFloat16, DType::Float16};
// One rounding of a value near 1: 2^-8 for bfloat16 (8 significant bits), 2^-11 for float16.
double unit_roundoff(DType dtype) { return dtype == DType::BFloat16 ? 1.0 / 256 : 1.0 / 2048; }

float from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// NaN is any NaN: PyTorch's vectorised CPU cast gives 0xffff for a bfloat16 NaN, its
// scalar one 0x7fc0 (ours, and CUDA's).
bool is_nan_bits(uint16_t bits, bool bfloat) {
  return bfloat ? (bits & 0x7f80) == 0x7f80 && (bits & 0x7f) != 0 : (bits & 0x7c00) == 0x7c00 && (bits & 0x3ff) != 0;
}

TEST(HalfConversion, MatchesPyTorchBitForBit) {
  for (const HalfReference& r : kHalfReference) {
    const float f = from_bits(r.f32);
    if (std::isnan(f)) {
      EXPECT_TRUE(is_nan_bits(r.bf16, true) && is_nan_bits(BFloat16(f).bits, true));
      EXPECT_TRUE(is_nan_bits(r.f16, false) && is_nan_bits(Float16(f).bits, false));
      continue;
    }
    EXPECT_EQ(BFloat16(f).bits, r.bf16) << "bfloat16 of " << f;
    EXPECT_EQ(Float16(f).bits, r.f16) << "float16 of " << f;
    // Widening is exact: PyTorch's float32 of its 16-bit value is ours.
    EXPECT_EQ(float(BFloat16::from_bits(r.bf16)), float(BFloat16(f)));
    EXPECT_EQ(float(Float16::from_bits(r.f16)), float(Float16(f)));
  }
  EXPECT_EQ(float(Float16::from_bits(0x0001)), 5.9604644775390625e-8f);  // smallest subnormal
  EXPECT_EQ(float(Float16::from_bits(0x7bff)), 65504.0f);
  EXPECT_TRUE(std::isinf(float(Float16(65520.0f))));  // the tie above the largest half rounds to Inf
  EXPECT_EQ(Float16(-std::nanf("")).bits & 0x7e00, 0x7e00);
}

TEST(HalfConversion, TensorCastsMatchScalarConversion) {
  std::vector<float> inputs;
  for (const HalfReference& r : kHalfReference) inputs.push_back(from_bits(r.f32));
  const Tensor x = tensor(inputs);
  const Tensor bf = x.to(DType::BFloat16), hf = x.to(DType::Float16);
  for (size_t i = 0; i < inputs.size(); ++i) {
    EXPECT_EQ(bf.data<BFloat16>()[i].bits, BFloat16(inputs[i]).bits) << i;
    EXPECT_EQ(hf.data<Float16>()[i].bits, Float16(inputs[i]).bits) << i;
  }
  // Between the 16-bit types, and to int64 and float64.
  EXPECT_EQ(vals(tensor({1.5f, -2.0f, 300.0f}).to(DType::BFloat16).to(DType::Float16)),
            (std::vector<double>{1.5, -2.0, 300.0}));
  EXPECT_EQ(tensor({2.75f, -3.5f}).to(DType::Float16).to(DType::Int64).to_vector<int64_t>(),
            (std::vector<int64_t>{2, -3}));
  EXPECT_EQ(tensor({1.0f / 3}).to(DType::BFloat16).to(DType::Float64).item(), 0.333984375);
}

TEST(HalfDType, TableAndPromotion) {
  EXPECT_EQ(dtype_size(DType::BFloat16), 2u);
  EXPECT_EQ(std::string(dtype_name(DType::Float16)), "float16");
  EXPECT_EQ(std::string(dtype_safetensors(DType::BFloat16)), "BF16");
  EXPECT_TRUE(is_half(DType::Float16) && !is_half(DType::Float32) && !is_half(DType::Int64));
  EXPECT_EQ(promote(DType::BFloat16, DType::Float16), DType::Float32);  // as PyTorch
  EXPECT_EQ(promote(DType::Float16, DType::BFloat16), DType::Float32);
  EXPECT_EQ(promote(DType::Int64, DType::BFloat16), DType::BFloat16);
  EXPECT_EQ(promote(DType::BFloat16, DType::Float32), DType::Float32);
  EXPECT_EQ(promote(DType::Float16, DType::Float64), DType::Float64);
  const Tensor a = ones({2}, {.dtype = DType::BFloat16}), b = ones({2}, {.dtype = DType::Float16});
  EXPECT_EQ((a + b).dtype(), DType::Float32);
  EXPECT_EQ((a * 3.0).dtype(), DType::BFloat16);
  EXPECT_EQ((a + tensor(std::vector<int64_t>{1, 2})).dtype(), DType::BFloat16);
}

std::vector<Device> devices() { return vgrad_test::cpu_and_gpu(); }

// A 16-bit op result against float32's, rounded once: within `ulps` roundings.
void expect_close_to_float32(const Tensor& got, const Tensor& want32, DType dtype, double ulps, const char* what) {
  EXPECT_EQ(got.dtype(), dtype) << what;
  expect_near_all(vals(got), vals(want32), ulps * unit_roundoff(dtype), what);
}

TEST(HalfKernels, ElementwiseComputeInFloat32AndRoundOnce) {
  for (Device device : devices())
    for (DType dtype : kHalfTypes) {
      const Tensor x = uniform_tensor({4, 33}, 1, -2, 2).to(dtype).to(device);
      const Tensor y = uniform_tensor({33}, 2, 0.5, 2).to(dtype).to(device);
      const Tensor x32 = x.to(DType::Float32), y32 = y.to(DType::Float32);
      expect_close_to_float32(exp(x), exp(x32), dtype, 1, "exp");
      expect_close_to_float32(x * y + x, x32 * y32 + x32, dtype, 2, "mul add");  // two roundings
      expect_close_to_float32(x / y, x32 / y32, dtype, 1, "div (broadcast)");
      expect_close_to_float32(relu(x.t()), relu(x32.t()), dtype, 0, "relu (strided)");
      expect_close_to_float32(tanh(x), tanh(x32), dtype, 1, "tanh");
      expect_close_to_float32(where(x > 0, x, y), where(x32 > 0, x32, y32), dtype, 0, "where");
    }
}

TEST(HalfKernels, ReductionsAccumulateInFloat32) {
  for (Device device : devices())
    for (DType dtype : kHalfTypes) {
      // 4096 ones: a 16-bit accumulator would stop at 256 (bfloat16) or 2048 (float16).
      const Tensor ones4096 = ones({4096}, {.dtype = dtype, .device = device});
      EXPECT_EQ(ones4096.sum().item(), 4096.0);
      EXPECT_EQ(ones4096.sum().dtype(), dtype);
      const Tensor x = uniform_tensor({64, 50}, 3).to(dtype).to(device), x32 = x.to(DType::Float32);
      expect_close_to_float32(x.sum({0}), x32.sum({0}), dtype, 1, "column sums");
      expect_close_to_float32(x.mean({1}), x32.mean({1}), dtype, 1, "row means");
      expect_close_to_float32(x.max(1), x32.max(1), dtype, 0, "row max");
      EXPECT_EQ(x.argmax(1).to_vector<int64_t>(), x32.argmax(1).to_vector<int64_t>());
    }
}

TEST(HalfKernels, SoftmaxAndCrossEntropyCloseToFloat32) {
  for (Device device : devices())
    for (DType dtype : kHalfTypes) {
      const Tensor logits = uniform_tensor({8, 10}, 4, -4, 4).to(dtype).to(device), l32 = logits.to(DType::Float32);
      expect_close_to_float32(softmax(logits, 1), softmax(l32, 1), dtype, 1, "softmax");
      expect_close_to_float32(log_softmax(logits, 1), log_softmax(l32, 1), dtype, 1, "log_softmax");
      const Tensor target = tensor(std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 9}).to(device);
      expect_close_to_float32(nn::cross_entropy(logits, target), nn::cross_entropy(l32, target), dtype, 1,
                              "cross_entropy");
    }
}

TEST(HalfKernels, MatmulAccumulatesInFloat32) {
  for (Device device : devices())
    for (DType dtype : kHalfTypes) {
      const Tensor a = uniform_tensor({37, 300}, 5).to(dtype).to(device), b = uniform_tensor({300, 21}, 6).to(dtype).to(device);
      const Tensor a32 = a.to(DType::Float32), b32 = b.to(DType::Float32);
      // Inputs already 16-bit: the only error is the final rounding (float32 sums of exact products).
      const Tensor c = matmul(a, b);
      EXPECT_EQ(c.dtype(), dtype);
      expect_near_all(vals(c), vals(matmul(a32, b32)), unit_roundoff(dtype), "matmul");
      expect_near_all(vals(matmul(a.t().contiguous().t(), b)), vals(c), 0, "transposed operand");
      const Tensor w = uniform_tensor({21, 300}, 7).to(dtype).to(device), bias = uniform_tensor({21}, 8).to(dtype).to(device);
      expect_near_all(vals(linear(a, w, bias)), vals(linear(a32, w.to(DType::Float32), bias.to(DType::Float32))),
                      2 * unit_roundoff(dtype), "linear with bias");
      const Tensor batched = matmul(a.reshape({1, 37, 300}).expand({3, 37, 300}), b);
      expect_near_all(vals(batched.select(0, 2)), vals(c), 0, "batched");
    }
}

TEST(HalfKernels, TiledGemmOverLargeOperands) {
  // Past the CPU's 512 tiles in m, n and k, with a bias (beta = 1) and transposed weights.
  const Tensor x = uniform_tensor({600, 1100}, 10).to(DType::BFloat16), w = uniform_tensor({530, 1100}, 11).to(DType::BFloat16);
  const Tensor bias = uniform_tensor({530}, 12).to(DType::BFloat16);
  const Tensor y = linear(x, w, bias);
  const Tensor want = linear(x.to(DType::Float32), w.to(DType::Float32), bias.to(DType::Float32));
  expect_near_all(vals(y), vals(want), unit_roundoff(DType::BFloat16), "tiled linear");
  expect_near_all(vals(matmul(x.t(), y)), vals(matmul(x.to(DType::Float32).t(), y.to(DType::Float32))),
                  unit_roundoff(DType::BFloat16), "tiled transposed matmul");
}

TEST(HalfTensor, CreationPrintingAndAutograd) {
  for (DType dtype : kHalfTypes) {
    EXPECT_EQ(vals(full({3}, 0.1, {.dtype = dtype})), std::vector<double>(3, float(dtype == DType::BFloat16 ? float(BFloat16(0.1f)) : float(Float16(0.1f)))));
    EXPECT_EQ(zeros({2}, {.dtype = dtype}).dtype(), dtype);
    Generator gen(1);
    const Tensor r = randn({1000}, {.dtype = dtype}, &gen);
    EXPECT_EQ(r.dtype(), dtype);
    EXPECT_NEAR(r.to(DType::Float32).mean().item(), 0.0, 0.1);
    EXPECT_EQ(arange(5, {.dtype = dtype}).to(DType::Float32).sum().item(), 10.0);
    const std::string text = tensor({1.0f / 3, -2.5f}, {2}, {.dtype = dtype}).str();
    EXPECT_TRUE(vgrad_test::contains(text, std::string("dtype=") + dtype_name(dtype))) << text;
    EXPECT_TRUE(vgrad_test::contains(text, dtype == DType::BFloat16 ? "0.334" : "0.3333")) << text;
    // Gradients come back in the leaf's dtype.
    Tensor x = tensor({1.5f, -2.0f, 3.0f}, {3}, {.dtype = dtype, .requires_grad = true});
    (x * x).sum().backward();
    EXPECT_EQ(x.grad().dtype(), dtype);
    EXPECT_EQ(vals(x.grad()), (std::vector<double>{3.0, -4.0, 6.0}));
  }
}

class HalfSafetensors : public vgrad_test::TempDirTest {};

TEST_F(HalfSafetensors, LoadsPyTorchsFileAndRoundTripsOurs) {
  const std::string torch_file = path("torch_half.safetensors");
  std::ofstream(torch_file, std::ios::binary)
      .write(reinterpret_cast<const char*>(kTorchHalfSafetensors), sizeof kTorchHalfSafetensors);
  const auto loaded = nn::load_tensors(torch_file);
  const Tensor bf = loaded.at("bf"), hf = loaded.at("hf");
  EXPECT_EQ(bf.dtype(), DType::BFloat16);
  EXPECT_EQ(bf.shape(), (Shape{2, 3}));
  EXPECT_EQ(vals(bf), std::vector<double>(std::begin(kTorchBf16Values), std::end(kTorchBf16Values)));
  EXPECT_EQ(hf.dtype(), DType::Float16);
  EXPECT_EQ(vals(hf), std::vector<double>(std::begin(kTorchF16Values), std::end(kTorchF16Values)));
  // Ours, written and read back: the same dtypes, bits and header codes.
  const std::string ours = path("ours.safetensors");
  nn::save_tensors(ours, {{"bf", bf}, {"hf", hf}});
  const auto again = nn::load_tensors(ours);
  EXPECT_EQ(again.at("bf").dtype(), DType::BFloat16);
  EXPECT_EQ(vals(again.at("bf")), vals(bf));
  EXPECT_EQ(vals(again.at("hf")), vals(hf));
  std::ifstream in(ours, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_TRUE(vgrad_test::contains(bytes, "\"dtype\":\"BF16\"")) << bytes.substr(0, 200);
  EXPECT_TRUE(vgrad_test::contains(bytes, "\"dtype\":\"F16\""));
}

TEST(HalfOnCuda, RunsWhereAGpuIs) {
  REQUIRE_GPU();  // without one, the 16-bit tests above ran on the CPU only
  const Tensor x = uniform_tensor({5, 7}, 9).to(DType::BFloat16);
  EXPECT_EQ(vals(exp(x.to(cuda_device(0)))), vals(exp(x)));
}

}  // namespace
