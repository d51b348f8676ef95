// GPT-2 model configuration: the four released sizes, custom sizes, and the Hugging Face
// config.json that travels with every checkpoint. No libtorch here.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace gpt2 {

// <|endoftext|>: GPT-2's one special token, the id after its 50,256 mergeable ones. It separates
// documents in training data, starts an empty prompt and ends a generation. (The tokenizer derives
// the same id from its vocabulary: Tokenizer::eot_token.)
inline constexpr int32_t kEndOfTextToken = 50256;

struct GPTConfig {
  int64_t n_layer = 12;        // L: transformer blocks
  int64_t n_head = 12;         // NH: attention heads
  int64_t n_embd = 768;        // C: channels
  int64_t n_positions = 1024;  // T max: context length
  int64_t vocab_size = 50257;  // V: real tokens
  int64_t n_inner = 0;         // MLP hidden width; 0 means 4 * n_embd
  double layer_norm_epsilon = 1e-5;

  // The embedding/LM-head rows we allocate: vocab_size rounded up to a multiple of 64 (50304 for
  // GPT-2) so matmuls get friendly shapes. Rows past vocab_size are never sampled nor in the loss.
  int64_t padded_vocab_size() const { return (vocab_size + 63) / 64 * 64; }
  int64_t mlp_width() const { return n_inner > 0 ? n_inner : 4 * n_embd; }
  int64_t head_dim() const { return n_embd / n_head; }

  // Parameters, counting the tied embedding once and using the padded vocabulary.
  int64_t NumParameters() const;
  // Training FLOPs per token (nanoGPT / PaLM appendix B): 6*N + 12*L*NH*HS*T, N without wpe.
  double FlopsPerToken(int64_t seq_len) const;
};

// Checks that the sizes make sense (positive, heads divide channels, ...).
absl::Status Validate(const GPTConfig& config);

// "gpt2" (124M), "gpt2-medium" (350M), "gpt2-large" (774M), "gpt2-xl" (1.5B).
absl::StatusOr<GPTConfig> PresetConfig(std::string_view name);
std::vector<std::string> PresetNames();

// Hugging Face GPT2Config JSON <-> GPTConfig. Parsing refuses what our model cannot represent
// (another model_type, another activation, cross-attention, ...), naming the field.
absl::StatusOr<GPTConfig> ConfigFromHfJson(std::string_view json_text);
std::string ConfigToHfJson(const GPTConfig& config);

absl::StatusOr<GPTConfig> ReadHfConfig(const std::string& path);

}  // namespace gpt2
