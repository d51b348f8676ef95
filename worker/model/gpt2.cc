#include "worker/model/gpt2.h"

#include <ATen/ops/gelu.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <torch/nn/functional/linear.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/init.h>
#include <torch/utils.h>

#include <cmath>

namespace gpt2 {

CausalSelfAttentionImpl::CausalSelfAttentionImpl(const GPTConfig& c) : n_head_(c.n_head) {
  c_attn = register_module("c_attn", torch::nn::Linear(c.n_embd, 3 * c.n_embd));
  c_proj = register_module("c_proj", torch::nn::Linear(c.n_embd, c.n_embd));
}

torch::Tensor CausalSelfAttentionImpl::Attend(const torch::Tensor& q, const torch::Tensor& k,
                                              const torch::Tensor& v) const {
  const int64_t B = q.size(0), T = q.size(1), C = q.size(2), NH = n_head_, HS = C / NH;
  auto heads = [&](const torch::Tensor& t) { return t.view({B, T, NH, HS}).transpose(1, 2); };
  // (B,NH,T,HS) each; softmax(q k^T / sqrt(HS)) v with the causal mask
  torch::Tensor y = at::scaled_dot_product_attention(heads(q), heads(k), heads(v), /*attn_mask=*/{},
                                                     /*dropout_p=*/0.0, /*is_causal=*/true);
  return y.transpose(1, 2).contiguous().view({B, T, C});  // re-assemble all heads side by side
}

MLPImpl::MLPImpl(const GPTConfig& c) {
  c_fc = register_module("c_fc", torch::nn::Linear(c.n_embd, c.mlp_width()));
  c_proj = register_module("c_proj", torch::nn::Linear(c.mlp_width(), c.n_embd));
}

BlockImpl::BlockImpl(const GPTConfig& c) {
  auto layer_norm = [&] {
    return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.n_embd}).eps(c.layer_norm_epsilon));
  };
  ln_1 = register_module("ln_1", layer_norm());
  attn = register_module("attn", CausalSelfAttention(c));
  ln_2 = register_module("ln_2", layer_norm());
  mlp = register_module("mlp", MLP(c));
}

torch::Tensor BlockImpl::forward(torch::Tensor x) {
  return ForwardWith(
      x, [](torch::nn::Linear& layer, const torch::Tensor& in) { return layer->forward(in); },
      [this](const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) { return attn->Attend(q, k, v); });
}

TransformerImpl::TransformerImpl(const GPTConfig& c) {
  wte = register_module("wte", torch::nn::Embedding(c.padded_vocab_size(), c.n_embd));
  wpe = register_module("wpe", torch::nn::Embedding(c.n_positions, c.n_embd));
  h = register_module("h", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.n_layer; ++i) {
    blocks.emplace_back(c);
    h->push_back(blocks.back());
  }
  ln_f =
      register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.n_embd}).eps(c.layer_norm_epsilon)));
}

GPTImpl::GPTImpl(const GPTConfig& config) : config_(config) {
  transformer = register_module("transformer", Transformer(config));
  InitWeights();
}

void GPTImpl::InitWeights() {
  torch::NoGradGuard no_grad;
  const double std = 0.02;
  const double residual_std = std / std::sqrt(2.0 * static_cast<double>(config_.n_layer));
  for (auto& item : named_parameters()) {
    const std::string& name = item.key();
    torch::Tensor& p = item.value();
    auto ends_with = [&](std::string_view s) {
      return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
    };
    if (name.find(".ln_") != std::string::npos) {
      ends_with(".weight") ? p.fill_(1.0) : p.zero_();
    } else if (ends_with(".bias")) {
      p.zero_();
    } else if (ends_with("c_proj.weight")) {
      torch::nn::init::normal_(p, 0.0, residual_std);
    } else {
      torch::nn::init::normal_(p, 0.0, std);  // other Linear weights, wte, wpe
    }
  }
  // The padded vocabulary rows are never looked up and get no gradient: keep them zero, so that a
  // checkpoint (which holds the real rows only) restores the model bit for bit.
  transformer->wte->weight.slice(0, config_.vocab_size).zero_();
}

torch::Tensor GPTImpl::forward(const torch::Tensor& idx) {
  const int64_t T = idx.size(1);
  TORCH_CHECK(T <= config_.n_positions, "sequence of length ", T, " exceeds the context of ", config_.n_positions,
              " tokens");
  torch::Tensor pos = torch::arange(T, idx.options().dtype(torch::kLong));  // (T)
  torch::Tensor x = transformer->wte(idx) + transformer->wpe(pos);          // (B,T,C)
  for (Block& block : transformer->blocks) x = block(x);
  x = transformer->ln_f(x);
  return torch::nn::functional::linear(x, transformer->wte->weight);  // (B,T,Vp), tied head
}

torch::Tensor GPTImpl::Loss(const torch::Tensor& logits, const torch::Tensor& targets) const {
  const int64_t V = config_.vocab_size;
  torch::Tensor real = logits.slice(/*dim=*/-1, 0, V);  // padded columns take no probability mass
  return torch::nn::functional::cross_entropy(real.reshape({-1, V}).to(torch::kFloat), targets.reshape({-1}));
}

}  // namespace gpt2
