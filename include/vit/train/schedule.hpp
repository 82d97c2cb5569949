// vit/train/schedule.hpp - learning-rate schedules: linear warm-up, then cosine
// decay or a constant rate.
//
// Both are pure functions of the step, counted from 0 = the first optimizer step
// (the number of optimizer steps already taken). They follow timm's
// CosineLRScheduler updated per step (t_in_epochs=False, one cycle, no noise,
// k_decay 1):
//
//   step < warmup_steps:  warmup_lr + step * (base_lr - warmup_lr) / warmup_steps
//   otherwise:            min_lr + (base_lr - min_lr) * (1 + cos(pi * t / T)) / 2
//                         and min_lr once t >= T,
//
// where, as in timm's default (warmup_prefix = false), t = step and T =
// total_steps: the cosine runs over the whole schedule and the warm-up replaces
// its first warmup_steps values. With warmup_prefix = true the cosine starts
// after the warm-up: t = step - warmup_steps, T = total_steps - warmup_steps
// (timm's warmup_prefix=True with t_initial = total_steps - warmup_steps). Either
// way the rate reaches min_lr at step total_steps and stays there.
//
//   vit::train::CosineSchedule s;
//   s.base_lr = 1e-3; s.min_lr = 1e-5; s.warmup_steps = 500; s.total_steps = 10000;
//   for (std::int64_t step = 0; step < s.total_steps; ++step) opt.step(s(step));
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

#include "vit/error.hpp"

namespace vit::train {

namespace detail {

inline std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

inline void check_rate(const char* schedule, const char* field, double v) {
  if (!std::isfinite(v) || v < 0)
    throw argument_error(std::string(schedule) + ": " + field + " = " + num(v) +
                         " must be a finite, non-negative learning rate");
}

inline void check_step(const char* schedule, std::int64_t step) {
  if (step < 0)
    throw argument_error(std::string(schedule) + ": step " + std::to_string(step) +
                         " is negative (steps count from 0)");
}

// Linear warm-up from warmup_lr towards target: the value at step < warmup_steps.
inline double warmup_value(double warmup_lr, double target, std::int64_t warmup_steps,
                           std::int64_t step) {
  return warmup_lr +
         static_cast<double>(step) * ((target - warmup_lr) / static_cast<double>(warmup_steps));
}

}  // namespace detail

/// Linear warm-up, then cosine decay from base_lr to min_lr at total_steps (see the
/// header comment for the exact formula).
struct CosineSchedule {
  double base_lr = 0;             ///< peak rate
  double min_lr = 0;              ///< rate at and after total_steps
  double warmup_lr = 0;           ///< rate at step 0 when warmup_steps > 0
  std::int64_t warmup_steps = 0;  ///< length of the linear warm-up
  std::int64_t total_steps = 0;   ///< step at which the cosine reaches min_lr (> 0)
  bool warmup_prefix = false;     ///< cosine starts after the warm-up (timm warmup_prefix)

  /// Throws argument_error for negative or non-finite rates, negative warmup_steps,
  /// total_steps <= 0 or total_steps < warmup_steps.
  void validate() const {
    constexpr const char* what = "CosineSchedule";
    detail::check_rate(what, "base_lr", base_lr);
    detail::check_rate(what, "min_lr", min_lr);
    detail::check_rate(what, "warmup_lr", warmup_lr);
    if (warmup_steps < 0)
      throw argument_error(std::string(what) + ": warmup_steps = " + std::to_string(warmup_steps) +
                           " is negative");
    if (total_steps <= 0)
      throw argument_error(std::string(what) + ": total_steps = " + std::to_string(total_steps) +
                           " must be positive");
    if (total_steps < warmup_steps)
      throw argument_error(std::string(what) + ": total_steps = " + std::to_string(total_steps) +
                           " is less than warmup_steps = " + std::to_string(warmup_steps));
  }

  /// The rate for optimizer step `step` (>= 0). Validates first.
  double operator()(std::int64_t step) const {
    validate();
    detail::check_step("CosineSchedule", step);
    if (step < warmup_steps) return detail::warmup_value(warmup_lr, base_lr, warmup_steps, step);
    const std::int64_t t = warmup_prefix ? step - warmup_steps : step;
    const std::int64_t period = warmup_prefix ? total_steps - warmup_steps : total_steps;
    if (t >= period) return min_lr;
    const double pi = 3.14159265358979323846;
    const double c = std::cos(pi * static_cast<double>(t) / static_cast<double>(period));
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + c);
  }
};

/// Linear warm-up from warmup_lr to lr over warmup_steps, then lr for ever.
struct ConstantSchedule {
  double lr = 0;                  ///< rate after the warm-up
  double warmup_lr = 0;           ///< rate at step 0 when warmup_steps > 0
  std::int64_t warmup_steps = 0;  ///< length of the linear warm-up

  /// Throws argument_error for negative or non-finite rates or negative warmup_steps.
  void validate() const {
    constexpr const char* what = "ConstantSchedule";
    detail::check_rate(what, "lr", lr);
    detail::check_rate(what, "warmup_lr", warmup_lr);
    if (warmup_steps < 0)
      throw argument_error(std::string(what) + ": warmup_steps = " + std::to_string(warmup_steps) +
                           " is negative");
  }

  /// The rate for optimizer step `step` (>= 0). Validates first.
  double operator()(std::int64_t step) const {
    validate();
    detail::check_step("ConstantSchedule", step);
    if (step < warmup_steps) return detail::warmup_value(warmup_lr, lr, warmup_steps, step);
    return lr;
  }
};

}  // namespace vit::train
