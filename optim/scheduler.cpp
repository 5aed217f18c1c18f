// Schedules as pure functions of the step count.
#include "optim/scheduler.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace vgrad::optim {

void Scheduler::restore(int64_t count, double base_lr) {
  if (count < 0) fail("scheduler: step count {} is negative", count);
  if (!std::isfinite(base_lr) || base_lr < 0) fail("scheduler: base learning rate {} is not a finite non-negative number", base_lr);
  count_ = count;
  base_lr_ = base_lr;
}

StepLR::StepLR(Optimizer& optimizer, int64_t step_size, double gamma)
    : Scheduler(optimizer), step_size_(step_size), gamma_(gamma) {
  if (step_size < 1) fail("StepLR: step_size must be at least 1, got {}", step_size);
}
double StepLR::lr_at(int64_t step) const { return base_lr_ * std::pow(gamma_, double(step / step_size_)); }

CosineWithWarmup::CosineWithWarmup(Optimizer& optimizer, int64_t warmup_steps, int64_t total_steps, double min_lr)
    : Scheduler(optimizer), warmup_steps_(warmup_steps), total_steps_(total_steps), min_lr_(min_lr) {
  if (warmup_steps < 0 || total_steps <= warmup_steps)
    fail("CosineWithWarmup: need 0 <= warmup_steps ({}) < total_steps ({})", warmup_steps, total_steps);
  optimizer.set_lr(warmup_steps > 0 ? 0.0 : base_lr_);
}
double CosineWithWarmup::lr_at(int64_t step) const {
  if (step < warmup_steps_) return base_lr_ * double(step) / double(warmup_steps_);
  const double progress = std::min(1.0, double(step - warmup_steps_) / double(total_steps_ - warmup_steps_));
  return min_lr_ + 0.5 * (base_lr_ - min_lr_) * (1.0 + std::cos(M_PI * progress));
}

}  // namespace vgrad::optim
