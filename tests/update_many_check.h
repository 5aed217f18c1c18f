// The check behind the many-parameter optimizer steps (Backend::sgd_update_many and
// adam_update_many) on any device: the same random parameters, gradients and states, stepped
// several times by the many form on one copy and by one sgd_update/adam_update per parameter
// on another, must end with the same bits in every parameter and state. Used by
// tests/core/test_backend.cpp (the CPU's default loop) and tests/cuda/test_optim_cuda.cpp
// (the one-launch kernel).
#pragma once
#include <cstdint>
#include <cstring>
#include <gtest/gtest.h>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/creation.h"
#include "support.h"

namespace vgrad_test {

// One tensor per parameter, of sizes[j] elements and dtypes[j % dtypes.size()].
struct ParamSet {
  std::vector<vgrad::Tensor> param, state0, state1;
};

// states: also two state tensors per parameter (gradients need none).
inline ParamSet random_params(const std::vector<int64_t>& sizes, const std::vector<vgrad::DType>& dtypes,
                              vgrad::Device device, uint64_t seed, bool states = true) {
  ParamSet set;
  for (size_t j = 0; j < sizes.size(); ++j) {
    const vgrad::DType dtype = dtypes[j % dtypes.size()];
    const auto make = [&](uint64_t salt, double low) {
      return uniform_tensor({sizes[j]}, seed * 7919 + j * 31 + salt, low, 1.0, dtype).to(device);
    };
    set.param.push_back(make(0, -1.0));
    if (!states) continue;
    set.state0.push_back(make(1, -1.0));
    set.state1.push_back(make(2, 0.0));  // exp_avg_sq stays >= 0
  }
  return set;
}

inline ParamSet clone_params(const ParamSet& set) {
  ParamSet copy;
  for (size_t j = 0; j < set.param.size(); ++j) {
    copy.param.push_back(set.param[j].clone());
    copy.state0.push_back(set.state0[j].clone());
    copy.state1.push_back(set.state1[j].clone());
  }
  return copy;
}

// The bytes of t (any device), for a bit-for-bit comparison.
inline std::vector<unsigned char> bytes_of(const vgrad::Tensor& t) {
  const vgrad::Tensor host = t.to(vgrad::kCPU).contiguous();
  const auto* data = static_cast<const unsigned char*>(host.view().data);
  return {data, data + host.numel() * static_cast<int64_t>(vgrad::dtype_size(host.dtype()))};
}

inline void expect_same_bits(const ParamSet& got, const ParamSet& want, bool check_state1, const std::string& what) {
  for (size_t j = 0; j < got.param.size(); ++j) {
    EXPECT_EQ(bytes_of(got.param[j]), bytes_of(want.param[j])) << what << ": parameter " << j;
    EXPECT_EQ(bytes_of(got.state0[j]), bytes_of(want.state0[j])) << what << ": first state of parameter " << j;
    if (check_state1) {
      EXPECT_EQ(bytes_of(got.state1[j]), bytes_of(want.state1[j])) << what << ": second state of parameter " << j;
    }
  }
}

// `steps` rounds of step(s, many, one, gradients) from the same random start: the many form
// on `many`, one call per parameter on `one`; then the bits must agree and have moved.
template <class Step> void expect_many_matches_one(vgrad::Device device, const std::vector<int64_t>& sizes,
                                                   const std::vector<vgrad::DType>& dtypes, uint64_t seed, int steps,
                                                   bool check_state1, Step step, const std::string& what) {
  const ParamSet start = random_params(sizes, dtypes, device, seed);
  ParamSet many = clone_params(start), one = clone_params(start);
  for (int s = 0; s < steps; ++s) step(s, many, one, random_params(sizes, dtypes, device, 100 * seed + s, false));
  expect_same_bits(many, one, check_state1, what);
  EXPECT_NE(bytes_of(many.param.back()), bytes_of(start.param.back())) << what << ": the steps changed nothing";
}

// SGD with fresh random gradients each step (momentum buffers start on the first step).
inline void expect_sgd_many_matches_one(vgrad::Device device, const std::vector<int64_t>& sizes,
                                        const std::vector<vgrad::DType>& dtypes, vgrad::SgdParams p, int steps,
                                        const std::string& what) {
  vgrad::Backend& backend = vgrad::backend_for(device);
  const auto buffer = [&](const vgrad::Tensor& state) { return p.momentum != 0 ? state.view() : vgrad::View{}; };
  const auto step = [&](int s, ParamSet& many, ParamSet& one, const ParamSet& grads) {
    p.first_step = s == 0;
    std::vector<vgrad::SgdUpdate> updates;
    for (size_t j = 0; j < sizes.size(); ++j) {
      updates.push_back({many.param[j].view(), grads.param[j].view(), buffer(many.state0[j]), p});
      backend.sgd_update(one.param[j].view(), grads.param[j].view(), buffer(one.state0[j]), p);
    }
    backend.sgd_update_many(updates);
  };
  expect_many_matches_one(device, sizes, dtypes, 11, steps, false, step, what);
}

// The same for Adam/AdamW; parameter j starts at step 1 + j % 3, so the step counts differ.
inline void expect_adam_many_matches_one(vgrad::Device device, const std::vector<int64_t>& sizes,
                                         const std::vector<vgrad::DType>& dtypes, vgrad::AdamParams p, int steps,
                                         const std::string& what) {
  vgrad::Backend& backend = vgrad::backend_for(device);
  const auto step = [&](int s, ParamSet& many, ParamSet& one, const ParamSet& grads) {
    std::vector<vgrad::AdamUpdate> updates;
    for (size_t j = 0; j < sizes.size(); ++j) {
      p.step = 1 + s + static_cast<int64_t>(j % 3);
      updates.push_back({many.param[j].view(), grads.param[j].view(), many.state0[j].view(), many.state1[j].view(), p});
      backend.adam_update(one.param[j].view(), grads.param[j].view(), one.state0[j].view(), one.state1[j].view(), p);
    }
    backend.adam_update_many(updates);
  };
  expect_many_matches_one(device, sizes, dtypes, 13, steps, true, step, what);
}

}  // namespace vgrad_test
