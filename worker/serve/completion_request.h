// The serving APIs' one validation edge: a completion request as any API receives it (gRPC's
// GenerateRequest today, the OpenAI-compatible HTTP endpoint next), with the tokenizer and the
// engine's limits, becomes the engine's parameters, or INVALID_ARGUMENT naming the field in the
// API's own terms. Each API only maps its wire format onto CompletionRequest (absent = nullopt)
// and names its fields (ApiFields); the defaults are GenerationParams' (engine.h), applied here
// and nowhere else. No libtorch, no protobuf.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "common/tokenizer/tokenizer.h"
#include "worker/serve/engine.h"

namespace gpt2 {

// Stop sequences a request may carry.
inline constexpr int kMaxStops = 8;
// Completions (choices) one request may ask for.
inline constexpr int kMaxChoices = 16;

struct CompletionRequest {
  std::optional<std::string> prompt;                  // text; empty text starts a new document
  std::optional<std::vector<int32_t>> prompt_tokens;  // or token ids (exactly one of the two)
  std::optional<double> temperature;                  // default 1; 0 = greedy
  std::optional<int64_t> top_k;                       // default 0 = all tokens
  std::optional<double> top_p;                        // default 1 = no nucleus cut
  std::optional<uint64_t> seed;                       // default: a random seed
  std::optional<int64_t> max_tokens;                  // default kDefaultMaxTokens (16)
  std::vector<std::string> stop;                      // at most kMaxStops, none empty
  bool ignore_eos = false;
  bool logprobs = false;
  std::optional<int64_t> top_logprobs;  // alternatives per position (with logprobs), default 0
  std::optional<int64_t> min_tokens;    // default 0
  std::vector<int64_t> stop_token_ids;
  std::optional<int64_t> n;  // choices, default 1
  bool echo = false;         // return the prompt (and, with logprobs, its log-probabilities)
};

// How an API names each field in its errors ("sampling.temperature", "temperature", ...).
struct ApiFields {
  std::string prompt, prompt_tokens, temperature, top_k, top_p, seed, max_tokens, stop, top_logprobs, min_tokens,
      stop_token_ids, n;
};
const ApiFields& GrpcApiFields();    // gpt2d.v1.GenerateRequest's
const ApiFields& OpenAiApiFields();  // the OpenAI-compatible /v1/completions body's

// What a request asks: the engine's parameters, and what the API layer applies around them.
// Choice i of n runs with params and seed params.seed + i.
struct Completion {
  GenerationParams params;
  std::vector<std::string> stop;
  bool logprobs = false;
  int64_t n = 1;
  bool echo = false;
};

// `max_context`: the engine's serving context (Engine::max_context(); 0 = the model's).
absl::StatusOr<Completion> ToCompletion(const CompletionRequest& request, const ApiFields& fields,
                                        const Tokenizer& tokenizer, const GPTConfig& model, int64_t max_context);

// The engine's own check of its parameters against a model (INVALID_ARGUMENT naming the engine's
// field: prompt, prompt_tokens[i], temperature, top_k, top_p, max_tokens). `max_context` 0 = the
// model's context.
absl::Status ValidateGeneration(const GenerationParams& params, const GPTConfig& config, int64_t max_context = 0);

}  // namespace gpt2
