// Learning-rate schedules (see lr_schedule.h). The arithmetic follows
// transformers/optimization.py term by term (doubles, same operation order)
// so the rates agree exactly, not just closely.
#include "core/train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "base/enum_names.h"
#include "base/error.h"

namespace dsee {

namespace {
constexpr EnumName<LrScheduleKind> kKinds[] = {
    {LrScheduleKind::linear, "linear"}, {LrScheduleKind::constant, "constant"}, {LrScheduleKind::cosine, "cosine"}};
}  // namespace

LrScheduleKind lr_schedule_kind_from_name(const std::string& name) {
  if (const auto kind = enum_from_name(kKinds, name)) return *kind;
  throw Error(fmt::format("unknown learning-rate schedule '{}': use linear, constant or cosine", name));
}

const char* lr_schedule_kind_name(LrScheduleKind kind) { return enum_name(kKinds, kind); }

std::int64_t lr_warmup_steps(const LrScheduleOptions& options, std::int64_t total_steps) {
  DSEE_CHECK(options.warmup_steps >= 0, "warmup_steps must be >= 0, got {}", options.warmup_steps);
  DSEE_CHECK(options.warmup_ratio >= 0 && options.warmup_ratio <= 1, "warmup_ratio must lie in [0, 1], got {}",
             options.warmup_ratio);
  DSEE_CHECK(options.warmup_steps == 0 || options.warmup_ratio == 0,
             "set warmup_steps ({}) or warmup_ratio ({}), not both", options.warmup_steps, options.warmup_ratio);
  if (options.warmup_ratio > 0)
    return static_cast<std::int64_t>(std::ceil(static_cast<double>(total_steps) * options.warmup_ratio));
  return options.warmup_steps;
}

double lr_factor(LrScheduleKind kind, std::int64_t step, std::int64_t warmup_steps, std::int64_t total_steps,
                 double num_cycles) {
  if (step < warmup_steps)
    return static_cast<double>(step) / static_cast<double>(std::max<std::int64_t>(1, warmup_steps));
  switch (kind) {
    case LrScheduleKind::constant:
      return 1.0;
    case LrScheduleKind::linear:
      return std::max(0.0, static_cast<double>(total_steps - step) /
                               static_cast<double>(std::max<std::int64_t>(1, total_steps - warmup_steps)));
    case LrScheduleKind::cosine: {
      const double progress = static_cast<double>(step - warmup_steps) /
                              static_cast<double>(std::max<std::int64_t>(1, total_steps - warmup_steps));
      return std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * num_cycles * 2.0 * progress)));
    }
  }
  return 1.0;
}

LrSchedule::LrSchedule(double base_lr, LrScheduleOptions options, std::int64_t total_steps)
    : base_lr_(base_lr), options_(options), total_steps_(total_steps) {
  DSEE_CHECK(base_lr >= 0, "learning rate must be >= 0, got {}", base_lr);
  DSEE_CHECK(total_steps >= 1, "the schedule needs at least one optimizer step, got {}", total_steps);
  warmup_steps_ = lr_warmup_steps(options_, total_steps_);
}

double LrSchedule::lr_at(std::int64_t step) const {
  return base_lr_ * lr_factor(options_.kind, step, warmup_steps_, total_steps_, options_.num_cycles);
}

void LrSchedule::set_step(std::int64_t step) {
  DSEE_CHECK(step >= 0, "schedule step must be >= 0, got {}", step);
  step_ = step;
}

}  // namespace dsee
