// Google Benchmark of the CPU elementwise primitives a training step runs (relu, its
// backward, add, mul) on 1M-element float32, bfloat16 and float16 tensors, through the
// backend into preallocated outputs. Names are OP/DTYPE/VARIANT: `vgrad` is the backend
// (16-bit: float32 blocks, strided.h's map1_blocked/map2_blocked), `per_element` the
// loop that converts one element at a time (strided.h's map1/map2 on the 16-bit types,
// what the backend ran before). bytes/s counts operands read and the output written.
// Baseline flags like the library's, so the loops are what a portable build runs.
//
//   ./build-cpu/bench/half_elementwise_bench --benchmark_min_time=0.2 --benchmark_repetitions=3
//       --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>

#include "core/backend.h"
#include "core/cpu/strided.h"
#include "core/creation.h"
#include "core/scalar_ops.h"
#include "core/tensor.h"

using namespace vgrad;

namespace {

constexpr int64_t kElements = int64_t(1) << 20;

enum class Variant { Vgrad, PerElement };

Tensor input(DType dtype, uint64_t seed) {
  Generator gen(seed);
  return uniform({kElements}, -2, 2, {.dtype = dtype}, &gen);
}

void report(benchmark::State& st, DType dtype, int operands) {
  st.SetItemsProcessed(st.iterations() * kElements);
  st.SetBytesProcessed(st.iterations() * kElements * int64_t(dtype_size(dtype)) * (operands + 1));
}

void unary(benchmark::State& st, UnaryOp op, DType dtype, Variant variant) {
  const Tensor x = input(dtype, 1);
  Tensor out = zeros({kElements}, {.dtype = dtype});
  for (auto _ : st) {
    if (variant == Variant::Vgrad) {
      cpu_backend().unary(op, x.view(), out.view());
    } else {
      scalar::visit_unary<float>(op, 0, 0, [&](const auto& f) {
        if (dtype == DType::Float16) cpu::map1<Float16, Float16>(x.view(), out.view(), f);
        else cpu::map1<BFloat16, BFloat16>(x.view(), out.view(), f);
      });
    }
    benchmark::ClobberMemory();
  }
  report(st, dtype, 1);
}

void binary(benchmark::State& st, BinaryOp op, DType dtype, Variant variant) {
  const Tensor a = input(dtype, 2), b = input(dtype, 3);
  Tensor out = zeros({kElements}, {.dtype = dtype});
  for (auto _ : st) {
    if (variant == Variant::Vgrad) {
      cpu_backend().binary(op, a.view(), b.view(), out.view());
    } else {
      scalar::visit_binary<float>(op, [&](const auto& f) {
        if (dtype == DType::Float16) cpu::map2<Float16>(a.view(), b.view(), out.view(), f);
        else cpu::map2<BFloat16>(a.view(), b.view(), out.view(), f);
      });
    }
    benchmark::ClobberMemory();
  }
  report(st, dtype, 2);
}

void register_all() {
  for (DType dtype : {DType::Float32, DType::BFloat16, DType::Float16}) {
    const std::string type = dtype_name(dtype);
    for (Variant variant : {Variant::Vgrad, Variant::PerElement}) {
      if (variant == Variant::PerElement && dtype == DType::Float32) continue;
      const std::string suffix = "/" + type + (variant == Variant::Vgrad ? "/vgrad" : "/per_element");
      benchmark::RegisterBenchmark(("relu" + suffix).c_str(), unary, UnaryOp::Relu, dtype, variant);
      benchmark::RegisterBenchmark(("relu_backward" + suffix).c_str(), binary, BinaryOp::ReluBackward, dtype, variant);
      benchmark::RegisterBenchmark(("add" + suffix).c_str(), binary, BinaryOp::Add, dtype, variant);
      benchmark::RegisterBenchmark(("mul" + suffix).c_str(), binary, BinaryOp::Mul, dtype, variant);
    }
  }
}

// Registered at start-up, as BENCHMARK() does, so Google Benchmark's own main runs them.
[[maybe_unused]] const bool kRegistered = (register_all(), true);

}  // namespace

BENCHMARK_MAIN();
