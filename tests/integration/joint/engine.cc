#include "tests/integration/joint/engine.h"

#include <torch/utils.h>

#include <mutex>

#include "worker/model/gpt2.h"

namespace gpt2::joint {

struct GreedyEngine::Impl {
  std::mutex mu;
  GPT model{nullptr};
};

GreedyEngine::GreedyEngine(uint64_t seed) : impl_(std::make_unique<Impl>()) {
  torch::manual_seed(seed);
  GPTConfig c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 64, c.n_positions = 64;
  impl_->model = GPT(c);
  impl_->model->eval();
}

GreedyEngine::~GreedyEngine() = default;

std::vector<int32_t> GreedyEngine::Continue(const std::vector<int32_t>& prompt, int max_tokens) {
  std::lock_guard lock(impl_->mu);
  torch::InferenceMode guard;
  std::vector<int64_t> ids(prompt.begin(), prompt.end());
  std::vector<int32_t> out;
  for (int i = 0; i < max_tokens; ++i) {
    torch::Tensor logits = impl_->model->forward(torch::tensor(ids, torch::kLong).unsqueeze(0));
    const int64_t next = logits[0][-1].slice(0, 0, impl_->model->config().vocab_size).argmax().item<int64_t>();
    ids.push_back(next);
    out.push_back(static_cast<int32_t>(next));
  }
  return out;
}

}  // namespace gpt2::joint
