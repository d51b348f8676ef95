// GPT-2 in libtorch: the model of "Language Models are Unsupervised Multitask Learners", exactly as
// OpenAI released it, so that Hugging Face checkpoints load by name and produce the same logits.
//
// Pre-LayerNorm blocks, a final LayerNorm, GELU (tanh), causal self-attention through
// scaled_dot_product_attention (flash/efficient kernels where the build has them), and the LM head
// tied to the token embedding. Parameter names equal Hugging Face's
// (transformer.h.0.attn.c_attn.weight, ...). Hugging Face stores Conv1D weights as (in, out);
// ours are nn::Linear (out, in): the transpose happens once, in hf_checkpoint.cc (load and save).
//
// B = batch, T = time (sequence), C = channels (n_embd), NH = heads, HS = C / NH, V = vocab,
// Vp = vocab padded to a multiple of 64. The rows of wte past V exist only to make the LM-head
// matmul a friendly shape: they are never sampled and never part of the loss.
#pragma once

#include <ATen/ops/gelu.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <vector>

#include "common/model_config.h"

namespace gpt2 {

class CausalSelfAttentionImpl : public torch::nn::Module {
 public:
  explicit CausalSelfAttentionImpl(const GPTConfig& config);
  // q, k, v (B,T,C) each -> (B,T,C): every head attends causally over its sequence (the block
  // applies c_attn before and c_proj after: BlockImpl::ForwardWith).
  torch::Tensor Attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) const;

  torch::nn::Linear c_attn{nullptr};  // (3C, C): q, k, v for all heads
  torch::nn::Linear c_proj{nullptr};  // (C, C)

 private:
  int64_t n_head_;
};
TORCH_MODULE(CausalSelfAttention);

class MLPImpl : public torch::nn::Module {
 public:
  explicit MLPImpl(const GPTConfig& config);
  // Applied by the block: c_proj(gelu_tanh(c_fc(x))), (B,T,C) -> (B,T,C) (BlockImpl::ForwardWith).
  torch::nn::Linear c_fc{nullptr};    // (4C, C)
  torch::nn::Linear c_proj{nullptr};  // (C, 4C)
};
TORCH_MODULE(MLP);

class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(const GPTConfig& config);
  // x (B,T,C) -> (B,T,C): x + attn(ln_1(x)), then + mlp(ln_2(x))
  torch::Tensor forward(torch::Tensor x);

  // The same block with its attention and linear layers passed in, as serving runs it (over the
  // rows (m,C) of many requests, each attending over its own cached positions):
  // `attention(q, k, v)` maps the projections (..,C) to the heads' output (..,C) before c_proj, and
  // `linear(layer, x)` applies one of the block's nn::Linear layers. forward() is this with
  // Attend and the layers themselves.
  template <typename Linear, typename Attention>
  torch::Tensor ForwardWith(const torch::Tensor& x, const Linear& linear, const Attention& attention) {
    const int64_t C = x.size(-1);
    auto qkv = linear(attn->c_attn, ln_1(x)).split(C, /*dim=*/-1);  // 3 x (..,C)
    torch::Tensor h = x + linear(attn->c_proj, attention(qkv[0], qkv[1], qkv[2]));
    return h + linear(mlp->c_proj, at::gelu(linear(mlp->c_fc, ln_2(h)), /*approximate=*/"tanh"));
  }

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
  torch::Tensor Loss(const torch::Tensor& logits, const torch::Tensor& targets) const;

  // GPT-2 initialisation: Linear and Embedding weights N(0, 0.02), biases 0, LayerNorm (1, 0), and
  // the residual projections (attn.c_proj, mlp.c_proj) N(0, 0.02 / sqrt(2 * n_layer)); the padded
  // rows of wte are zero.
  void InitWeights();

  const GPTConfig& config() const { return config_; }

  Transformer transformer{nullptr};

 private:
  GPTConfig config_;
};
TORCH_MODULE(GPT);

}  // namespace gpt2
