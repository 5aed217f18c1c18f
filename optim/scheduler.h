// Learning-rate schedules: call step() once per optimizer step (or epoch, for StepLR
// used per epoch); each sets the optimizer's lr from the step count.
#pragma once
#include <cstdint>

#include "optim/optimizer.h"

namespace vgrad::optim {

class Scheduler {
 public:
  explicit Scheduler(Optimizer& optimizer) : optimizer_(optimizer), base_lr_(optimizer.lr()) {}
  virtual ~Scheduler() = default;
  void step() { optimizer_.set_lr(lr_at(++count_)); }
  virtual double lr_at(int64_t step) const = 0;
  int64_t count() const { return count_; }
  double base_lr() const { return base_lr_; }
  // Resuming: continues from a checkpoint's count and base lr (the optimizer's lr is restored with the optimizer).
  void restore(int64_t count, double base_lr);

 protected:
  Optimizer& optimizer_;
  double base_lr_;
  int64_t count_ = 0;
};

// lr = base · gamma^⌊step / step_size⌋
class StepLR : public Scheduler {
 public:
  StepLR(Optimizer& optimizer, int64_t step_size, double gamma = 0.1);
  double lr_at(int64_t step) const override;

 private:
  int64_t step_size_;
  double gamma_;
};

// Linear warm-up from 0 to base over warmup_steps, then cosine decay to min_lr at total_steps.
class CosineWithWarmup : public Scheduler {
 public:
  CosineWithWarmup(Optimizer& optimizer, int64_t warmup_steps, int64_t total_steps, double min_lr = 0.0);
  double lr_at(int64_t step) const override;

 private:
  int64_t warmup_steps_, total_steps_;
  double min_lr_;
};

}  // namespace vgrad::optim
