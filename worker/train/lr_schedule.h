// The learning rate at a step: linear warmup to max_lr over warmup_steps, cosine decay to
// min_lr_ratio * max_lr at max_steps, then flat (build-nanogpt's get_lr).
#pragma once

#include <cmath>
#include <cstdint>

namespace gpt2 {

inline double LearningRate(int64_t step, double max_lr, double min_lr_ratio, int64_t warmup_steps, int64_t max_steps) {
  const double min_lr = max_lr * min_lr_ratio;
  if (step < warmup_steps) return max_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  if (step > max_steps) return min_lr;
  if (max_steps == warmup_steps) return min_lr;
  const double ratio = static_cast<double>(step - warmup_steps) / static_cast<double>(max_steps - warmup_steps);
  const double coeff = 0.5 * (1.0 + std::cos(M_PI * ratio));  // 1 -> 0
  return min_lr + coeff * (max_lr - min_lr);
}

}  // namespace gpt2
