// The float32 SGD and Adam updates of core/cpu/optim.cpp, callable with a chosen instruction
// set and thread count (for their tests and benchmarks; the backend calls them with
// active_isa()).
#pragma once
#include <cstdint>

#include "core/cpu/isa.h"
#include "core/kernel_types.h"

namespace vgrad::cpu {

// w -= lr·(update), PyTorch's SGD rule (sgd_update_impl), over n contiguous floats;
// momentum_buffer is unused (may be null) without momentum. The same bits for every isa
// and thread count: each element's arithmetic is the same and done once.
void sgd_update_float32(Isa isa, int max_threads, float* w, const float* g, float* momentum_buffer, int64_t n,
                        const SgdParams& p);

// Adam/AdamW (core/optim_step.h's element rule) over n contiguous floats: the same bits
// for every isa and thread count.
void adam_update_float32(Isa isa, int max_threads, float* w, const float* g, float* exp_avg, float* exp_avg_sq,
                         int64_t n, const AdamParams& p);

}  // namespace vgrad::cpu
