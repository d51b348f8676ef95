// GPT-2 in libtorch: the model of "Language Models are Unsupervised Multitask Learners", exactly as
// OpenAI released it, so that Hugging Face checkpoints load by name and produce the same logits.
//
// Pre-LayerNorm blocks, a final LayerNorm, GELU (tanh), causal self-attention through
// scaled_dot_product_attention (flash/efficient kernels where the build has them), and the LM head
// tied to the token embedding. Parameter names equal Hugging Face's
// (transformer.h.0.attn.c_attn.weight, ...). Hugging Face stores Conv1D weights as (in, out);
// ours are nn::Linear (out, in): the transpose happens once, in checkpoint.cc.
//
// B = batch, T = time (sequence), C = channels (n_embd), NH = heads, HS = C / NH, V = vocab,
// Vp = vocab padded to a multiple of 64. The rows of wte past V exist only to make the LM-head
// matmul a friendly shape: they are never sampled and never part of the loss.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <vector>

#include "worker/model/config.h"

namespace gpt2 {

class CausalSelfAttentionImpl : public torch::nn::Module {
 public:
  explicit CausalSelfAttentionImpl(const GPTConfig& config);
  // x (B,T,C) -> (B,T,C)
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Linear c_attn{nullptr};  // (3C, C): q, k, v for all heads
  torch::nn::Linear c_proj{nullptr};  // (C, C)

 private:
  int64_t n_head_;
};
TORCH_MODULE(CausalSelfAttention);

class MLPImpl : public torch::nn::Module {
 public:
  explicit MLPImpl(const GPTConfig& config);
  // x (B,T,C) -> (B,T,C)
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Linear c_fc{nullptr};    // (4C, C)
  torch::nn::Linear c_proj{nullptr};  // (C, 4C)
};
TORCH_MODULE(MLP);

class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(const GPTConfig& config);
  // x (B,T,C) -> (B,T,C): x + attn(ln_1(x)), then + mlp(ln_2(x))
  torch::Tensor forward(torch::Tensor x);

  torch::nn::LayerNorm ln_1{nullptr};
  CausalSelfAttention attn{nullptr};
  torch::nn::LayerNorm ln_2{nullptr};
  MLP mlp{nullptr};
};
TORCH_MODULE(Block);

// The module Hugging Face calls `transformer`: embeddings, blocks and the final LayerNorm.
class TransformerImpl : public torch::nn::Module {
 public:
  explicit TransformerImpl(const GPTConfig& config);

  torch::nn::Embedding wte{nullptr};  // (Vp, C), also the LM head
  torch::nn::Embedding wpe{nullptr};  // (T max, C)
  torch::nn::ModuleList h{nullptr};
  std::vector<Block> blocks;  // typed view of h
  torch::nn::LayerNorm ln_f{nullptr};
};
TORCH_MODULE(Transformer);

class GPTImpl : public torch::nn::Module {
 public:
  // Parameters start with GPT-2's initialisation, drawn from torch's default generator.
  explicit GPTImpl(const GPTConfig& config);

  // idx (B,T) int64 token ids, T <= n_positions -> logits (B,T,Vp)
  torch::Tensor forward(const torch::Tensor& idx);

  // logits (B,T,Vp), targets (B,T) -> mean cross-entropy (nats) over the real vocabulary only.
  torch::Tensor loss(const torch::Tensor& logits, const torch::Tensor& targets) const;

  // GPT-2 initialisation: Linear and Embedding weights N(0, 0.02), biases 0, LayerNorm (1, 0), and
  // the residual projections (attn.c_proj, mlp.c_proj) N(0, 0.02 / sqrt(2 * n_layer)); the padded
  // rows of wte are zero.
  void init_weights();

  const GPTConfig& config() const { return config_; }

  Transformer transformer{nullptr};

 private:
  GPTConfig config_;
};
TORCH_MODULE(GPT);

}  // namespace gpt2
