// The TF32 switches (core/backend.h): process-wide, read by cuda/gemm.cpp at every float32
// GEMM and by cuda/cudnn.cpp at every float32 convolution (where they are part of the plan
// key, so turning one back off never reuses a TF32 plan). Off by default.
#include <atomic>

#include "core/backend.h"

namespace vgrad::cuda {
namespace {

std::atomic<bool> tf32_matmul{false};
std::atomic<bool> tf32_conv{false};

}  // namespace

bool tf32_matmul_enabled() { return tf32_matmul.load(std::memory_order_relaxed); }
void set_tf32_matmul_enabled(bool on) { tf32_matmul.store(on, std::memory_order_relaxed); }
bool tf32_conv_enabled() { return tf32_conv.load(std::memory_order_relaxed); }
void set_tf32_conv_enabled(bool on) { tf32_conv.store(on, std::memory_order_relaxed); }

}  // namespace vgrad::cuda
