// The bulk float32 <-> float16/bfloat16 conversions (core/cpu/half_convert.h): every
// ISA path forced in turn gives core/half.h's scalar bits for every 16-bit value and for
// float32 inputs at and around every rounding boundary (ties, subnormals, overflow to
// Inf, NaN payloads, signalling NaNs), at every length and alignment; and the CPU
// backend's casts use them on contiguous and strided tensors alike.
#include "core/cpu/half_convert.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "support.h"

namespace vgrad::cpu {
namespace {

using vgrad_test::uniform_tensor;

uint32_t bits_of(float f) { return half_bits::float_bits(f); }
float float_of(uint32_t u) { return half_bits::bits_float(u); }

// float32 bit patterns around every place either format rounds: each 16-bit pattern
// shifted to float16's and bfloat16's rounding position, with the dropped bits just
// below, at and above the half-way point; then random patterns.
std::vector<float> rounding_inputs() {
  std::vector<float> out;
  for (uint32_t high = 0; high < (1u << 19); ++high)
    for (uint32_t low : {0x0u, 0x1u, 0xfffu, 0x1000u, 0x1001u, 0x1fffu}) out.push_back(float_of(high << 13 | low));
  for (uint32_t high = 0; high < (1u << 16); ++high)
    for (uint32_t low : {0x0u, 0x1u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) out.push_back(float_of(high << 16 | low));
  std::mt19937 rng(7);
  for (int i = 0; i < 100000; ++i) out.push_back(float_of(uint32_t(rng())));
  return out;
}

class HalfConvertIsa : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!cpu_supports(GetParam()))
      GTEST_SKIP() << "this CPU lacks " << isa_requirement(GetParam()) << " for the " << isa_name(GetParam()) << " kernels";
  }
  const HalfConverters& kernels() const { return half_converters(GetParam()); }
};

TEST_P(HalfConvertIsa, WideningEverySixteenBitValueMatchesTheScalarCode) {
  std::vector<uint16_t> all(65536);
  for (uint32_t h = 0; h < 65536; ++h) all[h] = uint16_t(h);
  std::vector<float> f16(all.size()), bf16(all.size());
  float16_to_float(kernels(), all.data(), f16.data(), int64_t(all.size()));
  bfloat16_to_float(kernels(), all.data(), bf16.data(), int64_t(all.size()));
  int mismatches = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    if (bits_of(f16[h]) != bits_of(half_bits::float16_to_float(uint16_t(h))) && ++mismatches < 5)
      ADD_FAILURE() << isa_name(GetParam()) << " float16 " << std::hex << h << " -> " << bits_of(f16[h]);
    if (bits_of(bf16[h]) != bits_of(half_bits::bfloat16_to_float(uint16_t(h))) && ++mismatches < 5)
      ADD_FAILURE() << isa_name(GetParam()) << " bfloat16 " << std::hex << h << " -> " << bits_of(bf16[h]);
  }
  EXPECT_EQ(mismatches, 0);
}

TEST_P(HalfConvertIsa, NarrowingRoundsAsTheScalarCodeAtEveryBoundary) {
  const std::vector<float> in = rounding_inputs();
  std::vector<uint16_t> f16(in.size()), bf16(in.size());
  float16_from_float(kernels(), in.data(), f16.data(), int64_t(in.size()));
  bfloat16_from_float(kernels(), in.data(), bf16.data(), int64_t(in.size()));
  int mismatches = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    if (f16[i] != half_bits::float16_from_float(in[i]) && ++mismatches < 5)
      ADD_FAILURE() << isa_name(GetParam()) << " float16 of " << std::hex << bits_of(in[i]) << " = " << f16[i];
    if (bf16[i] != half_bits::bfloat16_from_float(in[i]) && ++mismatches < 5)
      ADD_FAILURE() << isa_name(GetParam()) << " bfloat16 of " << std::hex << bits_of(in[i]) << " = " << bf16[i];
  }
  EXPECT_EQ(mismatches, 0);
  // The classes named, as values: ties to even, overflow, the smallest subnormal's tie, NaNs.
  const std::vector<float> named = {1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 65504.0f, 65520.0f, 0x1p-25f, 0x1.8p-24f,
                                    float_of(0x7f800001u), float_of(0xffc12345u), -0.0f, 1e30f, 1.0f, 2.0f,
                                    3.0f, 4.0f, 5.0f, 6.0f};
  std::vector<uint16_t> got(named.size());
  float16_from_float(kernels(), named.data(), got.data(), int64_t(named.size()));
  EXPECT_EQ(got[0], 0x3c00);  // 1 + half an ulp: the tie goes to even (down)
  EXPECT_EQ(got[1], 0x3c02);  // 1 + 1.5 ulp: to even (up)
  EXPECT_EQ(got[2], 0x7bff);
  EXPECT_EQ(got[3], 0x7c00);  // the tie above 65504 is Inf
  EXPECT_EQ(got[4], 0x0000);  // half the smallest subnormal: to even, zero
  EXPECT_EQ(got[5], 0x0002);  // 1.5 smallest subnormals: to even, two
  EXPECT_EQ(got[6], 0x7e00);  // a signalling NaN becomes the quiet NaN
  EXPECT_EQ(got[7], 0xfe00);  // sign kept, payload dropped
  EXPECT_EQ(got[8], 0x8000);
  EXPECT_EQ(got[9], 0x7c00);
}

TEST_P(HalfConvertIsa, EveryLengthAndAlignmentConvertsExactlyTheRange) {
  std::vector<float> in(80);
  for (size_t i = 0; i < in.size(); ++i) in[i] = float(i) * 0.37f - 9.0f;
  for (int64_t offset = 0; offset < 3; ++offset)
    for (int64_t n = 0; n + offset + 2 <= int64_t(in.size()); ++n) {
      std::vector<uint16_t> narrow(in.size(), 0xabcd);
      std::vector<float> wide(in.size(), -1.0f);
      float16_from_float(kernels(), in.data() + offset, narrow.data() + offset, n);
      float16_to_float(kernels(), narrow.data() + offset, wide.data() + offset, n);
      for (int64_t i = 0; i < int64_t(in.size()); ++i) {
        const bool inside = i >= offset && i < offset + n;
        ASSERT_EQ(narrow[size_t(i)], inside ? half_bits::float16_from_float(in[size_t(i)]) : 0xabcd)
            << isa_name(GetParam()) << " n " << n << " offset " << offset << " i " << i;
        ASSERT_EQ(wide[size_t(i)], inside ? float(Float16(in[size_t(i)])) : -1.0f) << "n " << n << " i " << i;
      }
    }
}

INSTANTIATE_TEST_SUITE_P(EachIsa, HalfConvertIsa, ::testing::Values(Isa::Generic, Isa::Avx2, Isa::Avx512),
                         [](const auto& info) { return std::string(isa_name(info.param)); });

TEST(HalfConvert, UnsupportedIsaIsAnErrorNamingTheFeature) {
  for (Isa isa : {Isa::Avx2, Isa::Avx512})
    if (!cpu_supports(isa)) EXPECT_ERROR(half_converters(isa), "half conversion: this CPU lacks", std::string(isa_requirement(isa)));
  EXPECT_EQ(Isa::Generic, half_converters(Isa::Generic).isa);
}

// The backend's casts: contiguous tensors, transposed ones (strided rows) and a slice
// whose rows are contiguous but apart all give the scalar code's bits.
TEST(HalfConvert, TensorCastsOfContiguousAndStridedTensorsMatchTheScalarCode) {
  const Tensor x = uniform_tensor({37, 45}, 11, -70000, 70000);
  for (const Tensor& view : {x, x.t(), x.slice(1, 3, 40)}) {
    const Tensor f16 = view.to(DType::Float16), bf16 = view.to(DType::BFloat16);
    const Tensor f32 = view.contiguous();
    const float* ref = f32.data<float>();
    for (int64_t i = 0; i < f32.numel(); ++i) {
      ASSERT_EQ(f16.contiguous().data<Float16>()[i].bits, Float16(ref[i]).bits) << i;
      ASSERT_EQ(bf16.contiguous().data<BFloat16>()[i].bits, BFloat16(ref[i]).bits) << i;
    }
    const Tensor back = f16.t().to(DType::Float32).contiguous(), back_ref = f16.t().contiguous();
    for (int64_t i = 0; i < back.numel(); ++i) ASSERT_EQ(back.data<float>()[i], float(back_ref.data<Float16>()[i])) << i;
  }
}

}  // namespace
}  // namespace vgrad::cpu
