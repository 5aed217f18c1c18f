// amp::GradScaler against PyTorch's sequence of scales on forced overflows
// (grad_scaler_reference.h, from scripts/reference/make_grad_scaler_reference.py):
// skipped steps leave the weights untouched, clean steps apply the unscaled gradient,
// unscale_ before clipping, the defaults (2^16, x2 after 2000 clean steps), misuse errors,
// state_dict/load_state_dict (PyTorch's keys; bad states refused).
#include <algorithm>
#include <cmath>
#include <gtest/gtest.h>
#include <limits>
#include <map>
#include <string>

#include "amp/grad_scaler.h"
#include "grad_scaler_loop.h"
#include "grad_scaler_reference.h"
#include "optim/optimizer.h"
#include "support.h"

namespace {

using namespace vgrad;
using vgrad_test::vals;

// One step of loss = Σ w·c: the gradient is c (times the scale); c holds `poison` (Inf or
// NaN) on overflow steps.
bool train_step(amp::GradScaler& scaler, optim::SGD& sgd, Tensor& w, bool overflow, double poison) {
  const Tensor c = tensor({1.0f, -2.0f, overflow ? float(poison) : 0.5f});
  scaler.scale(sum(w * c)).backward();
  const bool stepped = scaler.step(sgd);
  scaler.update();
  sgd.zero_grad();
  return stepped;
}

void run_reference(const ScalerStep* steps, size_t count, double init_scale, int64_t interval) {
  Tensor w = tensor({0.0f, 0.0f, 0.0f}).requires_grad_();
  optim::SGD sgd({w}, {.lr = 1.0});
  amp::GradScaler scaler({.init_scale = init_scale, .growth_interval = interval});
  for (size_t i = 0; i < count; ++i) {
    const std::vector<double> before = vals(w);
    const bool stepped = train_step(scaler, sgd, w, steps[i].overflow != 0, i % 2 ? NAN : INFINITY);
    EXPECT_EQ(stepped, steps[i].overflow == 0) << "step " << i;
    EXPECT_EQ(scaler.get_scale(), steps[i].scale) << "step " << i;
    EXPECT_EQ(scaler.growth_tracker(), steps[i].tracker) << "step " << i;
    const std::vector<double> after = vals(w);
    if (stepped) {  // the unscaled gradient exactly: w -= (1, -2, 0.5)
      EXPECT_EQ(after, (std::vector<double>{before[0] - 1, before[1] + 2, before[2] - 0.5})) << "step " << i;
    } else {
      EXPECT_EQ(after, before) << "skipped step " << i << " changed the weights";
    }
  }
}

TEST(GradScaler, MatchesPyTorchsScalesOnForcedOverflows) {
  run_reference(kInterval3, std::size(kInterval3), 65536.0, kInterval3GrowthInterval);
}

TEST(GradScaler, DefaultsArePyTorchs) {
  Tensor w = tensor({0.0f, 0.0f, 0.0f}).requires_grad_();
  optim::SGD sgd({w}, {.lr = 1e-6});
  amp::GradScaler scaler;
  EXPECT_EQ(scaler.get_scale(), 65536.0);
  for (int i = 0; i < 1999; ++i) train_step(scaler, sgd, w, false, 0);
  EXPECT_EQ(scaler.get_scale(), 65536.0);
  train_step(scaler, sgd, w, false, 0);
  EXPECT_EQ(scaler.get_scale(), 131072.0);  // grew after 2000 clean steps
  train_step(scaler, sgd, w, true, INFINITY);
  EXPECT_EQ(scaler.get_scale(), 65536.0);  // backoff 0.5
}

TEST(GradScaler, UnscaleBeforeClippingAndMisuseErrors) {
  Tensor w = tensor({0.0f, 0.0f}).requires_grad_();
  optim::SGD sgd({w}, {.lr = 1.0});
  amp::GradScaler scaler({.init_scale = 1024.0});
  scaler.scale(sum(w * tensor({3.0f, 4.0f}))).backward();
  EXPECT_EQ(vals(w.grad()), (std::vector<double>{3072.0, 4096.0}));
  scaler.unscale_(sgd);
  EXPECT_EQ(vals(w.grad()), (std::vector<double>{3.0, 4.0}));  // true gradients: clip these
  EXPECT_DOUBLE_EQ(optim::clip_grad_norm({w}, 1.0), 5.0);
  EXPECT_ERROR(scaler.unscale_(sgd), "unscale_() was already called on this optimizer");
  EXPECT_TRUE(scaler.step(sgd));
  EXPECT_NEAR(vals(w)[0], -0.6, 1e-6);  // the clipped step, not unscaled twice
  EXPECT_ERROR(scaler.step(sgd), "step() was already called");
  scaler.update();
  EXPECT_ERROR(scaler.update(), "update() without a step()");
  EXPECT_ERROR(amp::GradScaler({.backoff_factor = 2.0}), "backoff_factor 2 must be in (0, 1)");
  amp::GradScaler disabled({.enabled = false});
  EXPECT_EQ(disabled.get_scale(), 1.0);
}

// The scaled loss's dtype is PyTorch's for loss * a 0-d float32 scale: float32 and float64
// stay, a 16-bit loss with dims stays 16-bit, a 0-d 16-bit one becomes float32.
TEST(GradScaler, TheScaledLossKeepsPyTorchsDtype) {
  amp::GradScaler scaler({.init_scale = 1024.0});
  const Tensor row = tensor({0.5f, -2.0f, 3.0f});
  for (const DType dtype : {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16}) {
    const Tensor scaled = scaler.scale(row.to(dtype));
    EXPECT_EQ(scaled.dtype(), dtype) << dtype_name(dtype);
    EXPECT_EQ(vals(scaled), (std::vector<double>{512, -2048, 3072})) << dtype_name(dtype);
    const bool low = dtype == DType::BFloat16 || dtype == DType::Float16;
    EXPECT_EQ(scaler.scale(sum(row).to(dtype)).dtype(), low ? DType::Float32 : dtype) << dtype_name(dtype) << " 0-d";
  }
}

// state_dict has PyTorch's keys, and a scaler made with other options that loads it mid-run
// goes on with PyTorch's sequence of scales.
TEST(GradScaler, StateDictCarriesARunOnMidSequence) {
  const size_t stop = 7;  // after two back-offs and with a growth tracker of 1
  Tensor w = tensor({0.0f, 0.0f, 0.0f}).requires_grad_();
  optim::SGD sgd({w}, {.lr = 1.0});
  amp::GradScaler first({.init_scale = 65536.0, .growth_interval = kInterval3GrowthInterval});
  for (size_t i = 0; i < stop; ++i) train_step(first, sgd, w, kInterval3[i].overflow != 0, INFINITY);
  const std::map<std::string, double> state = first.state_dict();
  EXPECT_EQ(state, (std::map<std::string, double>{{"scale", kInterval3[stop - 1].scale},
                                                  {"growth_factor", 2.0},
                                                  {"backoff_factor", 0.5},
                                                  {"growth_interval", double(kInterval3GrowthInterval)},
                                                  {"_growth_tracker", double(kInterval3[stop - 1].tracker)}}));
  amp::GradScaler second({.init_scale = 1.0, .growth_interval = 1000});
  second.load_state_dict(state);
  for (size_t i = stop; i < std::size(kInterval3); ++i) {
    train_step(second, sgd, w, kInterval3[i].overflow != 0, NAN);
    EXPECT_EQ(second.get_scale(), kInterval3[i].scale) << "step " << i;
    EXPECT_EQ(second.growth_tracker(), kInterval3[i].tracker) << "step " << i;
  }
}

TEST(GradScaler, LoadStateDictRefusesABadStateNamingTheKeyAndChangesNothing) {
  amp::GradScaler saved({.init_scale = 1024.0, .growth_interval = 4});
  const std::map<std::string, double> good = saved.state_dict();
  auto with = [&](const std::string& key, double value) {
    std::map<std::string, double> state = good;
    state[key] = value;
    return state;
  };
  auto without = [&](const std::string& key) {
    std::map<std::string, double> state = good;
    state.erase(key);
    return state;
  };
  amp::GradScaler scaler({.init_scale = 8.0});
  EXPECT_ERROR(scaler.load_state_dict({}), "empty state", "disabled GradScaler");
  EXPECT_ERROR(scaler.load_state_dict(without("_growth_tracker")), "key '_growth_tracker' is missing");
  EXPECT_ERROR(scaler.load_state_dict(with("scales", 2.0)), "unexpected key 'scales'");
  EXPECT_ERROR(scaler.load_state_dict(with("scale", 0.1)), "'scale' is 0.1, not a positive finite float32 value");
  EXPECT_ERROR(scaler.load_state_dict(with("scale", -4.0)), "'scale' is -4");
  EXPECT_ERROR(scaler.load_state_dict(with("scale", INFINITY)), "'scale' is inf");
  EXPECT_ERROR(scaler.load_state_dict(with("growth_interval", 2.5)), "'growth_interval' is 2.5, not a whole number");
  EXPECT_ERROR(scaler.load_state_dict(with("_growth_tracker", 4.0)), "'_growth_tracker' is 4", "[0, 3]");
  EXPECT_ERROR(scaler.load_state_dict(with("growth_factor", 1.0)), "load_state_dict: growth_factor 1 must be");
  EXPECT_ERROR(scaler.load_state_dict(with("backoff_factor", NAN)), "backoff_factor nan must be in (0, 1)");
  EXPECT_EQ(scaler.get_scale(), 8.0);
  EXPECT_EQ(scaler.state_dict().at("growth_interval"), 2000.0);

  // Between unscale_/step() and update() the step's verdict is not in the scale: refused both ways.
  Tensor w = tensor({1.0f}).requires_grad_();
  optim::SGD sgd({w}, {.lr = 1.0});
  scaler.scale(sum(w)).backward();
  scaler.unscale_(sgd);
  EXPECT_ERROR((void)scaler.state_dict(), "state_dict() between unscale_()/step() and update()");
  EXPECT_ERROR(scaler.load_state_dict(good), "load_state_dict() between unscale_()/step() and update()");
  scaler.step(sgd);
  scaler.update();
  scaler.load_state_dict(good);
  EXPECT_EQ(scaler.get_scale(), 1024.0);

  // A disabled scaler saves nothing and ignores what it is given, as PyTorch's.
  amp::GradScaler disabled({.enabled = false});
  EXPECT_TRUE(disabled.state_dict().empty());
  disabled.load_state_dict(good);
  EXPECT_EQ(disabled.get_scale(), 1.0);
  EXPECT_ERROR(amp::GradScaler({.growth_factor = INFINITY}), "GradScaler: growth_factor inf must be finite and > 1");
}

// Each way a gradient overflows skips the step, whatever the element's place and dtype; a
// large finite gradient (whose sum would overflow float32) does not; an empty one is ignored.
TEST(GradScaler, SkipsOnNaNPlusOrMinusInfinityAnywhereButNotOnLargeFiniteValues) {
  for (DType dtype : {DType::Float32, DType::BFloat16, DType::Float16})
    for (const float poison : {NAN, INFINITY, -INFINITY, 3e38f})
      for (int64_t place : {0, 17, 99}) {
        std::vector<float> c(100, 1.0f);
        c[size_t(place)] = poison;
        Tensor w = zeros({100}, {.dtype = dtype}).requires_grad_(), empty = zeros({0}).requires_grad_();
        optim::SGD sgd({w, empty}, {.lr = 1.0});
        amp::GradScaler scaler({.init_scale = 1.0});
        // A finite 3e38 overflows float16 to Inf in the gradient itself (bfloat16 has
        // float32's range): skipped there too.
        const bool overflow = !std::isfinite(poison) || dtype == DType::Float16;
        scaler.scale(sum(w * tensor(c, {100}).to(dtype)) + sum(empty)).backward();
        EXPECT_EQ(scaler.step(sgd), !overflow) << dtype_name(dtype) << " " << poison << " at " << place;
        scaler.update();
        EXPECT_EQ(scaler.get_scale(), overflow ? 0.5 : 1.0) << dtype_name(dtype) << " " << poison;
      }
}

// A GradScaler training step under autocast whose gradients zero_grad() drops (set_to_none):
// the next backwards get them back on the blocks of earlier steps, in a cycle of a few steps
// (the small ones share the allocator's 512-byte bucket with each step's scalars; on the CPU
// the cycle is 6 steps), so the gradient sets unscale_and_check sees repeat. On a GPU their
// device tables (and the optimizer's) are then found in the backend's cache: none is written
// after the first cycle (cuda::table_upload_count).
TEST(GradScaler, GradientsDroppedEachStepComeBackOnTheBlocksOfEarlierSteps) {
  for (const Device device : vgrad_test::cpu_and_gpu()) {
    auto uploads = [&] { return device.is_cuda() ? cuda::table_upload_count(device.index) : 0; };
    const int64_t before = uploads();
    int64_t after_warm_up = 0;
    std::vector<std::vector<const void*>> blocks;
    vgrad_test::grad_scaler_loop(device, 24, [&](int step, const std::vector<Tensor>& params) {
      blocks.emplace_back();
      for (const Tensor& p : params) blocks.back().push_back(p.grad().view().data);
      if (step == 16) after_warm_up = uploads();
    });
    // Cycles of up to 14 steps pass (the backend's cache holds 16 steps' tables).
    for (size_t step = 16; step < blocks.size(); ++step) {
      EXPECT_NE(std::find(blocks.begin() + 2, blocks.begin() + 16, blocks[step]), blocks.begin() + 16)
          << device.str() << " step " << step << ": gradients on blocks not seen in steps 2-15";
    }
    EXPECT_EQ(uploads(), after_warm_up) << device.str() << ": a table was written in steps 16-23";
    if (device.is_cuda()) {
      EXPECT_GT(after_warm_up, before) << "the first steps write their tables";
    }
  }
}

}  // namespace
