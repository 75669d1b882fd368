// Learning-rate schedules equal to transformers' get_linear_schedule_with_warmup,
// get_constant_schedule_with_warmup and get_cosine_schedule_with_warmup
// (LambdaLR: lr = base_lr · factor(step)). A pure function of the optimizer
// step, so the only state to checkpoint is the step count.
//
//   warmup  (step < w): factor = step / max(1, w)
//   linear:   max(0, (total - step) / max(1, total - w))
//   constant: 1
//   cosine:   max(0, 0.5·(1 + cos(π · cycles · 2 · (step - w) / max(1, total - w))))
#pragma once

#include <cstdint>
#include <string>

namespace dsee {

enum class LrScheduleKind { linear, constant, cosine };

// "linear" / "constant" / "cosine"; dsee::Error naming the accepted names.
LrScheduleKind lr_schedule_kind_from_name(const std::string& name);
const char* lr_schedule_kind_name(LrScheduleKind kind);

struct LrScheduleOptions {
  LrScheduleKind kind = LrScheduleKind::linear;
  std::int64_t warmup_steps = 0;  // either this ...
  double warmup_ratio = 0.0;      // ... or ceil(ratio · total) (transformers' rule); not both
  double num_cycles = 0.5;        // cosine only: 0.5 is a half wave down to 0
};

// The warmup length in steps for `total_steps`; dsee::Error when both warmup
// fields are set or either is negative / the ratio exceeds 1.
std::int64_t lr_warmup_steps(const LrScheduleOptions& options, std::int64_t total_steps);

// The factor at optimizer step `step` (0 for the first update).
double lr_factor(LrScheduleKind kind, std::int64_t step, std::int64_t warmup_steps, std::int64_t total_steps,
                 double num_cycles = 0.5);

class LrSchedule {
 public:
  // dsee::Error for base_lr < 0, total_steps < 1 or bad warmup fields.
  LrSchedule(double base_lr, LrScheduleOptions options, std::int64_t total_steps);

  // The rate for the current step, then advance() after the optimizer step.
  double lr() const { return lr_at(step_); }
  double lr_at(std::int64_t step) const;
  void advance() { ++step_; }

  std::int64_t step() const { return step_; }
  void set_step(std::int64_t step);  // resume from a checkpoint; dsee::Error if negative
  std::int64_t warmup_steps() const { return warmup_steps_; }
  std::int64_t total_steps() const { return total_steps_; }

 private:
  double base_lr_;
  LrScheduleOptions options_;
  std::int64_t total_steps_, warmup_steps_;
  std::int64_t step_ = 0;
};

}  // namespace dsee
