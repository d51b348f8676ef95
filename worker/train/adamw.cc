#include "worker/train/adamw.h"

#include <ATen/ops/_fused_adamw.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>
#include <torch/autograd.h>

#include <cmath>

#include "absl/strings/str_cat.h"

namespace gpt2 {

AdamW::AdamW(const std::vector<std::pair<std::string, at::Tensor>>& named_parameters, const AdamWOptions& options)
    : options_(options), fused_(options.fused) {
  decay_.weight_decay = options.weight_decay;
  no_decay_.weight_decay = 0.0;
  for (const auto& [name, p] : named_parameters) {
    Group& g = p.dim() >= 2 ? decay_ : no_decay_;
    g.names.push_back(name);
    g.params.push_back(p);
    g.exp_avgs.push_back(at::zeros_like(p));
    g.exp_avg_sqs.push_back(at::zeros_like(p));
    // The fused kernel wants float32 step counters on the parameter's device.
    g.steps.push_back(at::zeros({}, p.options().dtype(at::kFloat)));
  }
}

int64_t AdamW::decayed_numel() const {
  int64_t n = 0;
  for (const auto& p : decay_.params) n += p.numel();
  return n;
}

int64_t AdamW::undecayed_numel() const {
  int64_t n = 0;
  for (const auto& p : no_decay_.params) n += p.numel();
  return n;
}

void AdamW::Step(double lr) {
  at::NoGradGuard no_grad;
  StepGroup(decay_, lr);
  StepGroup(no_decay_, lr);
}

void AdamW::StepGroup(Group& g, double lr) {
  std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
  for (size_t i = 0; i < g.params.size(); ++i) {
    if (!g.params[i].grad().defined()) continue;
    params.push_back(g.params[i]);
    grads.push_back(g.params[i].grad());
    exp_avgs.push_back(g.exp_avgs[i]);
    exp_avg_sqs.push_back(g.exp_avg_sqs[i]);
    steps.push_back(g.steps[i]);
  }
  if (params.empty()) return;
  for (auto& s : steps) s.add_(1);  // the kernel reads the step, the caller advances it
  const auto& o = options_;
  if (fused_) {
    try {
      at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, /*max_exp_avg_sqs=*/{}, steps, lr, o.beta1, o.beta2,
                        g.weight_decay, o.eps, /*amsgrad=*/false, /*maximize=*/false);
      return;
    } catch (const c10::NotImplementedError&) {
      fused_ = false;  // no fused kernel for this device/dtype in this build: same math below
    }
  }
  for (size_t i = 0; i < params.size(); ++i) {
    at::Tensor& p = params[i];
    const at::Tensor& grad = grads[i];
    const double step = steps[i].item<double>();
    p.mul_(1.0 - lr * g.weight_decay);
    exp_avgs[i].lerp_(grad, 1.0 - o.beta1);
    exp_avg_sqs[i].mul_(o.beta2).addcmul_(grad, grad, 1.0 - o.beta2);
    const double bias_correction1 = 1.0 - std::pow(o.beta1, step);
    const double bias_correction2_sqrt = std::sqrt(1.0 - std::pow(o.beta2, step));
    at::Tensor denom = (exp_avg_sqs[i].sqrt() / bias_correction2_sqrt).add_(o.eps);
    p.addcdiv_(exp_avgs[i], denom, -lr / bias_correction1);
  }
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::State() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const Group* g : {&decay_, &no_decay_}) {
    for (size_t i = 0; i < g->params.size(); ++i) {
      out.emplace_back("exp_avg." + g->names[i], g->exp_avgs[i]);
      out.emplace_back("exp_avg_sq." + g->names[i], g->exp_avg_sqs[i]);
      out.emplace_back("step." + g->names[i], g->steps[i]);
    }
  }
  return out;
}

absl::Status AdamW::LoadState(const std::map<std::string, at::Tensor>& state) {
  // Check all, then copy: a bad file leaves the optimizer as it was.
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;
  for (Group* g : {&decay_, &no_decay_}) {
    for (size_t i = 0; i < g->params.size(); ++i) {
      for (auto [prefix, dst] :
           {std::pair{"exp_avg.", g->exp_avgs[i]}, {"exp_avg_sq.", g->exp_avg_sqs[i]}, {"step.", g->steps[i]}}) {
        const std::string key = prefix + g->names[i];
        auto it = state.find(key);
        if (it == state.end()) return absl::NotFoundError(absl::StrCat("optimizer state has no '", key, "'"));
        if (!it->second.sizes().equals(dst.sizes())) {
          return absl::InvalidArgumentError(absl::StrCat("optimizer state '", key, "' has the wrong shape"));
        }
        copies.emplace_back(dst, it->second);
      }
    }
  }
  at::NoGradGuard no_grad;
  for (auto& [dst, src] : copies) dst.copy_(src);
  return absl::OkStatus();
}

}  // namespace gpt2
