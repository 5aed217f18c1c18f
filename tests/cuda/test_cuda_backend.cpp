// Tests of the CUDA backend at the Backend level. Everywhere: the device queries answer
// without throwing, asking for a missing GPU says why, pinned memory falls back, and the
// kernels' index arithmetic is checked by tests/core/test_geometry.cpp. With a GPU: every
// primitive of cuda::backend(0) against cpu_backend() on raw Views (broadcast and strided
// cases included), error messages, random streams, and allocator reuse. Without a GPU
// those report SKIPPED.
// Tolerances: float32 elementwise 1e-5 relative (+1e-6 absolute); GEMM, reductions,
// softmax and cross-entropy 1e-4 relative; float64 1e-10; integers exact. Fill, copy,
// where, gathers, max/min/arg* and the IEEE-exact 16-bit ops: the CPU's bits (NaN: a NaN);
// 16-bit transcendental ops: one 16-bit ulp (see "bfloat16 and float16 elementwise").
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <gtest/gtest.h>
#include <initializer_list>
#include <limits>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/backend.h"
#include "core/error.h"
#include "support.h"

#if VGRAD_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace {

using namespace vgrad;

// ---------------- host-side helpers ----------------

void store(DType dtype, void* base, int64_t i, double v) {
  switch (dtype) {
    case DType::Float32: static_cast<float*>(base)[i] = static_cast<float>(v); return;
    case DType::Float64: static_cast<double*>(base)[i] = v; return;
    case DType::Int64: static_cast<int64_t*>(base)[i] = static_cast<int64_t>(v); return;
    case DType::BFloat16: static_cast<BFloat16*>(base)[i] = static_cast<float>(v); return;
    case DType::Float16: static_cast<Float16*>(base)[i] = static_cast<float>(v); return;
  }
}

double load(DType dtype, const void* base, int64_t i) {
  switch (dtype) {
    case DType::Float32: return static_cast<const float*>(base)[i];
    case DType::Float64: return static_cast<const double*>(base)[i];
    case DType::Int64: return static_cast<double>(static_cast<const int64_t*>(base)[i]);
    case DType::BFloat16: return static_cast<const BFloat16*>(base)[i];
    case DType::Float16: return static_cast<const Float16*>(base)[i];
  }
  return 0;
}

std::vector<double> random_values(int64_t n, double low, double high, uint64_t seed, bool integers = false) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(low, high);
  std::vector<double> values(static_cast<size_t>(n));
  for (auto& v : values) v = integers ? std::floor(dist(rng)) : dist(rng);
  return values;
}

// Values away from zero, either sign: for divisors.
std::vector<double> away_from_zero(int64_t n, uint64_t seed) {
  auto values = random_values(n, 0.5, 2.0, seed);
  std::mt19937_64 rng(seed + 1);
  for (auto& v : values)
    if (rng() % 2) v = -v;
  return values;
}

View make_view(void* base, DType dtype, const std::vector<int64_t>& shape, std::vector<int64_t> strides = {},
               int64_t offset = 0) {
  if (strides.empty()) strides = contiguous_strides(shape);
  View v;
  v.data = static_cast<char*>(base) + offset * static_cast<int64_t>(dtype_size(dtype));
  v.dtype = dtype;
  v.ndim = static_cast<int>(shape.size());
  for (size_t d = 0; d < shape.size(); ++d) {
    v.shape[d] = shape[d];
    v.strides[d] = strides[d];
  }
  return v;
}

// Compares element by element: |expected - actual| <= atol + rtol * |expected|; NaNs match
// NaNs only, and an infinity only the same infinity (rtol * Inf would let any value pass).
void expect_close(const std::vector<double>& expected, const std::vector<double>& actual, double rtol, double atol,
                  const std::string& what) {
  ASSERT_EQ(expected.size(), actual.size()) << what;
  int reported = 0;
  int64_t bad = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double e = expected[i], a = actual[i];
    const bool ok = (std::isnan(e) && std::isnan(a)) || e == a ||
                    (std::isfinite(e) && std::isfinite(a) && std::fabs(e - a) <= atol + rtol * std::fabs(e));
    if (!ok) {
      ++bad;
      if (reported++ < 5) ADD_FAILURE() << what << ": element " << i << ": cpu " << e << " vs cuda " << a;
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << expected.size() << " elements differ";
}

struct Tolerance {
  double rtol, atol;
};
Tolerance elementwise_tolerance(DType dtype) {
  if (dtype == DType::Float32) return {1e-5, 1e-6};
  if (dtype == DType::Float64) return {1e-10, 1e-12};
  return {0, 0};
}
Tolerance reduction_tolerance(DType dtype) {
  if (dtype == DType::Float32) return {1e-4, 1e-5};
  if (dtype == DType::Float64) return {1e-10, 1e-12};
  return {0, 0};
}

Backend& gpu() { return cuda::backend(0); }
Backend& cpu() { return cpu_backend(); }

// The same values twice: in host memory for the CPU backend and in device memory (from
// the CUDA backend's allocator) for the GPU. Views over either use the same shape/strides.
class Twin {
 public:
  Twin(DType dtype, const std::vector<double>& values)
      : dtype_(dtype), count_(static_cast<int64_t>(values.size())), host_(storage_words()) {
    for (int64_t i = 0; i < count_; ++i) store(dtype_, host_.data(), i, values[static_cast<size_t>(i)]);
    upload();
  }
  // count elements given as their bits in dtype's layout (int64 beyond 2^53, 16-bit patterns).
  Twin(DType dtype, int64_t count, const void* elements) : dtype_(dtype), count_(count), host_(storage_words()) {
    if (count_ > 0) std::memcpy(host_.data(), elements, static_cast<size_t>(count_) * dtype_size(dtype_));
    upload();
  }
  ~Twin() { gpu().allocator().deallocate(device_, bytes()); }
  Twin(const Twin&) = delete;
  Twin& operator=(const Twin&) = delete;

  View cpu_view(const std::vector<int64_t>& shape, std::vector<int64_t> strides = {}, int64_t offset = 0) {
    return make_view(host_.data(), dtype_, shape, std::move(strides), offset);
  }
  View gpu_view(const std::vector<int64_t>& shape, std::vector<int64_t> strides = {}, int64_t offset = 0) {
    return make_view(device_, dtype_, shape, std::move(strides), offset);
  }
  std::vector<double> cpu_values() const {
    std::vector<double> v(static_cast<size_t>(count_));
    for (int64_t i = 0; i < count_; ++i) v[static_cast<size_t>(i)] = load(dtype_, host_.data(), i);
    return v;
  }
  std::vector<double> gpu_values() const {
    std::vector<double> words(storage_words());
    gpu().copy_to_host(words.data(), device_, bytes());
    std::vector<double> v(static_cast<size_t>(count_));
    for (int64_t i = 0; i < count_; ++i) v[static_cast<size_t>(i)] = load(dtype_, words.data(), i);
    return v;
  }
  // Both copies agree within `tol`.
  void expect_match(Tolerance tol, const std::string& what) const {
    expect_close(cpu_values(), gpu_values(), tol.rtol, tol.atol, what);
  }
  // Each element's bits, zero-extended: the host copy, and the device copy.
  std::vector<uint64_t> cpu_bits() const { return element_bits(host_.data()); }
  std::vector<uint64_t> gpu_bits() const {
    std::vector<double> words(storage_words());
    gpu().copy_to_host(words.data(), device_, bytes());
    return element_bits(words.data());
  }
  DType dtype() const { return dtype_; }
  int64_t count() const { return count_; }

 private:
  void upload() {
    device_ = gpu().allocator().allocate(bytes());
    gpu().copy_from_host(device_, host_.data(), bytes());
  }
  std::vector<uint64_t> element_bits(const void* base) const {
    const size_t size = dtype_size(dtype_);
    std::vector<uint64_t> bits(static_cast<size_t>(count_), 0);
    for (size_t i = 0; i < bits.size(); ++i) std::memcpy(&bits[i], static_cast<const char*>(base) + i * size, size);
    return bits;  // little-endian: the element's bits in the low bytes
  }

  size_t bytes() const { return static_cast<size_t>(std::max<int64_t>(count_, 1)) * dtype_size(dtype_); }
  size_t storage_words() const { return (bytes() + 7) / 8; }

  DType dtype_;
  int64_t count_;
  std::vector<double> host_;  // 8-byte aligned storage for any dtype
  void* device_ = nullptr;
};

std::string dtype_label(DType dtype) { return dtype_name(dtype); }

// Joins label pieces (g++ 12 gives a false -Wrestrict on `"literal" + std::string`).
std::string join(std::initializer_list<std::string> parts) {
  std::string s;
  for (const auto& p : parts) s += p;
  return s;
}

// A floating element's bits in an order where adjacent values differ by 1 (the sign bit
// set counts down from -0): the ulp distance of two values of one sign is the difference.
uint64_t ulp_distance(uint64_t a, uint64_t b, size_t size) {
  const uint64_t sign = uint64_t{1} << (8 * size - 1);
  const uint64_t magnitude_a = a & (sign - 1), magnitude_b = b & (sign - 1);
  if ((a & sign) != (b & sign)) return magnitude_a + magnitude_b;  // across zero (±0 are 0 apart)
  return magnitude_a > magnitude_b ? magnitude_a - magnitude_b : magnitude_b - magnitude_a;
}

// The GPU's copy of out against the CPU's, element by element: the same bits, or for
// floating dtypes within max_ulps of the dtype (finite values only: an infinity must be the
// same infinity). NaN matches any NaN: which NaN's sign and payload an op returns is not
// fixed on either device. Names the first differing indices with both values and bits.
void expect_same_bits(const Twin& out, int64_t max_ulps, const std::string& what) {
  const DType dtype = out.dtype();
  const size_t size = dtype_size(dtype);
  const std::vector<uint64_t> cpu_bits = out.cpu_bits(), gpu_bits = out.gpu_bits();
  const std::vector<double> cpu_values = out.cpu_values(), gpu_values = out.gpu_values();
  int64_t bad = 0;
  for (size_t i = 0; i < cpu_bits.size(); ++i) {
    const double c = cpu_values[i], g = gpu_values[i];
    bool ok = cpu_bits[i] == gpu_bits[i];
    if (!ok && dtype != DType::Int64) {
      if (std::isnan(c) || std::isnan(g))
        ok = std::isnan(c) && std::isnan(g);
      else if (max_ulps > 0 && std::isfinite(c) && std::isfinite(g))  // 0: the bits, -0 is not +0
        ok = ulp_distance(cpu_bits[i], gpu_bits[i], size) <= static_cast<uint64_t>(max_ulps);
    }
    if (!ok && bad++ < 5)
      ADD_FAILURE() << what << " (" << dtype_label(dtype) << "): element " << i << ": cpu " << c << " (0x" << std::hex
                    << cpu_bits[i] << ") vs cuda " << g << " (0x" << gpu_bits[i] << std::dec << ")"
                    << (max_ulps > 0 ? join({", more than ", std::to_string(max_ulps), " ulp apart"}) : "");
  }
  EXPECT_EQ(bad, 0) << what << " (" << dtype_label(dtype) << "): " << bad << " of " << cpu_bits.size()
                    << " elements differ";
}

// The same bits exactly, NaN payloads included (a gather or a selection moves bits).
void expect_identical_bits(const Twin& out, const std::string& what) {
  const std::vector<uint64_t> cpu_bits = out.cpu_bits(), gpu_bits = out.gpu_bits();
  int64_t bad = 0;
  for (size_t i = 0; i < cpu_bits.size(); ++i)
    if (cpu_bits[i] != gpu_bits[i] && bad++ < 5)
      ADD_FAILURE() << what << " (" << dtype_label(out.dtype()) << "): element " << i << ": cpu 0x" << std::hex
                    << cpu_bits[i] << " vs cuda 0x" << gpu_bits[i] << std::dec;
  EXPECT_EQ(bad, 0) << what << " (" << dtype_label(out.dtype()) << "): " << bad << " of " << cpu_bits.size()
                    << " elements differ";
}

// ================= without a GPU (and in builds without CUDA) =================

TEST(CudaDevice, QueriesNeverThrowAndAgree) {
  bool available = true;
  int count = -1;
  EXPECT_NO_THROW(available = cuda::is_available());
  EXPECT_NO_THROW(count = cuda::device_count());
  EXPECT_EQ(available, count > 0);
  EXPECT_EQ(cuda_is_available(), available);
  EXPECT_EQ(cuda_device_count(), count);
#ifdef VGRAD_WITH_CUDA
  EXPECT_TRUE(cuda::built_with_cuda());
#else
  EXPECT_FALSE(cuda::built_with_cuda());
#endif
  if (available) GTEST_SKIP() << "a GPU is present: the no-GPU answers cannot be checked here";
  EXPECT_FALSE(available);
  EXPECT_EQ(count, 0);
}

TEST(CudaDevice, MissingGpuSaysWhy) {
  if (cuda::is_available()) GTEST_SKIP() << "a GPU is present";
  const std::string expected = cuda::built_with_cuda() ? "no GPU found" : "no CUDA support";
  EXPECT_ERROR(cuda::backend(0), expected);
  EXPECT_ERROR(cuda::compute_stream(0), expected);
  EXPECT_ERROR(backend_for(cuda_device(0)), expected);
  EXPECT_ERROR(cuda::backend(3), expected);
}

TEST(CudaDevice, NoSuchGpuNamesTheIndex) {
  REQUIRE_GPU();
  const int count = cuda::device_count();
  EXPECT_ERROR(cuda::backend(count),
                    join({"cuda:", std::to_string(count), ": no such GPU (", std::to_string(count), " available)"}));
  EXPECT_ERROR(cuda::backend(-1), "cuda:-1: no such GPU");
  EXPECT_EQ(&cuda::backend(0), &cuda::backend(0));
  EXPECT_EQ(&backend_for(cuda_device(0)), &cuda::backend(0));
  EXPECT_TRUE(cuda::backend(0).device() == cuda_device(0));
}

TEST(CudaPinned, AllocatesUsableMemoryWithOrWithoutGpu) {
  void* p = cuda::pinned_alloc(4096);
  ASSERT_NE(p, nullptr);
  std::memset(p, 0x5a, 4096);
  EXPECT_EQ(static_cast<unsigned char*>(p)[4095], 0x5a);
  cuda::pinned_free(p);
  cuda::pinned_free(nullptr);  // a no-op
  // Many at once, freed out of order.
  std::vector<void*> blocks;
  for (int i = 0; i < 8; ++i) blocks.push_back(cuda::pinned_alloc(1000 + static_cast<size_t>(i)));
  for (size_t i = blocks.size(); i-- > 0;) cuda::pinned_free(blocks[i]);
}

// ================= GPU vs CPU parity (skipped without a GPU) =================

const DType kAllDtypes[5] = {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16, DType::Int64};

TEST(CudaBackend, HostRoundTripAndSynchronize) {
  REQUIRE_GPU();
  const auto values = random_values(1001, -5, 5, 1);
  Twin t(DType::Float64, values);
  expect_close(values, t.gpu_values(), 0, 0, "round trip");
  EXPECT_NO_THROW(gpu().synchronize());
}

TEST(CudaBackend, FillContiguousAndStrided) {
  REQUIRE_GPU();
  for (DType dtype : kAllDtypes) {
    Twin t(dtype, random_values(4 * 6, -3, 3, 2, true));
    // Every other column of a (4, 6) buffer, then a zero fill of the first row.
    const std::vector<int64_t> shape = {4, 3}, strides = {6, 2};
    cpu().fill(t.cpu_view(shape, strides, 1), 2.5);
    gpu().fill(t.gpu_view(shape, strides, 1), 2.5);
    cpu().fill(t.cpu_view({6}), 0.0);
    gpu().fill(t.gpu_view({6}), 0.0);
    t.expect_match({0, 0}, join({"fill ", dtype_label(dtype)}));
  }
}

// fill(-0.0) stores the sign bit in every floating dtype, through the GPU's memset path
// (contiguous: it once took -0.0 == 0.0 for +0.0) and its kernel (strided); +0.0 still
// clears every bit; 1 / -0 is then -Inf on the GPU.
TEST(CudaBackend, FillWithNegativeZeroKeepsTheSignBit) {
  REQUIRE_GPU();
  for (DType dtype : kAllDtypes) {
    const bool integers = dtype == DType::Int64;
    Twin t(dtype, random_values(4 * 6, 1, 3, 3, integers));
    cpu().fill(t.cpu_view({24}), -0.0);
    const int64_t waits = cuda::host_wait_count(0);
    gpu().fill(t.gpu_view({24}), -0.0);
    EXPECT_EQ(cuda::host_wait_count(0), waits) << "fill waits for nothing on the host";
    expect_same_bits(t, 0, "fill -0.0 contiguous");
    for (double v : t.gpu_values())  // int64 has no -0: 0
      ASSERT_TRUE(v == 0.0 && std::signbit(v) == !integers) << dtype_label(dtype) << " " << v;
    cpu().fill(t.cpu_view({4, 3}, {6, 2}, 1), 0.0);
    gpu().fill(t.gpu_view({4, 3}, {6, 2}, 1), 0.0);
    expect_same_bits(t, 0, "fill +0.0 over -0.0, strided");
    cpu().fill(t.cpu_view({12}), 0.0);
    gpu().fill(t.gpu_view({12}), 0.0);  // the memset path: +0.0 is all-zero bits
    const std::vector<uint64_t> cleared = t.gpu_bits();
    for (size_t i = 0; i < 12; ++i) ASSERT_EQ(cleared[i], 0u) << dtype_label(dtype) << " +0.0 at " << i;
    cpu().fill(t.cpu_view({4, 3}, {6, 2}, 1), -0.0);
    gpu().fill(t.gpu_view({4, 3}, {6, 2}, 1), -0.0);
    expect_same_bits(t, 0, "fill -0.0 strided");
    if (integers) continue;
    Twin inverse(dtype, std::vector<double>(24, 0.0));
    cpu().unary(UnaryOp::Reciprocal, t.cpu_view({24}), inverse.cpu_view({24}));
    gpu().unary(UnaryOp::Reciprocal, t.gpu_view({24}), inverse.gpu_view({24}));
    expect_same_bits(inverse, 0, "reciprocal after fill");
    const std::vector<double> inverses = inverse.gpu_values();
    for (size_t i = 12; i < 24; ++i)  // -0.0 in each: the first fill's, or the last strided one's
      ASSERT_EQ(inverses[i], -std::numeric_limits<double>::infinity()) << dtype_label(dtype) << " 1 / -0 at " << i;
  }
}

// int64 fill of values C++ cannot convert: one rule on both devices (scalar::convert).
TEST(CudaBackend, FillInt64SaturatesAndSendsNanToZero) {
  REQUIRE_GPU();
  const double inf = std::numeric_limits<double>::infinity();
  for (double value :
       {std::nan(""), inf, -inf, 1e19, -1e19, 9223372036854775808.0, -9223372036854775808.0, -2.7, 2.7}) {
    Twin t(DType::Int64, std::vector<double>(12, 5.0));
    cpu().fill(t.cpu_view({12}), value);
    gpu().fill(t.gpu_view({12}), value);
    cpu().fill(t.cpu_view({3}, {4}, 1), -value);  // strided, with the opposite sign
    gpu().fill(t.gpu_view({3}, {4}, 1), -value);
    expect_same_bits(t, 0, join({"int64 fill of ", std::to_string(value)}));
    const int64_t want = std::isnan(value)                ? 0
                         : value >= 9223372036854775808.0 ? INT64_MAX
                         : value < -9223372036854775808.0 ? INT64_MIN
                                                          : static_cast<int64_t>(value);
    EXPECT_EQ(static_cast<int64_t>(t.gpu_bits()[0]), want) << "int64 fill of " << value;
  }
}

// Per source dtype: the values whose conversions differ most (NaN, ±Inf, ±0, past int64,
// past float16 and bfloat16, rounding ties, fractions of either sign), then random ones;
// `count` elements as the dtype's bits.
std::vector<uint64_t> conversion_sources(DType dtype, int64_t count) {
  std::vector<uint64_t> bits(static_cast<size_t>(count), 0);
  if (dtype == DType::Int64) {
    std::vector<int64_t> v = {
        0,     1,     -1,    INT64_MAX, INT64_MIN, (int64_t{1} << 53) + 1, -(int64_t{1} << 53) - 1,
        65504, 65519, 65520, 16777217,  -16777217, int64_t{1} << 62,       123456789,
        -7};
    const auto more = random_values(count, -1e6, 1e6, 201, true);
    for (size_t i = v.size(); i < bits.size(); ++i) v.push_back(static_cast<int64_t>(more[i]));
    std::memcpy(bits.data(), v.data(), bits.size() * sizeof(int64_t));
    return bits;
  }
  std::vector<double> v = {std::nan(""),
                           std::numeric_limits<double>::infinity(),
                           -std::numeric_limits<double>::infinity(),
                           0.0,
                           -0.0,
                           9223372036854775808.0,
                           -9223372036854775808.0,
                           1e19,
                           -1e19,
                           -2.75,
                           2.5,
                           -0.5,
                           0.99,
                           65504,
                           65520,
                           1e-8,
                           3e38,
                           -3e38,
                           1.00390625,
                           16777217,
                           0.1,
                           -123456.789};
  if (dtype == DType::Float64) v.push_back(1e300);  // beyond float: Inf in every narrower dtype
  const auto more = random_values(count, -1e4, 1e4, 202);
  for (size_t i = v.size(); i < bits.size(); ++i) v.push_back(more[i]);
  v.resize(bits.size());
  Twin stored(dtype, v);  // rounded to the dtype as a store does
  return stored.cpu_bits();
}

// Copy between every pair of the five dtypes, contiguous (the GPU's vector path), read
// transposed (its strided kernel) and broadcast, from the hard values above: the CPU's
// bits exactly (NaN: any NaN). Both devices convert through scalar::convert; 16-bit
// destinations round once from float (float64 and int64 sources through float first).
TEST(CudaBackend, CopyConvertsEveryDtypePairWithSpecialValues) {
  REQUIRE_GPU();
  const int64_t rows = 4, cols = 8;
  for (DType from : kAllDtypes) {
    const std::vector<uint64_t> source_bits = conversion_sources(from, rows * cols);
    std::vector<char> packed(static_cast<size_t>(rows * cols) * dtype_size(from));
    for (size_t i = 0; i < source_bits.size(); ++i)
      std::memcpy(packed.data() + i * dtype_size(from), &source_bits[i], dtype_size(from));
    Twin src(from, rows * cols, packed.data());
    for (DType to : kAllDtypes) {
      const std::string label = join({"copy ", dtype_label(from), " -> ", dtype_label(to)});
      Twin out(to, std::vector<double>(static_cast<size_t>(rows * cols), 0.0));
      cpu().copy(src.cpu_view({rows, cols}), out.cpu_view({rows, cols}));
      const int64_t waits = cuda::host_wait_count(0);
      gpu().copy(src.gpu_view({rows, cols}), out.gpu_view({rows, cols}));
      EXPECT_EQ(cuda::host_wait_count(0), waits) << label << " waits for nothing on the host";
      expect_same_bits(out, 0, join({label, " contiguous"}));
      cpu().copy(src.cpu_view({rows, cols}, {1, rows}), out.cpu_view({rows, cols}));  // storage (8, 4) read transposed
      gpu().copy(src.gpu_view({rows, cols}, {1, rows}), out.gpu_view({rows, cols}));
      expect_same_bits(out, 0, join({label, " transposed source"}));
      cpu().copy(src.cpu_view({rows, cols}, {0, 1}, 8), out.cpu_view({rows, cols}));  // elements 8..15 on every row
      gpu().copy(src.gpu_view({rows, cols}, {0, 1}, 8), out.gpu_view({rows, cols}));
      expect_same_bits(out, 0, join({label, " broadcast row"}));
    }
  }
}

TEST(CudaBackend, CopyConvertsBroadcastsAndReadsStrided) {
  REQUIRE_GPU();
  const DType dtypes[3] = {DType::Float32, DType::Float64, DType::Int64};
  for (DType from : dtypes)
    for (DType to : dtypes) {
      Twin src(from, random_values(4 * 5, -4, 4, 3));
      Twin out(to, std::vector<double>(4 * 5, 0.0));
      // transposed read: src storage (5, 4) read as (4, 5)
      cpu().copy(src.cpu_view({4, 5}, {1, 4}), out.cpu_view({4, 5}));
      gpu().copy(src.gpu_view({4, 5}, {1, 4}), out.gpu_view({4, 5}));
      out.expect_match({0, 0}, join({"copy ", dtype_label(from), " -> ", dtype_label(to)}));
      // broadcast a row (first 5 values) over 4 rows
      cpu().copy(src.cpu_view({4, 5}, {0, 1}), out.cpu_view({4, 5}));
      gpu().copy(src.gpu_view({4, 5}, {0, 1}), out.gpu_view({4, 5}));
      out.expect_match({0, 0}, join({"broadcast copy ", dtype_label(from), " -> ", dtype_label(to)}));
    }
}

struct UnaryCase {
  UnaryOp op;
  const char* name;
  double low, high;  // input domain
  double a, b;
};

const std::vector<UnaryCase>& unary_cases() {
  static const std::vector<UnaryCase> cases = {
      {UnaryOp::Neg, "neg", -3, 3, 0, 0},
      {UnaryOp::Exp, "exp", -3, 3, 0, 0},
      {UnaryOp::Log, "log", 0.1, 4, 0, 0},
      {UnaryOp::Sqrt, "sqrt", 0.1, 4, 0, 0},
      {UnaryOp::Abs, "abs", -3, 3, 0, 0},
      {UnaryOp::Sign, "sign", -3, 3, 0, 0},
      {UnaryOp::Relu, "relu", -3, 3, 0, 0},
      {UnaryOp::Sigmoid, "sigmoid", -6, 6, 0, 0},
      {UnaryOp::Tanh, "tanh", -3, 3, 0, 0},
      {UnaryOp::Gelu, "gelu", -4, 4, 0, 0},
      {UnaryOp::Affine, "affine", -3, 3, 1.5, -0.25},
      {UnaryOp::PowScalar, "pow 2.5", 0.1, 3, 2.5, 0},
      {UnaryOp::PowScalar, "pow 2", -3, 3, 2, 0},
      {UnaryOp::RPowScalar, "rpow", -3, 3, 1.7, 0},
      {UnaryOp::Clamp, "clamp", -3, 3, -0.5, 0.8},
      {UnaryOp::LeakyRelu, "leaky_relu", -3, 3, 0.1, 0},
      {UnaryOp::Square, "square", -3, 3, 0, 0},
      {UnaryOp::Reciprocal, "reciprocal", 0.2, 3, 0, 0},
  };
  return cases;
}

TEST(CudaBackend, EveryUnaryOpContiguousAndStrided) {
  REQUIRE_GPU();
  for (DType dtype : {DType::Float32, DType::Float64}) {
    for (const auto& c : unary_cases()) {
      const std::string label = join({c.name, " ", dtype_label(dtype)});
      Twin x(dtype, random_values(3 * 7 * 11, c.low, c.high, 11));
      Twin out(dtype, std::vector<double>(3 * 7 * 11, 0.0));
      cpu().unary(c.op, x.cpu_view({3, 7, 11}), out.cpu_view({3, 7, 11}), c.a, c.b);
      gpu().unary(c.op, x.gpu_view({3, 7, 11}), out.gpu_view({3, 7, 11}), c.a, c.b);
      out.expect_match(elementwise_tolerance(dtype), label);
      // x stored (11, 7, 3), read transposed as (3, 7, 11)
      cpu().unary(c.op, x.cpu_view({3, 7, 11}, {1, 3, 21}), out.cpu_view({3, 7, 11}), c.a, c.b);
      gpu().unary(c.op, x.gpu_view({3, 7, 11}, {1, 3, 21}), out.gpu_view({3, 7, 11}), c.a, c.b);
      out.expect_match(elementwise_tolerance(dtype), join({label, " (strided input)"}));
      // in place
      cpu().unary(c.op, out.cpu_view({3, 7, 11}), out.cpu_view({3, 7, 11}), c.a, c.b);
      gpu().unary(c.op, out.gpu_view({3, 7, 11}), out.gpu_view({3, 7, 11}), c.a, c.b);
      out.expect_match(elementwise_tolerance(dtype), join({label, " (in place)"}));
    }
  }
}

TEST(CudaBackend, UnaryOnInt64) {
  REQUIRE_GPU();
  const std::vector<UnaryCase> cases = {
      {UnaryOp::Neg, "neg", -5, 6, 0, 0},        {UnaryOp::Abs, "abs", -5, 6, 0, 0},
      {UnaryOp::Sign, "sign", -5, 6, 0, 0},      {UnaryOp::Relu, "relu", -5, 6, 0, 0},
      {UnaryOp::Affine, "affine", -5, 6, 2, -3}, {UnaryOp::Square, "square", -5, 6, 0, 0},
  };
  for (const auto& c : cases) {
    Twin x(DType::Int64, random_values(50, c.low, c.high, 5, true));
    Twin out(DType::Int64, std::vector<double>(50, 0.0));
    cpu().unary(c.op, x.cpu_view({5, 10}), out.cpu_view({5, 10}), c.a, c.b);
    gpu().unary(c.op, x.gpu_view({5, 10}), out.gpu_view({5, 10}), c.a, c.b);
    out.expect_match({0, 0}, join({c.name, " int64"}));
  }
  Twin x(DType::Int64, std::vector<double>(4, 1.0));
  // The seam refuses what the tensor layer refuses (as the CPU does: tests/core/test_backend.cpp).
  EXPECT_ERROR(gpu().unary(UnaryOp::Exp, x.gpu_view({4}), x.gpu_view({4}), 0, 0), "exp: not defined for int64");
  EXPECT_ERROR(gpu().unary(UnaryOp::Clamp, x.gpu_view({4}), x.gpu_view({4}), -2, 3), "clamp: not defined for int64");
}

struct BinaryCase {
  BinaryOp op;
  const char* name;
  std::function<std::vector<double>(int64_t, uint64_t)> a_values, b_values;
};

std::vector<BinaryCase> binary_cases() {
  auto any = [](int64_t n, uint64_t seed) { return random_values(n, -3, 3, seed); };
  auto positive = [](int64_t n, uint64_t seed) { return random_values(n, 0.1, 2, seed); };
  auto small_ints = [](int64_t n, uint64_t seed) { return random_values(n, -2, 3, seed, true); };
  auto unit = [](int64_t n, uint64_t seed) { return random_values(n, 0.01, 0.99, seed); };
  auto symmetric_unit = [](int64_t n, uint64_t seed) { return random_values(n, -0.99, 0.99, seed); };
  return {
      {BinaryOp::Add, "add", any, any},
      {BinaryOp::Sub, "sub", any, any},
      {BinaryOp::Mul, "mul", any, any},
      {BinaryOp::Div, "div", any, away_from_zero},
      {BinaryOp::Pow, "pow", positive, any},
      {BinaryOp::Maximum, "maximum", small_ints, any},
      {BinaryOp::Minimum, "minimum", small_ints, any},
      {BinaryOp::Eq, "eq", small_ints, small_ints},
      {BinaryOp::Ne, "ne", small_ints, small_ints},
      {BinaryOp::Lt, "lt", small_ints, small_ints},
      {BinaryOp::Le, "le", small_ints, small_ints},
      {BinaryOp::Gt, "gt", small_ints, small_ints},
      {BinaryOp::Ge, "ge", small_ints, small_ints},
      {BinaryOp::ReluBackward, "relu_backward", any, any},
      {BinaryOp::SigmoidBackward, "sigmoid_backward", any, unit},
      {BinaryOp::TanhBackward, "tanh_backward", any, symmetric_unit},
      {BinaryOp::GeluBackward, "gelu_backward", any, any},
  };
}

TEST(CudaBackend, EveryBinaryOpWithBroadcastAndStrides) {
  REQUIRE_GPU();
  for (DType dtype : {DType::Float32, DType::Float64}) {
    for (const auto& c : binary_cases()) {
      const std::string label = join({c.name, " ", dtype_label(dtype)});
      const Tolerance tol = elementwise_tolerance(dtype);
      Twin a(dtype, c.a_values(4 * 5 * 6, 21));
      Twin b(dtype, c.b_values(4 * 5 * 6, 22));
      Twin out(dtype, std::vector<double>(4 * 5 * 6, 0.0));
      const std::vector<int64_t> shape = {4, 5, 6};
      cpu().binary(c.op, a.cpu_view(shape), b.cpu_view(shape), out.cpu_view(shape));
      gpu().binary(c.op, a.gpu_view(shape), b.gpu_view(shape), out.gpu_view(shape));
      out.expect_match(tol, join({label, " (same shape)"}));
      // b: a (5,) column broadcast over dims 0 and 2 (0 strides)
      cpu().binary(c.op, a.cpu_view(shape), b.cpu_view(shape, {0, 1, 0}), out.cpu_view(shape));
      gpu().binary(c.op, a.gpu_view(shape), b.gpu_view(shape, {0, 1, 0}), out.gpu_view(shape));
      out.expect_match(tol, join({label, " (broadcast b)"}));
      // a: a scalar broadcast everywhere; b: read transposed (storage (6, 5, 4))
      cpu().binary(c.op, a.cpu_view(shape, {0, 0, 0}), b.cpu_view(shape, {1, 4, 20}), out.cpu_view(shape));
      gpu().binary(c.op, a.gpu_view(shape, {0, 0, 0}), b.gpu_view(shape, {1, 4, 20}), out.gpu_view(shape));
      out.expect_match(tol, join({label, " (scalar a, strided b)"}));
    }
  }
}

TEST(CudaBackend, BinaryOnInt64) {
  REQUIRE_GPU();
  const BinaryOp ops[] = {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Pow,
                          BinaryOp::Maximum, BinaryOp::Minimum, BinaryOp::Eq, BinaryOp::Ne,
                          BinaryOp::Lt, BinaryOp::Le, BinaryOp::Gt, BinaryOp::Ge};
  auto divisors = random_values(8, 1, 4, 32, true);
  for (size_t i = 0; i < divisors.size(); ++i)
    if (i % 2) divisors[i] = -divisors[i];
  for (BinaryOp op : ops) {
    Twin a(DType::Int64, random_values(6 * 8, -9, 10, 31, true));
    Twin b(DType::Int64, divisors);
    Twin out(DType::Int64, std::vector<double>(6 * 8, 0.0));
    cpu().binary(op, a.cpu_view({6, 8}), b.cpu_view({6, 8}, {0, 1}), out.cpu_view({6, 8}));
    gpu().binary(op, a.gpu_view({6, 8}), b.gpu_view({6, 8}, {0, 1}), out.gpu_view({6, 8}));
    out.expect_match({0, 0}, join({"int64 binary op ", std::to_string(static_cast<int>(op))}));
  }
  // True division of integers is a floating op (the tensor layer promotes), and gradients
  // are floating: the seam refuses both.
  Twin a(DType::Int64, {6.0, 7.0});
  EXPECT_ERROR(gpu().binary(BinaryOp::Div, a.gpu_view({2}), a.gpu_view({2}), a.gpu_view({2})),
               "div: not defined for int64");
  EXPECT_ERROR(gpu().binary(BinaryOp::ReluBackward, a.gpu_view({2}), a.gpu_view({2}), a.gpu_view({2})),
               "relu_backward: not defined for int64");
}

TEST(CudaBackend, WhereWithBroadcastCondition) {
  REQUIRE_GPU();
  for (DType dtype : {DType::Float32, DType::Int64}) {
    Twin cond(dtype, random_values(6, 0, 2, 41, true));  // 0 or 1
    Twin a(dtype, random_values(4 * 6, -5, 5, 42, true));
    Twin b(dtype, {7.0});
    Twin out(dtype, std::vector<double>(4 * 6, 0.0));
    cpu().where(cond.cpu_view({4, 6}, {0, 1}), a.cpu_view({4, 6}), b.cpu_view({4, 6}, {0, 0}), out.cpu_view({4, 6}));
    gpu().where(cond.gpu_view({4, 6}, {0, 1}), a.gpu_view({4, 6}), b.gpu_view({4, 6}, {0, 0}), out.gpu_view({4, 6}));
    out.expect_match({0, 0}, join({"where ", dtype_label(dtype)}));
  }
}

// ---------------- bfloat16 and float16 elementwise (T2) ----------------
// Both devices load 16-bit operands into float, run the same float functor and round the
// result once (core/half.h, compute_t). Where each step is an IEEE-exact float op (±, ×,
// ÷, sqrt, comparisons, selections; a product of two 16-bit values is exact in float, so
// the GPU's fused multiply-add rounds as the CPU's multiply then add), the GPU must give
// the CPU's bits on every 16-bit pattern. Where the functor calls a transcendental
// function (exp, log, tanh, erf, pow), CUDA's and glibc's float results differ by a few
// float ulps and may round to neighbouring 16-bit values: one 16-bit ulp, on inputs in
// the op's domain (gelu's kept to [-3, 3]: below, 1 + erf(x/√2) cancels and the float
// ulps become many 16-bit ones) plus ±0, ±Inf and NaN.

// Every 16-bit pattern once, in a seeded order (65536 elements = 16 x 64 x 64).
std::vector<uint16_t> every_16bit_pattern(uint64_t seed) {
  std::vector<uint16_t> bits(65536);
  for (size_t i = 0; i < bits.size(); ++i) bits[i] = static_cast<uint16_t>(i);
  std::shuffle(bits.begin(), bits.end(), std::mt19937_64(seed));
  return bits;
}

// Random values in [low, high) with ±0, ±Inf and NaN first, as 16-bit bits of dtype.
std::vector<uint16_t> domain_16bit(DType dtype, int64_t n, double low, double high, uint64_t seed) {
  auto v = random_values(n, low, high, seed);
  const double specials[] = {0.0, -0.0, std::numeric_limits<double>::infinity(),
                             -std::numeric_limits<double>::infinity(), std::nan("")};
  for (size_t i = 0; i < 5; ++i) v[i] = specials[i];
  std::vector<uint16_t> bits(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    bits[i] =
        dtype == DType::BFloat16 ? BFloat16(static_cast<float>(v[i])).bits : Float16(static_cast<float>(v[i])).bits;
  return bits;
}

const std::vector<int64_t> k16BitShape = {16, 64, 64};
const std::vector<int64_t> k16BitTransposed = {1, 16, 1024};  // storage (64, 64, 16) read as (16, 64, 64)

TEST(CudaBackend, EveryUnaryOpOn16BitFloatsContiguousStridedAndInPlace) {
  REQUIRE_GPU();
  struct Case {
    UnaryOp op;
    const char* name;
    double a, b;
    bool exact;        // IEEE-exact float steps: every pattern, the CPU's bits
    double low, high;  // otherwise: the domain, within one 16-bit ulp
  };
  const Case cases[] = {
      {UnaryOp::Neg, "neg", 0, 0, true, 0, 0},
      {UnaryOp::Abs, "abs", 0, 0, true, 0, 0},
      {UnaryOp::Sign, "sign", 0, 0, true, 0, 0},
      {UnaryOp::Relu, "relu", 0, 0, true, 0, 0},
      {UnaryOp::Affine, "affine", 1.5, -0.25, true, 0, 0},
      {UnaryOp::PowScalar, "pow 2", 2, 0, true, 0, 0},
      {UnaryOp::Clamp, "clamp", -0.5, 0.8, true, 0, 0},
      {UnaryOp::LeakyRelu, "leaky_relu", 0.1, 0, true, 0, 0},
      {UnaryOp::Square, "square", 0, 0, true, 0, 0},
      {UnaryOp::Reciprocal, "reciprocal", 0, 0, true, 0, 0},
      {UnaryOp::Sqrt, "sqrt", 0, 0, true, 0, 0},
      {UnaryOp::Exp, "exp", 0, 0, false, -3, 3},
      {UnaryOp::Log, "log", 0, 0, false, 0.1, 4},
      {UnaryOp::Sigmoid, "sigmoid", 0, 0, false, -6, 6},
      {UnaryOp::Tanh, "tanh", 0, 0, false, -3, 3},
      {UnaryOp::Gelu, "gelu", 0, 0, false, -3, 3},
      {UnaryOp::PowScalar, "pow 2.5", 2.5, 0, false, 0.1, 3},
      {UnaryOp::RPowScalar, "rpow", 1.7, 0, false, -3, 3},
      {UnaryOp::Log1p, "log1p", 0, 0, false, -0.5, 3},
      {UnaryOp::Expm1, "expm1", 0, 0, false, -3, 3},
  };
  const int64_t n = 16 * 64 * 64;
  for (DType dtype : {DType::BFloat16, DType::Float16}) {
    for (const Case& c : cases) {
      const std::string label = join({c.name, c.exact ? " (every pattern)" : " (domain)"});
      const std::vector<uint16_t> bits = c.exact ? every_16bit_pattern(11) : domain_16bit(dtype, n, c.low, c.high, 11);
      const int64_t ulps = c.exact ? 0 : 1;
      Twin x(dtype, n, bits.data());
      Twin out(dtype, std::vector<double>(static_cast<size_t>(n), 0.0));
      cpu().unary(c.op, x.cpu_view(k16BitShape), out.cpu_view(k16BitShape), c.a, c.b);
      gpu().unary(c.op, x.gpu_view(k16BitShape), out.gpu_view(k16BitShape), c.a, c.b);
      expect_same_bits(out, ulps, join({label, " contiguous"}));
      cpu().unary(c.op, x.cpu_view(k16BitShape, k16BitTransposed), out.cpu_view(k16BitShape), c.a, c.b);
      gpu().unary(c.op, x.gpu_view(k16BitShape, k16BitTransposed), out.gpu_view(k16BitShape), c.a, c.b);
      expect_same_bits(out, ulps, join({label, " transposed input"}));
      // In place, on each device's own result (the CPU's bits again where exact).
      cpu().unary(c.op, out.cpu_view(k16BitShape), out.cpu_view(k16BitShape), c.a, c.b);
      gpu().unary(c.op, out.gpu_view(k16BitShape), out.gpu_view(k16BitShape), c.a, c.b);
      if (c.exact) expect_same_bits(out, 0, join({label, " in place"}));
    }
  }
}

TEST(CudaBackend, EveryBinaryOpAndWhereOn16BitFloatsWithBroadcastAndStrides) {
  REQUIRE_GPU();
  struct Case {
    BinaryOp op;
    const char* name;
    bool exact;  // as for the unary ops: every pattern against every pattern, the CPU's bits
  };
  const Case cases[] = {{BinaryOp::Add, "add", true},
                        {BinaryOp::Sub, "sub", true},
                        {BinaryOp::Mul, "mul", true},
                        {BinaryOp::Div, "div", true},
                        {BinaryOp::Maximum, "maximum", true},
                        {BinaryOp::Minimum, "minimum", true},
                        {BinaryOp::Eq, "eq", true},
                        {BinaryOp::Ne, "ne", true},
                        {BinaryOp::Lt, "lt", true},
                        {BinaryOp::Le, "le", true},
                        {BinaryOp::Gt, "gt", true},
                        {BinaryOp::Ge, "ge", true},
                        {BinaryOp::ReluBackward, "relu_backward", true},
                        {BinaryOp::SigmoidBackward, "sigmoid_backward", true},
                        {BinaryOp::TanhBackward, "tanh_backward", true},
                        {BinaryOp::Pow, "pow", false},
                        {BinaryOp::GeluBackward, "gelu_backward", false}};
  const int64_t n = 16 * 64 * 64;
  for (DType dtype : {DType::BFloat16, DType::Float16}) {
    for (const Case& c : cases) {
      const std::string label = join({c.name, c.exact ? " (every pattern)" : " (domain)"});
      const std::vector<uint16_t> a_bits = c.exact ? every_16bit_pattern(21) : domain_16bit(dtype, n, 0.1, 2, 21);
      // gelu_backward's b from -0.5: near its root (-0.75) Φ(b) + b·φ(b) cancels.
      const double b_low = c.op == BinaryOp::GeluBackward ? -0.5 : -3;
      const std::vector<uint16_t> b_bits = c.exact ? every_16bit_pattern(22) : domain_16bit(dtype, n, b_low, 3, 22);
      const int64_t ulps = c.exact ? 0 : 1;
      Twin a(dtype, n, a_bits.data()), b(dtype, n, b_bits.data());
      Twin out(dtype, std::vector<double>(static_cast<size_t>(n), 0.0));
      const auto& shape = k16BitShape;
      cpu().binary(c.op, a.cpu_view(shape), b.cpu_view(shape), out.cpu_view(shape));
      gpu().binary(c.op, a.gpu_view(shape), b.gpu_view(shape), out.gpu_view(shape));
      expect_same_bits(out, ulps, join({label, " same shape"}));
      // b: a 64-element column broadcast over dims 0 and 2
      cpu().binary(c.op, a.cpu_view(shape), b.cpu_view(shape, {0, 1, 0}), out.cpu_view(shape));
      gpu().binary(c.op, a.gpu_view(shape), b.gpu_view(shape, {0, 1, 0}), out.gpu_view(shape));
      expect_same_bits(out, ulps, join({label, " broadcast b"}));
      // a: one element broadcast everywhere; b: read transposed
      for (int64_t at : {int64_t{0}, int64_t{3}}) {  // an exact pattern's first elements: two scalars
        cpu().binary(c.op, a.cpu_view(shape, {0, 0, 0}, at), b.cpu_view(shape, k16BitTransposed), out.cpu_view(shape));
        gpu().binary(c.op, a.gpu_view(shape, {0, 0, 0}, at), b.gpu_view(shape, k16BitTransposed), out.gpu_view(shape));
        expect_same_bits(out, ulps, join({label, " scalar a (element ", std::to_string(at), "), transposed b"}));
      }
    }
    // where selects bits: every pattern as the condition (±0 false; NaN and subnormals true),
    // a read transposed, b a broadcast row.
    const auto cond_bits = every_16bit_pattern(31), a_bits = every_16bit_pattern(32), b_bits = every_16bit_pattern(33);
    Twin cond(dtype, n, cond_bits.data()), a(dtype, n, a_bits.data()), b(dtype, n, b_bits.data());
    Twin out(dtype, std::vector<double>(static_cast<size_t>(n), 0.0));
    cpu().where(cond.cpu_view(k16BitShape), a.cpu_view(k16BitShape, k16BitTransposed),
                b.cpu_view(k16BitShape, {0, 0, 1}), out.cpu_view(k16BitShape));
    gpu().where(cond.gpu_view(k16BitShape), a.gpu_view(k16BitShape, k16BitTransposed),
                b.gpu_view(k16BitShape, {0, 0, 1}), out.gpu_view(k16BitShape));
    expect_identical_bits(out, "where, transposed a, broadcast b: the selected bits, NaNs included");
    cpu().where(cond.cpu_view(k16BitShape, {0, 1, 64}), a.cpu_view(k16BitShape), b.cpu_view(k16BitShape),
                out.cpu_view(k16BitShape));  // the condition broadcast over dim 0, transposed in the others
    gpu().where(cond.gpu_view(k16BitShape, {0, 1, 64}), a.gpu_view(k16BitShape), b.gpu_view(k16BitShape),
                out.gpu_view(k16BitShape));
    expect_identical_bits(out, "where with a broadcast condition");
  }
}

// Contiguous operands take 16-byte accesses where every pointer is aligned and one
// element at a time where a view starts off its alignment; either way every element of
// the view, and nothing around it, is written (the 42s before and after must stay).
TEST(CudaBackend, Elementwise16ByteAccessesAndTails) {
  REQUIRE_GPU();
  for (DType dtype : {DType::Float32, DType::Float64, DType::Int64, DType::BFloat16, DType::Float16}) {
    const bool integers = dtype == DType::Int64;
    for (int64_t n : {1, 3, 4, 7, 8, 9, 17, 1000, 4099}) {
      for (int64_t offset : {0, 1, 8}) {  // 8 elements is aligned for every dtype, 1 for none
        for (int64_t shift : {0, 1}) {    // the inputs one element further: misaligned
          const int64_t total = offset + shift + n + 5;
          const std::string label = join({dtype_label(dtype), " n=", std::to_string(n), " offset=",
                                          std::to_string(offset), " shift=", std::to_string(shift)});
          Twin a(dtype, random_values(total, -3, 3, 7, integers));
          Twin b(dtype, random_values(total, 0.5, 3, 8, integers));
          Twin wide(DType::Float64, random_values(total, -3, 3, 9, integers));
          Twin out(dtype, std::vector<double>(static_cast<size_t>(total), 42.0));
          auto on_both = [&](const std::string& op, auto run) {
            run(cpu(), [&](Twin& t, int64_t at) { return t.cpu_view({n}, {}, at); });
            run(gpu(), [&](Twin& t, int64_t at) { return t.gpu_view({n}, {}, at); });
            out.expect_match({0, 0}, join({op, " ", label}));
          };
          const int64_t in_at = offset + shift;
          on_both("mul", [&](Backend& be, auto view) {
            be.binary(BinaryOp::Mul, view(a, in_at), view(b, in_at), view(out, offset));
          });
          on_both("neg", [&](Backend& be, auto view) { be.unary(UnaryOp::Neg, view(a, in_at), view(out, offset)); });
          on_both("where", [&](Backend& be, auto view) {
            be.where(view(b, in_at), view(a, in_at), view(b, in_at), view(out, offset));
          });
          on_both("copy from float64", [&](Backend& be, auto view) { be.copy(view(wide, in_at), view(out, offset)); });
          on_both("fill", [&](Backend& be, auto view) { be.fill(view(out, offset), 2.5); });
        }
      }
    }
  }
}

// op on both devices into a fresh output (-99 everywhere first).
std::unique_ptr<Twin> reduce_on_both(ReduceOp op, Twin& in, const std::vector<int64_t>& in_shape,
                                     const std::vector<int64_t>& in_strides, const std::vector<int64_t>& out_shape,
                                     double scale) {
  int64_t out_count = 1;
  for (int64_t s : out_shape) out_count *= s;
  const bool arg = op == ReduceOp::ArgMax || op == ReduceOp::ArgMin;
  auto out = std::make_unique<Twin>(arg ? DType::Int64 : in.dtype(),
                                    std::vector<double>(static_cast<size_t>(out_count), -99.0));
  cpu().reduce(op, in.cpu_view(in_shape, in_strides), out->cpu_view(out_shape), scale);
  gpu().reduce(op, in.gpu_view(in_shape, in_strides), out->gpu_view(out_shape), scale);
  return out;
}

void reduce_both(ReduceOp op, Twin& in, const std::vector<int64_t>& in_shape, const std::vector<int64_t>& in_strides,
                 const std::vector<int64_t>& out_shape, double scale, const std::string& label) {
  const bool arg = op == ReduceOp::ArgMax || op == ReduceOp::ArgMin;
  const Tolerance tol = arg ? Tolerance{0, 0} : reduction_tolerance(in.dtype());
  reduce_on_both(op, in, in_shape, in_strides, out_shape, scale)->expect_match(tol, label);
}

TEST(CudaBackend, ReduceOverFirstLastMiddleAndAllDims) {
  REQUIRE_GPU();
  const std::vector<int64_t> shape = {6, 7, 9};
  for (DType dtype : {DType::Float32, DType::Float64}) {
    Twin in(dtype, random_values(6 * 7 * 9, -2, 2, 51));
    const std::vector<std::vector<int64_t>> outs = {{1, 7, 9}, {6, 7, 1}, {6, 1, 9}, {1, 1, 1}, {1, 7, 1}};
    for (const auto& out_shape : outs) {
      const std::string where_ = join({" ", dtype_label(dtype), " -> [", std::to_string(out_shape[0]), ",",
                                       std::to_string(out_shape[1]), ",", std::to_string(out_shape[2]), "]"});
      reduce_both(ReduceOp::Sum, in, shape, {}, out_shape, 0.5, join({"sum", where_}));
      reduce_both(ReduceOp::Max, in, shape, {}, out_shape, 1.0, join({"max", where_}));
      reduce_both(ReduceOp::Min, in, shape, {}, out_shape, 1.0, join({"min", where_}));
    }
    // Arg* over one dim (the CPU backend's contract): first, middle, last
    for (const auto& out_shape : std::vector<std::vector<int64_t>>{{1, 7, 9}, {6, 1, 9}, {6, 7, 1}}) {
      reduce_both(ReduceOp::ArgMax, in, shape, {}, out_shape, 1.0, join({"argmax ", dtype_label(dtype)}));
      reduce_both(ReduceOp::ArgMin, in, shape, {}, out_shape, 1.0, join({"argmin ", dtype_label(dtype)}));
    }
    // strided input: storage (9, 7) read transposed as (7, 9)
    reduce_both(ReduceOp::Sum, in, {7, 9}, {1, 7}, {1, 9}, 1.0, "sum of a transposed view, dim 0");
    reduce_both(ReduceOp::Sum, in, {7, 9}, {1, 7}, {7, 1}, 1.0, "sum of a transposed view, dim 1");
    reduce_both(ReduceOp::ArgMax, in, {7, 9}, {1, 7}, {7, 1}, 1.0, "argmax of a transposed view");
  }
}

TEST(CudaBackend, ReduceTiesTakeTheFirstIndexInt64) {
  REQUIRE_GPU();
  Twin in(DType::Int64, random_values(40 * 30, 0, 3, 61, true));  // many ties
  for (const auto& out_shape : std::vector<std::vector<int64_t>>{{1, 30}, {40, 1}}) {
    reduce_both(ReduceOp::ArgMax, in, {40, 30}, {}, out_shape, 1.0, "argmax int64 ties");
    reduce_both(ReduceOp::ArgMin, in, {40, 30}, {}, out_shape, 1.0, "argmin int64 ties");
    reduce_both(ReduceOp::Max, in, {40, 30}, {}, out_shape, 1.0, "max int64");
    reduce_both(ReduceOp::Min, in, {40, 30}, {}, out_shape, 1.0, "min int64");
    reduce_both(ReduceOp::Sum, in, {40, 30}, {}, out_shape, 1.0, "sum int64");
  }
}

// Shapes that take the block-per-row path, the column path with split rows, and the
// two-pass split of a full reduction.
TEST(CudaBackend, ReduceLargeShapes) {
  REQUIRE_GPU();
  Twin rows(DType::Float32, random_values(3 * 10000, 0, 1, 71));
  reduce_both(ReduceOp::Sum, rows, {3, 10000}, {}, {3, 1}, 1.0, "long rows sum");
  reduce_both(ReduceOp::Max, rows, {3, 10000}, {}, {3, 1}, 1.0, "long rows max");
  reduce_both(ReduceOp::ArgMax, rows, {3, 10000}, {}, {3, 1}, 1.0, "long rows argmax");
  Twin cols(DType::Float32, random_values(20000 * 3, 0, 1, 72));
  reduce_both(ReduceOp::Sum, cols, {20000, 3}, {}, {1, 3}, 1.0 / 20000, "tall columns mean");
  reduce_both(ReduceOp::ArgMin, cols, {20000, 3}, {}, {1, 3}, 1.0, "tall columns argmin");
  Twin all(DType::Float32, random_values(300000, 0, 1, 73));
  reduce_both(ReduceOp::Sum, all, {300000}, {}, {1}, 1.0, "full sum");
  reduce_both(ReduceOp::Min, all, {300000}, {}, {1}, 1.0, "full min");
  reduce_both(ReduceOp::ArgMax, all, {300000}, {}, {1}, 1.0, "full argmax");
}

// One reduced slice of `length` values for T1: integers 0..2 that tie everywhere, and per
// kind the extremes placed across the GPU's splits (the first of two equal extremes must
// win, in whichever split it falls):
//   0 ties: 3 at 45%, 45% + 33 and 85%, -1 at 30% and 70%      (argmax 45%, argmin 30%)
//   1 NaN at 70% and 90% after a 3 at 10%                      (max, min, sum NaN; arg* the first NaN)
//   2 +Inf at 40% and 80%, -Inf at 60%                          (sum NaN)
//   3 +Inf at 50% and 75%                                       (sum +Inf)
//   4 all -Inf                                                  (every arg* 0)
//   5 -Inf at the last position                                 (sum -Inf, argmin last)
constexpr int kSliceKinds = 6;
std::vector<double> reduction_slice(int kind, int64_t length, uint64_t seed) {
  const double nan = std::nan(""), inf = std::numeric_limits<double>::infinity();
  std::vector<double> v = random_values(length, 0, 3, seed, true);
  auto at = [&](int64_t percent, double value, int64_t shift = 0) {
    const int64_t i = length * percent / 100 + shift;
    if (i < length) v[static_cast<size_t>(i)] = value;
  };
  switch (kind) {
    case 0:
      at(45, 3);
      at(45, 3, 33);
      at(85, 3);
      at(30, -1);
      at(70, -1);
      break;
    case 1:
      at(10, 3);
      at(70, nan);
      at(90, nan);
      break;
    case 2:
      at(40, inf);
      at(80, inf);
      at(60, -inf);
      break;
    case 3:
      at(50, inf);
      at(75, inf);
      break;
    case 4:
      std::fill(v.begin(), v.end(), -inf);
      break;
    default:
      v.back() = -inf;
      break;
  }
  return v;
}

// NaN, ties and infinities through each of the GPU's reduction layouts (cuda/reduce.cu's
// plan; the thresholds hold on any GPU): a warp per row (rows <= 2048), a block per row
// (<= 4096: no split), a block per row split across blocks with the second pass merging
// them, the whole tensor split likewise, a thread per output column (<= 256 rows: no
// split), and columns split with the second pass. Values are integers or ±Inf/NaN, so
// both devices' float32 sums are exact whatever their order: sum, max, min, argmax and
// argmin must give the CPU's bits (NaN: a NaN); the mean (sum * 1/R) within 1e-6 relative
// (the CPU rounds 1/R to the dtype and multiplies in it, the GPU in double).
TEST(CudaBackend, ReduceNanTiesAndInfinitiesInEveryLayout) {
  REQUIRE_GPU();
  struct Layout {
    const char* name;
    int64_t kept, length;
    bool inner;  // reduced dim last (rows) or first (columns)
  };
  const Layout layouts[] = {{"warp per row", 64, 1000, true},
                            {"block per row", 40, 3000, true},
                            {"block per row, split + finish", 3, 10000, true},
                            {"whole tensor, split + finish", 1, 300000, true},
                            {"thread per column", 300, 200, false},
                            {"columns, split + finish", 3, 20000, false}};
  for (DType dtype : {DType::Float32, DType::Float64}) {
    for (const Layout& layout : layouts) {
      const int64_t K = layout.kept, R = layout.length;
      // Enough passes that every kind meets every layout (kinds rotate over the outputs).
      for (int64_t first_kind = 0; first_kind < kSliceKinds; first_kind += K) {
        std::vector<double> values(static_cast<size_t>(K * R));
        for (int64_t k = 0; k < K; ++k) {
          const auto slice =
              reduction_slice(static_cast<int>((first_kind + k) % kSliceKinds), R, static_cast<uint64_t>(300 + k));
          for (int64_t r = 0; r < R; ++r)
            values[static_cast<size_t>(layout.inner ? k * R + r : r * K + k)] = slice[static_cast<size_t>(r)];
        }
        Twin in(dtype, values);
        const std::vector<int64_t> in_shape = K == 1         ? std::vector<int64_t>{R}
                                              : layout.inner ? std::vector<int64_t>{K, R}
                                                             : std::vector<int64_t>{R, K};
        const std::vector<int64_t> out_shape = K == 1         ? std::vector<int64_t>{1}
                                               : layout.inner ? std::vector<int64_t>{K, 1}
                                                              : std::vector<int64_t>{1, K};
        const std::string where_ = join({" ", layout.name, " [", std::to_string(in_shape[0]),
                                         in_shape.size() > 1 ? join({", ", std::to_string(in_shape[1])}) : "",
                                         "], slice kinds from ", std::to_string(first_kind)});
        const std::pair<ReduceOp, const char*> ops[] = {{ReduceOp::Sum, "sum"},
                                                        {ReduceOp::Max, "max"},
                                                        {ReduceOp::Min, "min"},
                                                        {ReduceOp::ArgMax, "argmax"},
                                                        {ReduceOp::ArgMin, "argmin"}};
        for (const auto& [op, name] : ops)
          expect_same_bits(*reduce_on_both(op, in, in_shape, {}, out_shape, 1.0), 0, join({name, where_}));
        const double tol = dtype == DType::Float32 ? 1e-6 : 1e-15;
        reduce_on_both(ReduceOp::Sum, in, in_shape, {}, out_shape, 1.0 / static_cast<double>(R))
            ->expect_match({tol, 0}, join({"mean", where_}));
      }
    }
  }
}

TEST(CudaBackend, SumOfSquares) {
  REQUIRE_GPU();
  for (DType dtype : {DType::Float32, DType::Float64}) {
    Twin x(dtype, random_values(100003, -2, 2, 81));
    const double c = cpu().sum_of_squares(x.cpu_view({100003}));
    const double g = gpu().sum_of_squares(x.gpu_view({100003}));
    EXPECT_NEAR(g, c, 1e-10 * c) << dtype_label(dtype);
    // against a host sum in long double
    long double expected = 0;
    for (double v : x.cpu_values()) expected += static_cast<long double>(v) * v;
    EXPECT_NEAR(g, static_cast<double>(expected), 1e-6 * static_cast<double>(expected)) << dtype_label(dtype);
    // The seam takes contiguous input only (callers make it so), on every device.
    EXPECT_ERROR(gpu().sum_of_squares(x.gpu_view({33334}, {3})), "sum_of_squares: input [33334] must be contiguous");
  }
}

void gemm_both(bool trans_a, bool trans_b, int64_t batch, DType dtype, uint64_t seed) {
  const int64_t m = 17, n = 23, k = 31, pad = 3;
  const int64_t a_rows = trans_a ? k : m, a_cols = trans_a ? m : k;
  const int64_t b_rows = trans_b ? n : k, b_cols = trans_b ? k : n;
  const int64_t lda = a_cols + pad, ldb = b_cols + pad, ldc = n + pad;
  const int64_t stride_a = a_rows * lda, stride_b = b_rows * ldb, stride_c = m * ldc;
  Twin a(dtype, random_values(batch * stride_a, -1, 1, seed));
  Twin b(dtype, random_values(batch * stride_b, -1, 1, seed + 1));
  Twin c(dtype, random_values(batch * stride_c, -1, 1, seed + 2));
  // The same GEMM over the host or the device copies: C = 1.5 op(A) op(B) + 0.5 C.
  auto args_for = [&](bool on_gpu) {
    auto data = [on_gpu](Twin& t) { return on_gpu ? t.gpu_view({1}).data : t.cpu_view({1}).data; };
    return GemmArgs{.trans_a = trans_a, .trans_b = trans_b, .m = m, .n = n, .k = k, .batch = batch,
                    .a = data(a), .lda = lda, .stride_a = stride_a, .b = data(b), .ldb = ldb, .stride_b = stride_b,
                    .c = data(c), .ldc = ldc, .stride_c = stride_c, .alpha = 1.5, .beta = 0.5, .dtype = dtype};
  };
  cpu().gemm(args_for(false));
  gpu().gemm(args_for(true));
  const Tolerance tol = dtype == DType::Float32 ? Tolerance{1e-4, 1e-4} : Tolerance{1e-10, 1e-12};
  c.expect_match(tol, join({"gemm", trans_a ? " Aᵀ" : " A", trans_b ? " Bᵀ" : " B", " batch ", std::to_string(batch),
                            " ", dtype_label(dtype)}));
}

TEST(CudaBackend, GemmAllTransposesAndBatched) {
  REQUIRE_GPU();
  uint64_t seed = 91;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      gemm_both(ta, tb, 1, DType::Float32, seed += 3);
      gemm_both(ta, tb, 3, DType::Float32, seed += 3);
    }
  gemm_both(false, true, 1, DType::Float64, seed += 3);
  gemm_both(true, false, 2, DType::Float64, seed += 3);
}

TEST(CudaBackend, GemmWithEmptyInnerDimensionScalesC) {
  REQUIRE_GPU();
  Twin c(DType::Float32, random_values(6, -1, 1, 99));
  const auto before = c.gpu_values();
  GemmArgs g;
  g.m = 2;
  g.n = 3;
  g.k = 0;
  g.c = c.gpu_view({6}).data;
  g.ldc = 3;
  g.lda = g.ldb = 1;
  g.beta = 0.5;
  gpu().gemm(g);
  const auto after = c.gpu_values();
  for (size_t i = 0; i < 6; ++i) EXPECT_FLOAT_EQ(after[i], 0.5 * before[i]);
  g.dtype = DType::Int64;
  EXPECT_ERROR(gpu().gemm(g), "matmul: int64 tensors are not supported");
}

// softmax (or log_softmax) of x (rows, cols) and its backward on both devices, compared
// within the reduction tolerance (NaN pattern and infinities exactly); returns y.
std::unique_ptr<Twin> softmax_on_both(const std::vector<double>& x_values, int64_t rows, int64_t cols, bool log,
                                      DType dtype, const std::string& label) {
  const int64_t n = rows * cols;
  Twin x(dtype, x_values);
  auto y = std::make_unique<Twin>(dtype, std::vector<double>(static_cast<size_t>(n), 0.0));
  cpu().softmax(x.cpu_view({rows, cols}), y->cpu_view({rows, cols}), log);
  gpu().softmax(x.gpu_view({rows, cols}), y->gpu_view({rows, cols}), log);
  y->expect_match(reduction_tolerance(dtype), label);
  Twin grad_y(dtype, random_values(n, -1, 1, 102));
  Twin grad_x(dtype, std::vector<double>(static_cast<size_t>(n), 0.0));
  cpu().softmax_backward(y->cpu_view({rows, cols}), grad_y.cpu_view({rows, cols}), grad_x.cpu_view({rows, cols}), log);
  gpu().softmax_backward(y->gpu_view({rows, cols}), grad_y.gpu_view({rows, cols}), grad_x.gpu_view({rows, cols}), log);
  grad_x.expect_match(reduction_tolerance(dtype), join({label, " backward"}));
  return y;
}

void softmax_both(int64_t rows, int64_t cols, bool log, DType dtype) {
  const std::string label = join(
      {log ? "log_softmax " : "softmax ", std::to_string(rows), "x", std::to_string(cols), " ", dtype_label(dtype)});
  softmax_on_both(random_values(rows * cols, -6, 6, 101), rows, cols, log, dtype, label);
}

TEST(CudaBackend, SoftmaxAndLogSoftmaxWithBackward) {
  REQUIRE_GPU();
  for (bool log : {false, true}) {
    softmax_both(5, 37, log, DType::Float32);    // a warp per row
    softmax_both(3, 2000, log, DType::Float32);  // a block per row
    softmax_both(70, 10, log, DType::Float64);
  }
}

// Rows of C logits of one kind each, for T4: 0 finite; 1 one NaN; 2 all -Inf; 3 one +Inf;
// 4 -Inf at the first, middle and last column (the rest finite); 5 two +Inf. Row r has
// kind kinds[r % kinds.size()]; the NaN and +Inf columns move with the row.
std::vector<double> special_rows(const std::vector<int>& kinds, int64_t rows, int64_t C, uint64_t seed) {
  const double nan = std::nan(""), inf = std::numeric_limits<double>::infinity();
  std::vector<double> v = random_values(rows * C, -6, 6, seed);
  for (int64_t r = 0; r < rows; ++r) {
    double* row = v.data() + r * C;
    switch (kinds[static_cast<size_t>(r) % kinds.size()]) {
      case 1:
        row[(r * 7) % C] = nan;
        break;
      case 2:
        std::fill(row, row + C, -inf);
        break;
      case 3:
        row[(r * 5) % C] = inf;
        break;
      case 4:
        row[0] = row[C / 2] = row[C - 1] = -inf;
        break;
      case 5:
        row[(r * 3) % C] = row[(r * 3 + 1) % C] = inf;
        break;
      default:
        break;
    }
  }
  return v;
}

// softmax and log_softmax (with backward) of rows holding NaN, all -Inf, +Inf or some
// -Inf, in the warp-per-row layout (C <= 1024) and the block-per-row one: the same NaN
// pattern and the same infinities on both devices (a row with NaN, +Inf or only -Inf is
// NaN throughout on both: the CPU's max skips NaN but exp(NaN - m) brings it back), other
// values within the reduction tolerance.
TEST(CudaBackend, SoftmaxRowsWithNanAndInfinities) {
  REQUIRE_GPU();
  const std::vector<int> kinds = {0, 1, 2, 3, 4, 5};
  for (const auto& [C, dtype] : {std::pair<int64_t, DType>{37, DType::Float32},
                                 {2000, DType::Float32},
                                 {37, DType::Float64},
                                 {1500, DType::Float64}}) {
    const int64_t rows = 12;
    for (bool log : {false, true}) {
      const std::string label = join({log ? "log_softmax " : "softmax ", std::to_string(rows), "x", std::to_string(C),
                                      C <= 1024 ? " (warp per row)" : " (block per row)"});
      const auto y = softmax_on_both(special_rows(kinds, rows, C, 401), rows, C, log, dtype,
                                     join({label, " ", dtype_label(dtype)}));
      // The NaN rows are whole rows on the CPU: the pattern the GPU was held to above.
      const auto values = y->cpu_values();
      for (int64_t r = 0; r < rows; ++r) {
        const int kind = kinds[static_cast<size_t>(r) % kinds.size()];
        const bool nan_row = kind == 1 || kind == 2 || kind == 3 || kind == 5;
        for (int64_t c = 0; c < C; ++c)
          ASSERT_EQ(std::isnan(values[static_cast<size_t>(r * C + c)]), nan_row)
              << label << " row " << r << " col " << c;
      }
    }
  }
}

// cross_entropy of logits (rows, classes) and targets, forward (probs, per-row loss) and
// backward on both devices, compared within the reduction tolerance; returns the loss.
std::unique_ptr<Twin> cross_entropy_on_both(const std::vector<double>& logit_values, const std::vector<double>& targets,
                                            int64_t classes, double smoothing, DType dtype, const std::string& label) {
  const int64_t rows = static_cast<int64_t>(targets.size());
  Twin logits(dtype, logit_values);
  Twin target(DType::Int64, targets);
  Twin probs(dtype, std::vector<double>(static_cast<size_t>(rows * classes), 0.0));
  auto loss = std::make_unique<Twin>(dtype, std::vector<double>(static_cast<size_t>(rows), 0.0));
  cpu().cross_entropy(logits.cpu_view({rows, classes}), target.cpu_view({rows}), smoothing,
                      probs.cpu_view({rows, classes}), loss->cpu_view({rows}));
  gpu().cross_entropy(logits.gpu_view({rows, classes}), target.gpu_view({rows}), smoothing,
                      probs.gpu_view({rows, classes}), loss->gpu_view({rows}));
  probs.expect_match(reduction_tolerance(dtype), join({label, " probs"}));
  loss->expect_match(reduction_tolerance(dtype), join({label, " loss"}));
  Twin grad(dtype, std::vector<double>(static_cast<size_t>(rows * classes), 0.0));
  const double scale = 1.0 / static_cast<double>(rows);
  cpu().cross_entropy_backward(probs.cpu_view({rows, classes}), target.cpu_view({rows}), smoothing, scale,
                               grad.cpu_view({rows, classes}));
  gpu().cross_entropy_backward(probs.gpu_view({rows, classes}), target.gpu_view({rows}), smoothing, scale,
                               grad.gpu_view({rows, classes}));
  grad.expect_match(reduction_tolerance(dtype), join({label, " backward"}));
  return loss;
}

void cross_entropy_both(int64_t rows, int64_t classes, double smoothing, DType dtype) {
  const std::string label = join({"cross_entropy ", std::to_string(rows), "x", std::to_string(classes), " smoothing ",
                                  std::to_string(smoothing), " ", dtype_label(dtype)});
  cross_entropy_on_both(random_values(rows * classes, -4, 4, 111),
                        random_values(rows, 0, static_cast<double>(classes), 112, true), classes, smoothing, dtype,
                        label);
}

TEST(CudaBackend, CrossEntropyForwardBackward) {
  REQUIRE_GPU();
  for (double smoothing : {0.0, 0.1}) {
    cross_entropy_both(6, 10, smoothing, DType::Float32);
    cross_entropy_both(64, 10, smoothing, DType::Float64);
    cross_entropy_both(4, 1500, smoothing, DType::Float32);  // a block per row
  }
}

// cross_entropy forward and backward on the same rows. Label smoothing 0.1 takes every
// kind: a row with some -Inf has loss +Inf on both (as PyTorch: the smoothing term's mean
// of the logits is -Inf), the -Inf target included (row 4's target is its -Inf column 0).
// Smoothing 0 leaves out the rows holding -Inf (the CPU's 0·Inf there is the lead's fix,
// not this test's).
TEST(CudaBackend, CrossEntropyRowsWithNanAndInfinities) {
  REQUIRE_GPU();
  for (const auto& [C, dtype] :
       {std::pair<int64_t, DType>{37, DType::Float32}, {2000, DType::Float32}, {37, DType::Float64}}) {
    for (double smoothing : {0.1, 0.0}) {
      const std::vector<int> kinds = {0, 1, 2, 3, 4, 5};
      const int64_t rows = 2 * static_cast<int64_t>(kinds.size());
      const std::string label =
          join({"cross_entropy ", std::to_string(rows), "x", std::to_string(C), " smoothing ",
                std::to_string(smoothing), C <= 1024 ? " (warp per row) " : " (block per row) ", dtype_label(dtype)});
      std::vector<double> targets = random_values(rows, 0, static_cast<double>(C), 412, true);
      targets[4] = 0;  // row 4 (kind 4): its -Inf column
      const auto loss = cross_entropy_on_both(special_rows(kinds, rows, C, 411), targets, C, smoothing, dtype, label);
      // Rows 4 and 10 hold some -Inf: +Inf with smoothing (it puts s/C there); without it only
      // a -Inf target class costs +Inf (row 4), a masked other class nothing.
      EXPECT_EQ(loss->gpu_values()[4], std::numeric_limits<double>::infinity()) << label;
      if (smoothing > 0) {
        EXPECT_EQ(loss->gpu_values()[10], std::numeric_limits<double>::infinity()) << label;
      }
    }
  }
}

TEST(CudaBackend, CrossEntropyNamesTheBadRow) {
  REQUIRE_GPU();
  Twin logits(DType::Float32, random_values(6 * 10, -1, 1, 121));
  Twin target(DType::Int64, {1, 2, 3, 12, 4, 15});
  Twin probs(DType::Float32, std::vector<double>(60, 0.0));
  Twin loss(DType::Float32, std::vector<double>(6, 0.0));
  const std::string message = "cross_entropy: target 12 out of range for 10 classes (row 3)";
  EXPECT_ERROR(cpu().cross_entropy(logits.cpu_view({6, 10}), target.cpu_view({6}), 0.0, probs.cpu_view({6, 10}),
                                        loss.cpu_view({6})),
                    message);
  // On the GPU the error comes at the next host wait (docs/gpu.md, "Bad indices on a GPU").
  EXPECT_ERROR((gpu().cross_entropy(logits.gpu_view({6, 10}), target.gpu_view({6}), 0.0, probs.gpu_view({6, 10}),
                                    loss.gpu_view({6})),
                gpu().synchronize()),
               message);
  Twin negative(DType::Int64, {-1, 2, 3, 4, 5, 6});
  EXPECT_ERROR((gpu().cross_entropy(logits.gpu_view({6, 10}), negative.gpu_view({6}), 0.0, probs.gpu_view({6, 10}),
                                    loss.gpu_view({6})),
                gpu().synchronize()),
               "target -1 out of range for 10 classes (row 0)");
  // The device is still usable afterwards.
  Twin good(DType::Int64, {1, 2, 3, 4, 5, 6});
  EXPECT_NO_THROW((gpu().cross_entropy(logits.gpu_view({6, 10}), good.gpu_view({6}), 0.0, probs.gpu_view({6, 10}),
                                       loss.gpu_view({6})),
                   gpu().synchronize()));
}

// Every dtype (bfloat16/float16 gathered as 16-bit words: the bits exactly), a strided
// index, and a 0-d index (one slice, index stride 0 on the GPU).
TEST(CudaBackend, IndexSelectAlongEachDim) {
  REQUIRE_GPU();
  for (DType dtype : kAllDtypes) {
    Twin x(dtype, random_values(5 * 4 * 3, -9, 9, 131, true));
    Twin index(DType::Int64, {3, 0, 0, 2, 1, 4});
    if (dtype_size(dtype) == 2) {  // NaN payloads of either sign, ±Inf, -0, subnormals: moved as bits
      const uint16_t patterns[] = {0x7fc1, 0xffff, 0x7c00, 0xfc00, 0x8000, 0x0001, 0x7e01, 0x3c00};
      std::vector<uint16_t> bits(5 * 4 * 3);
      for (size_t i = 0; i < bits.size(); ++i) bits[i] = patterns[i % 8] ^ static_cast<uint16_t>((i << 3) & 0x70);
      Twin raw(dtype, static_cast<int64_t>(bits.size()), bits.data());
      Twin last_dim_index(DType::Int64, {2, 0, 0});
      Twin out(dtype, std::vector<double>(5 * 4 * 3, 0.0));
      cpu().index_select(raw.cpu_view({5, 4, 3}), 2, last_dim_index.cpu_view({3}), out.cpu_view({5, 4, 3}));
      gpu().index_select(raw.gpu_view({5, 4, 3}), 2, last_dim_index.gpu_view({3}), out.gpu_view({5, 4, 3}));
      expect_identical_bits(out, "index_select dim 2 of 16-bit patterns");
      EXPECT_EQ(out.cpu_bits()[0], bits[2]) << "the CPU gathered x[0, 0, 2] first";
    }
    {
      Twin zero_d(DType::Int64, {2});
      Twin out(dtype, std::vector<double>(5 * 3, 0.0));
      cpu().index_select(x.cpu_view({5, 4, 3}), 1, zero_d.cpu_view({}), out.cpu_view({5, 1, 3}));
      gpu().index_select(x.gpu_view({5, 4, 3}), 1, zero_d.gpu_view({}), out.gpu_view({5, 1, 3}));
      expect_same_bits(out, 0, "index_select dim 1, 0-d index");
      EXPECT_EQ(out.gpu_values()[0], x.cpu_values()[2 * 3]) << "element (0, 0, 0) is x[0, 2, 0] " << dtype_label(dtype);
    }
    {
      Twin out(dtype, std::vector<double>(5 * 4 * 3, 0.0));
      cpu().index_select(x.cpu_view({5, 4, 3}), 1, index.cpu_view({4}), out.cpu_view({5, 4, 3}));
      gpu().index_select(x.gpu_view({5, 4, 3}), 1, index.gpu_view({4}), out.gpu_view({5, 4, 3}));
      out.expect_match({0, 0}, join({"index_select dim 1 ", dtype_label(dtype)}));
    }
    {
      Twin out(dtype, std::vector<double>(3 * 4 * 3, 0.0));
      // index read with stride 2: positions 0, 2, 4 -> 3, 0, 1
      cpu().index_select(x.cpu_view({5, 4, 3}), 0, index.cpu_view({3}, {2}), out.cpu_view({3, 4, 3}));
      gpu().index_select(x.gpu_view({5, 4, 3}), 0, index.gpu_view({3}, {2}), out.gpu_view({3, 4, 3}));
      out.expect_match({0, 0}, join({"index_select dim 0, strided index ", dtype_label(dtype)}));
    }
  }
  Twin x(DType::Float32, random_values(5 * 4, -1, 1, 132));
  Twin bad(DType::Int64, {0, 7, 1});
  Twin out(DType::Float32, std::vector<double>(5 * 3, 0.0));
  EXPECT_ERROR(
      (gpu().index_select(x.gpu_view({5, 4}), 1, bad.gpu_view({3}), out.gpu_view({5, 3})), gpu().synchronize()),
      "index 7 out of range", "(position 1)");
}

// bfloat16/float16 accumulate in a float32 copy on both devices (core's Float32Scratch)
// and store rounded once: with sixteenths in [-3, 3) every sum is exact in float32 and
// in the 16-bit dtype, so the GPU's atomics, in any order, give the CPU's bits.
TEST(CudaBackend, IndexAddAccumulatesRepeatedIndices) {
  REQUIRE_GPU();
  for (DType dtype : kAllDtypes) {
    const bool ints = dtype == DType::Int64;
    const bool sixteenths = dtype_size(dtype) == 2;
    auto values = [&](int64_t n, uint64_t seed) {  // in [-3, 3)
      auto v = random_values(n, -3, 3, seed, ints);
      if (sixteenths)
        for (double& x : v) x = std::floor(x * 16) / 16;
      return v;
    };
    {
      Twin out(dtype, values(5 * 6, 146));
      Twin zero_d(DType::Int64, {3});
      Twin src(dtype, values(6, 147));
      cpu().index_add(out.cpu_view({5, 6}), 0, zero_d.cpu_view({}), src.cpu_view({1, 6}));
      gpu().index_add(out.gpu_view({5, 6}), 0, zero_d.gpu_view({}), src.gpu_view({1, 6}));
      expect_same_bits(out, 0, "index_add dim 0, 0-d index");
    }
    {
      Twin out(dtype, values(5 * 6, 141));
      Twin index(DType::Int64, {1, 4, 1});
      Twin src(dtype, values(3 * 6, 142));
      cpu().index_add(out.cpu_view({5, 6}), 0, index.cpu_view({3}), src.cpu_view({3, 6}));
      gpu().index_add(out.gpu_view({5, 6}), 0, index.gpu_view({3}), src.gpu_view({3, 6}));
      out.expect_match(elementwise_tolerance(dtype), join({"index_add dim 0 ", dtype_label(dtype)}));
    }
    {
      Twin out(dtype, values(4 * 5, 143));
      Twin index(DType::Int64, {0, 2, 2, 4, 0, 1});
      Twin src(dtype, values(4 * 6, 144));
      cpu().index_add(out.cpu_view({4, 5}), 1, index.cpu_view({6}), src.cpu_view({4, 6}));
      gpu().index_add(out.gpu_view({4, 5}), 1, index.gpu_view({6}), src.gpu_view({4, 6}));
      out.expect_match(elementwise_tolerance(dtype), join({"index_add dim 1 ", dtype_label(dtype)}));
    }
  }
  Twin out(DType::Float32, std::vector<double>(5 * 6, 0.0));
  Twin bad(DType::Int64, {1, -2});
  Twin src(DType::Float32, random_values(2 * 6, -1, 1, 145));
  EXPECT_ERROR((gpu().index_add(out.gpu_view({5, 6}), 0, bad.gpu_view({2}), src.gpu_view({2, 6})), gpu().synchronize()),
               "index -2 out of range");
}

TEST(CudaBackend, SgdUpdateMatchesCpu) {
  REQUIRE_GPU();
  struct Config {
    const char* name;
    SgdParams params;
  };
  std::vector<Config> configs(5);
  configs[0] = {"plain", {}};
  configs[0].params.lr = 0.1;
  configs[1] = {"weight decay", {}};
  configs[1].params.lr = 0.1;
  configs[1].params.weight_decay = 0.01;
  configs[2] = {"momentum", {}};
  configs[2].params.momentum = 0.9;
  configs[3] = {"momentum + dampening + weight decay", {}};
  configs[3].params.momentum = 0.9;
  configs[3].params.dampening = 0.1;
  configs[3].params.weight_decay = 0.001;
  configs[4] = {"nesterov", {}};
  configs[4].params.momentum = 0.9;
  configs[4].params.nesterov = true;
  for (const auto& config : configs) {
    const int64_t n = 1000;
    Twin param(DType::Float32, random_values(n, -1, 1, 151));
    Twin buffer(DType::Float32, std::vector<double>(n, 0.0));
    SgdParams p = config.params;
    for (int step = 0; step < 3; ++step) {
      Twin grad(DType::Float32, random_values(n, -1, 1, 152 + static_cast<uint64_t>(step)));
      p.first_step = step == 0;
      cpu().sgd_update(param.cpu_view({n}), grad.cpu_view({n}), buffer.cpu_view({n}), p);
      gpu().sgd_update(param.gpu_view({n}), grad.gpu_view({n}), buffer.gpu_view({n}), p);
    }
    // The CPU's values exactly: both devices round every op of the rule as written (no contraction).
    param.expect_match({0, 0}, join({"sgd ", config.name, " param"}));
    buffer.expect_match({0, 0}, join({"sgd ", config.name, " buffer"}));
  }
}

TEST(CudaBackend, AdamAndAdamWUpdatesMatchCpu) {
  REQUIRE_GPU();
  for (int variant = 0; variant < 3; ++variant) {
    AdamParams p;
    p.lr = 0.01;
    p.weight_decay = variant == 0 ? 0.0 : 0.01;
    p.decoupled = variant == 2;
    const int64_t n = 1000;
    Twin param(DType::Float32, random_values(n, -1, 1, 161));
    Twin m(DType::Float32, std::vector<double>(n, 0.0));
    Twin v(DType::Float32, std::vector<double>(n, 0.0));
    for (int step = 1; step <= 3; ++step) {
      Twin grad(DType::Float32, random_values(n, -1, 1, 162 + static_cast<uint64_t>(step)));
      p.step = step;
      cpu().adam_update(param.cpu_view({n}), grad.cpu_view({n}), m.cpu_view({n}), v.cpu_view({n}), p);
      gpu().adam_update(param.gpu_view({n}), grad.gpu_view({n}), m.gpu_view({n}), v.gpu_view({n}), p);
    }
    const std::string label = variant == 0 ? "adam" : variant == 1 ? "adam + weight decay" : "adamw";
    // The CPU's values exactly: both devices round every op as written (no contraction), and
    // IEEE sqrt and division are correctly rounded on both.
    param.expect_match({0, 0}, join({label, " param"}));
    m.expect_match({0, 0}, join({label, " exp_avg"}));
    v.expect_match({0, 0}, join({label, " exp_avg_sq"}));
  }
}

// Uniform and dropout draws come from one counter-based stream on both devices
// (core/random_stream.h): the GPU must give the CPU's bits, contiguous or strided, in every
// floating dtype, and advance the offset alike.
TEST(CudaBackend, UniformDrawsTheCpuBits) {
  REQUIRE_GPU();
  for (DType dtype : {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16}) {
    const int64_t n = 100001;  // odd, and more than one grid's worth of threads on small GPUs
    Twin out(dtype, std::vector<double>(n, -9.0));
    RandomState cpu_state{42, 5}, gpu_state{42, 5};
    cpu().uniform(out.cpu_view({n}), -2.0, 3.0, cpu_state);
    gpu().uniform(out.gpu_view({n}), -2.0, 3.0, gpu_state);
    EXPECT_EQ(out.gpu_values(), out.cpu_values()) << dtype_label(dtype);
    EXPECT_EQ(gpu_state.offset, cpu_state.offset);
    EXPECT_EQ(cpu_state.offset, 5u + static_cast<uint64_t>(n));
    double mean = 0;
    for (double v : out.gpu_values()) {
      ASSERT_GE(v, -2.0);
      ASSERT_LE(v, 3.0);  // a 16-bit rounding may reach the bound
      mean += v / static_cast<double>(n);
    }
    EXPECT_NEAR(mean, 0.5, 0.03) << dtype_label(dtype);
    // The next draw differs; the same state again gives the same bits.
    const auto first = out.gpu_values();
    gpu().uniform(out.gpu_view({n}), -2.0, 3.0, gpu_state);
    EXPECT_NE(out.gpu_values(), first);
    RandomState again{42, 5};
    gpu().uniform(out.gpu_view({n}), -2.0, 3.0, again);
    EXPECT_EQ(out.gpu_values(), first);
  }
  // A transposed (5, 7) view of a 7x5 buffer, and every other element of a row: element i
  // in row-major order of the view takes counter offset + i on both devices.
  Twin grid(DType::Float32, std::vector<double>(35, -7.0));
  RandomState a{7, 0}, b{7, 0};
  cpu().uniform(grid.cpu_view({5, 7}, {1, 5}), 0.0, 1.0, a);
  gpu().uniform(grid.gpu_view({5, 7}, {1, 5}), 0.0, 1.0, b);
  EXPECT_EQ(grid.gpu_values(), grid.cpu_values());
  Twin every_other(DType::Float64, std::vector<double>(2 * 1000, -7.0));
  cpu().uniform(every_other.cpu_view({1000}, {2}), 0.0, 1.0, a);
  gpu().uniform(every_other.gpu_view({1000}, {2}), 0.0, 1.0, b);
  const auto values = every_other.gpu_values();
  EXPECT_EQ(values, every_other.cpu_values());
  for (size_t i = 1; i < values.size(); i += 2) ASSERT_EQ(values[i], -7.0);  // untouched
}

TEST(CudaBackend, NormalHasTheRightMomentsForOddSizes) {
  REQUIRE_GPU();
  for (DType dtype : {DType::Float32, DType::Float64}) {
    const int64_t n = 200001;
    Twin out(dtype, std::vector<double>(n, 0.0));
    RandomState state{3, 5};
    gpu().normal(out.gpu_view({n}), 1.0, 2.0, state);
    EXPECT_GE(state.offset, 5u + static_cast<uint64_t>(n));
    const auto values = out.gpu_values();
    double mean = 0, sq = 0;
    for (double v : values) mean += v / static_cast<double>(n);
    for (double v : values) sq += (v - mean) * (v - mean) / static_cast<double>(n);
    EXPECT_NEAR(mean, 1.0, 0.03) << dtype_label(dtype);
    EXPECT_NEAR(std::sqrt(sq), 2.0, 0.03) << dtype_label(dtype);
    RandomState again{3, 5};
    Twin repeat(dtype, std::vector<double>(n, 0.0));
    gpu().normal(repeat.gpu_view({n}), 1.0, 2.0, again);
    EXPECT_EQ(repeat.gpu_values(), values);
  }
}

TEST(CudaBackend, DropoutMaskDrawsTheCpuBits) {
  REQUIRE_GPU();
  for (DType dtype : {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16}) {
    const int64_t n = 100000;
    Twin mask(dtype, std::vector<double>(n, -1.0));
    RandomState cpu_state{11, 3}, gpu_state{11, 3};
    cpu().dropout_mask(mask.cpu_view({n}), 0.3, cpu_state);
    gpu().dropout_mask(mask.gpu_view({n}), 0.3, gpu_state);
    const auto values = mask.gpu_values();
    EXPECT_EQ(values, mask.cpu_values()) << dtype_label(dtype);
    EXPECT_EQ(gpu_state.offset, cpu_state.offset);
    Twin keep_value(dtype, {1.0 / 0.7});  // 1/(1-p), rounded to the dtype
    const double keep = keep_value.cpu_values()[0];
    int64_t kept = 0;
    for (double v : values) {
      ASSERT_TRUE(v == 0.0 || v == keep) << v;
      kept += v != 0.0;
    }
    EXPECT_NEAR(static_cast<double>(kept) / static_cast<double>(n), 0.7, 0.01) << dtype_label(dtype);
  }
  const int64_t n = 1000;
  Twin mask(DType::Float32, std::vector<double>(2 * n, -1.0));
  RandomState state{11, 0};
  gpu().dropout_mask(mask.gpu_view({n}, {2}), 0.0, state);  // strided: every other element
  auto values = mask.gpu_values();
  for (size_t i = 0; i < values.size(); ++i) ASSERT_EQ(values[i], i % 2 ? -1.0 : 1.0) << i;
  gpu().dropout_mask(mask.gpu_view({2 * n}), 1.0, state);
  for (double v : mask.gpu_values()) ASSERT_EQ(v, 0.0);
}

TEST(CudaAllocator, FreedBlocksAreReused) {
  REQUIRE_GPU();
  CachingAllocator& allocator = gpu().allocator();
  const std::vector<size_t> sizes = {1000, 4096, size_t{1} << 20, size_t{3} << 20};
  std::vector<void*> blocks;
  for (size_t s : sizes) blocks.push_back(allocator.allocate(s));
  for (size_t i = 0; i < sizes.size(); ++i) allocator.deallocate(blocks[i], sizes[i]);
  const MemoryStats before = allocator.stats();
  blocks.clear();
  for (size_t s : sizes) blocks.push_back(allocator.allocate(s));
  const MemoryStats after = allocator.stats();
  EXPECT_EQ(after.system_allocations, before.system_allocations);
  EXPECT_EQ(after.cache_hits, before.cache_hits + sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) allocator.deallocate(blocks[i], sizes[i]);
}

// A repeated sequence of ops that use temporaries (split reductions, dtype conversion,
// strided random draws) makes no new cudaMalloc the second time.
TEST(CudaAllocator, SteadyStateOpsMakeNoSystemAllocations) {
  REQUIRE_GPU();
  Twin x(DType::Float32, random_values(300000, 0, 1, 171));
  Twin total(DType::Float32, {0.0});
  Twin ones(DType::Float32, std::vector<double>(300000, 1.0));
  Twin out(DType::Float32, std::vector<double>(300000, 0.0));
  RandomState state{1, 0};
  auto step = [&] {
    gpu().reduce(ReduceOp::Sum, x.gpu_view({300000}), total.gpu_view({1}), 1.0);
    gpu().binary(BinaryOp::Add, x.gpu_view({300000}), ones.gpu_view({300000}), out.gpu_view({300000}));
    gpu().uniform(out.gpu_view({150000}, {2}), 0, 1, state);
    (void)gpu().sum_of_squares(x.gpu_view({100000}));
  };
  step();
  gpu().synchronize();
  const uint64_t before = gpu().allocator().stats().system_allocations;
  step();
  step();
  gpu().synchronize();
  EXPECT_EQ(gpu().allocator().stats().system_allocations, before);
}

TEST(CudaAllocator, OutOfMemoryIsAnErrorNamingTheSize) {
  REQUIRE_GPU();
  const size_t huge = size_t{1} << 50;  // 1 PiB
  EXPECT_ERROR(gpu().allocator().allocate(huge), "out of memory");
  EXPECT_ERROR(gpu().allocator().allocate(huge), std::to_string(huge));
  // Still usable.
  void* p = gpu().allocator().allocate(1024);
  EXPECT_NE(p, nullptr);
  gpu().allocator().deallocate(p, 1024);
}

// Under a memory limit that fits one 48 MiB block more, a block freed into the upload pool
// (cached there, pending behind a compute-stream fence) goes back to the system when the
// compute pool runs out, so the compute pool gets its memory; then the other way round.
// The limit stands in for a full GPU, which the other tests running beside this one need.
TEST(CudaAllocator, OutOfMemoryInOnePoolGivesBackTheOtherPoolsCache) {
  REQUIRE_GPU();
  CachingAllocator& compute = gpu().allocator();
  CachingAllocator& upload = gpu().upload_allocator();
  ASSERT_NE(&compute, &upload);
  const Device device = gpu().device();
  gpu().synchronize();
  empty_cache(device);
  constexpr size_t kBlock = size_t{48} << 20;  // its own bucket
  const uint64_t held = gpu().memory_limit().held();
  set_memory_limit(device, held + kBlock + kBlock / 2);
  void* block = upload.allocate(kBlock);
  upload.deallocate(block, kBlock);
  EXPECT_EQ(upload.stats().bytes_cached, kBlock);
  void* computed = nullptr;
  EXPECT_NO_THROW(computed = compute.allocate(kBlock)) << "the upload pool's cache went back";
  EXPECT_EQ(upload.stats().bytes_cached, 0u);
  compute.deallocate(computed, kBlock);
  EXPECT_NO_THROW(block = upload.allocate(kBlock)) << "the compute pool's cache went back";
  EXPECT_EQ(compute.stats().bytes_cached, 0u);
  EXPECT_ERROR((void)compute.allocate(kBlock), "the device's memory limit is");
  upload.deallocate(block, kBlock);
  set_memory_limit(device, 0);
  empty_cache(device);
  EXPECT_EQ(gpu().memory_limit().held(), held);
}

#if VGRAD_WITH_CUDA
// A point on GPU 0's compute stream (cuda::compute_stream): an event recorded there, and
// whether the stream has passed it. Only queries: nothing here waits for the device.
class StreamMark {
 public:
  StreamMark() {
    if (cudaEventCreateWithFlags(&event_, cudaEventDisableTiming) != cudaSuccess) vgrad::fail("test: no CUDA event");
  }
  ~StreamMark() { (void)cudaEventDestroy(event_); }
  StreamMark(const StreamMark&) = delete;
  StreamMark& operator=(const StreamMark&) = delete;
  void record() {
    if (cudaEventRecord(event_, static_cast<cudaStream_t>(cuda::compute_stream(0))) != cudaSuccess)
      vgrad::fail("test: cudaEventRecord failed");
  }
  bool passed() const {
    const cudaError_t status = cudaEventQuery(event_);
    if (status != cudaSuccess && status != cudaErrorNotReady) vgrad::fail("test: cudaEventQuery failed");
    if (status == cudaErrorNotReady) (void)cudaGetLastError();  // not an error: keep later launch checks clean
    return status == cudaSuccess;
  }

 private:
  cudaEvent_t event_ = nullptr;
};
#endif

// The upload pool (the copy stream's destinations): a block freed while the compute stream
// still has work queued on it stays pending, is not handed out again, and is once that work
// is done; no new cudaMalloc then. Whether the work was still queued at the second request
// is asked of the stream (a mark behind the block's last use, before its fence), not
// assumed: on one H200 host the queued matmuls were done by then. If the GPU was done, the
// test says so and is skipped. Nothing in the measured part may wait for the device: its
// kernels are loaded first (under CUDA's lazy module loading a kernel's first launch may wait
// for the whole device) and both pools hold the blocks it needs (a cudaMalloc may wait too).
TEST(CudaAllocator, TheUploadPoolReusesABlockOnlyAfterTheComputeStreamIsDoneWithIt) {
  REQUIRE_GPU();
#if VGRAD_WITH_CUDA
  CachingAllocator& pool = gpu().upload_allocator();
  ASSERT_NE(&pool, &gpu().allocator()) << "the copy stream has its own pool";
  const Device device = gpu().device();
  const Tensor slow = vgrad_test::uniform_tensor({4096, 4096}, 3).to(device);
  empty_cache(device);
  {
    Tensor warm = Tensor::empty({1024}, DType::Float32, device, pool);
    const Tensor spare = Tensor::empty({1024}, DType::Float32, device, pool);
    warm.fill_(1.0);
    const Tensor product = matmul(slow, slow), next = matmul(slow, slow);  // the loop's two live results
  }
  gpu().synchronize();
  const uint64_t cached_allocations = pool.stats().system_allocations;
  StreamMark last_use;
  void* first = nullptr;
  {
    Tensor block = Tensor::empty({1024}, DType::Float32, device, pool);
    first = block.data_ptr();
    Tensor load;
    for (int i = 0; i < 5; ++i) load = matmul(slow, slow);  // about 12 ms of queued work on an H200
    block.fill_(1.0);  // the block's last use, behind them
    last_use.record();
  }
  EXPECT_EQ(pool.stats().bytes_pending, 4096u) << "freed while its fill was still queued";
  EXPECT_EQ(pool.stats().bytes_in_use, 0u);
  void* second = nullptr;
  {
    const Tensor other = Tensor::empty({1024}, DType::Float32, device, pool);
    second = other.data_ptr();
  }
  const bool still_queued = !last_use.passed();  // then the block's fence, later on the stream, was not done either
  EXPECT_EQ(pool.stats().system_allocations, cached_allocations) << "both blocks came from the cache";
  if (still_queued) {
    EXPECT_NE(second, first) << "handed out again while the compute stream still used it";
  }
  gpu().synchronize();
  const uint64_t system_allocations = pool.stats().system_allocations;
  const Tensor again = Tensor::empty({1024}, DType::Float32, device, pool);
  EXPECT_TRUE(again.data_ptr() == first || again.data_ptr() == second);
  EXPECT_EQ(pool.stats().system_allocations, system_allocations);
  EXPECT_EQ(pool.stats().bytes_pending, 0u) << "both fences are done after synchronize()";
  EXPECT_EQ(pool.stats().bytes_in_use, 4096u);
  // Every pool, the optimizer tables' too: earlier tests in one process may have left tables cached.
  uint64_t in_pools = 0;
  for (CachingAllocator* each : gpu().pools()) in_pools += each->stats().bytes_in_use;
  EXPECT_EQ(memory_stats(device).bytes_in_use, in_pools) << "memory_stats adds the upload pool";
  EXPECT_GE(in_pools, gpu().allocator().stats().bytes_in_use + 4096u);
  if (!still_queued) {
    GTEST_SKIP() << "the GPU had finished the queued work before the second request: the no-reuse check could not be "
                    "made (a slow host, or launches that wait)";
  }
#endif
}

}  // namespace
