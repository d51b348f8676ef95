// AdamW as GPT-2 is trained with it: weight decay on parameters of two or more dimensions
// (matmul weights and embeddings), none on biases and LayerNorm gains. The step runs PyTorch's
// fused kernel (at::_fused_adamw_, CPU and CUDA) when `fused` is set and the build has it;
// otherwise the same arithmetic as torch.optim.AdamW's single-tensor path.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace gpt2 {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1;
  bool fused = true;
};

class AdamW {
 public:
  AdamW(const std::vector<std::pair<std::string, at::Tensor>>& named_parameters, const AdamWOptions& options);

  // One update of every parameter with a gradient, at learning rate `lr`.
  void Step(double lr);

  // Whether steps run the fused kernel (false after a fallback or when not asked for).
  bool fused() const { return fused_; }
  int64_t decayed_numel() const;
  int64_t undecayed_numel() const;

  // The state, for checkpoints: "exp_avg.<param>", "exp_avg_sq.<param>", "step.<param>".
  std::vector<std::pair<std::string, at::Tensor>> State() const;
  // Restores State(); every entry must be present with the right shape.
  absl::Status LoadState(const std::map<std::string, at::Tensor>& state);

 private:
  struct Group {
    double weight_decay = 0;
    std::vector<std::string> names;
    std::vector<at::Tensor> params, exp_avgs, exp_avg_sqs, steps;
  };
  void StepGroup(Group& g, double lr);

  AdamWOptions options_;
  bool fused_;
  Group decay_, no_decay_;
};

}  // namespace gpt2
