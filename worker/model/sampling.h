// Choosing the next token from a row of logits: greedy, temperature, top-k and top-p (nucleus).
// Each caller owns its generator, so a seeded request draws the same tokens whatever else runs.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace gpt2 {

struct SamplingOptions {
  double temperature = 1.0;  // 0 = greedy (argmax)
  int64_t top_k = 0;         // 0 = all tokens
  double top_p = 1.0;        // 1 = no nucleus cut
  int64_t top_logprobs = 0;  // also report the this many most likely tokens
  std::vector<int64_t> banned;  // tokens that may not be chosen now (e.g. end of text before min_tokens)
};

// INVALID_ARGUMENT naming the field when a value is out of range.
absl::Status ValidateSampling(const SamplingOptions& options);

// A CPU generator seeded with `seed`.
at::Generator MakeGenerator(uint64_t seed);

struct SampledToken {
  int64_t id;
  double logprob;  // log p(id) under the unmodified distribution (temperature 1, no cuts, nothing banned)
  // The options' top_logprobs most likely tokens under that distribution, most likely first.
  std::vector<std::pair<int64_t, double>> top;
};

// The `k` most likely tokens of log-probabilities `logprobs` (V), most likely first (ties: lower id first).
std::vector<std::pair<int64_t, double>> TopLogprobs(const at::Tensor& logprobs, int64_t k);

// logits: (Vp) or (V) for one position; only the first `vocab_size` entries can be chosen.
SampledToken SampleToken(const at::Tensor& logits, int64_t vocab_size, const SamplingOptions& options,
                         at::Generator& generator);

}  // namespace gpt2
