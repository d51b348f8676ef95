// The inference engine of a serving replica: one GPT-2 on one device, a KV cache of fixed slots
// sized from a memory budget, and continuous (iteration-level) batching. Requests join between
// decode steps (their prompt is prefilled into a free slot), finished or cancelled ones leave, and
// every running request advances one token per decode step.
//
// Batching never changes a result. Between decode steps, newly admitted prompts are prefilled
// together; in a decode step, every running request advances one token. In both, each request
// attends alone over exactly its own positions, and the dense layers run over the requests' rows
// padded to one of a few row counts that the engine verified at load to give bit-identical rows
// (a matrix library may round differently at different row counts; on a CPU, decode steps' linear
// layers run through RowLinear and attention through DecodeAttention, whose rows never depend on
// the batch). Each request draws from its own seeded generator. Greedy and seeded outputs are
// therefore bit-identical alone and in any batch (tested), and a step costs what is running, not
// the slots or the serving context.
//
// A step that fails (a c10::Error, out of memory) ends the requests it was computing with kError
// and frees their slots; the engine goes on serving the others and the next arrivals.
//
// No libtorch in this header: the gRPC side of the worker includes it (docs/process-model.md).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_config.h"

namespace gpt2 {

enum class FinishReason { kNone, kLength, kEos, kStop, kCancelled, kError };

// The serving APIs' one default for max_tokens (OpenAI's): gRPC's 0, gpt2ctl without --max-tokens.
inline constexpr int64_t kDefaultMaxTokens = 16;
// The most alternatives a request may ask for at each position (GenerationParams::top_logprobs).
inline constexpr int64_t kMaxTopLogprobs = 20;

// The engine's parameters. Their initializers are the serving APIs' one table of defaults
// (completion_request.h applies them to whatever a request leaves out; the seed's default is a
// random one).
struct GenerationParams {
  std::vector<int32_t> prompt;  // token ids, 1 <= size, each < vocab_size
  double temperature = 1.0;     // 0 = greedy
  int64_t top_k = 0;            // 0 = all tokens
  double top_p = 1.0;           // 1 = no nucleus cut
  uint64_t seed = 0;
  int64_t max_tokens = kDefaultMaxTokens;  // > 0 (>= 0 with prompt_logprobs); prompt + max_tokens <= the context
  bool ignore_eos = false;                 // else <|endoftext|> ends the request (it is not returned)
  int64_t min_tokens = 0;                  // <= max_tokens: end of text and stop_token_ids are not chosen before
  std::vector<int32_t> stop_token_ids;     // generating one ends the request (kStop; it is not returned)
  int64_t top_logprobs = 0;                // 0..kMaxTopLogprobs alternatives on each event
  // Events for the prompt's tokens 1.. (their log-probabilities given the tokens before) come
  // first. Such a prompt is computed in full (it reuses no cached prefix: every row is needed).
  bool prompt_logprobs = false;
};

// One step of a request's life, delivered on the engine's thread (keep the callback short).
struct TokenEvent {
  int32_t token = -1;                         // -1 when the event only finishes the request
  float logprob = 0;                          // log p(token) under the model's unmodified distribution
  FinishReason finish = FinishReason::kNone;  // set on the request's last event
  std::string error;                          // with kError
  // With top_logprobs: the most likely tokens at this position and their log p, most likely first.
  std::vector<std::pair<int32_t, float>> top;
  bool prompt = false;  // a prompt token's (prompt_logprobs), not a generated one: it never finishes
};

struct EngineOptions {
  std::string device = "cpu";
  int64_t kv_cache_bytes = int64_t{1} << 30;  // memory for the KV cache
  // Cap on concurrent requests (the batch); the budget may allow fewer. Idle slots cost memory
  // only: a decode step computes the running requests' rows.
  int64_t max_slots = 32;
  int64_t max_queue = 256;  // waiting requests beyond this: RESOURCE_EXHAUSTED
  // Prompt tokens prefilled together between two decode steps (a longer prompt goes alone): more
  // is faster for bursts of arrivals, less keeps running streams' inter-token latency lower.
  int64_t max_prefill_tokens = 512;
  // Tokens a request may span (prompt + max_tokens); 0 = the model's context. A shorter serving
  // context makes each slot smaller, so the same budget holds more of them.
  int64_t max_context = 0;
  // The weights' format (weight_format.h): fp32, bf16, int8 or w8a8. Every matrix (the linear layers and
  // the tied embedding / LM head) is rounded to it at load; decode steps on a CPU read it in that
  // format (RowLinear), prefill and the other devices compute with the values it stands for.
  std::string weights = "fp32";
  // Reuse the KV rows of prompt prefixes already computed (scheduler.h): a hit changes no result.
  bool prefix_caching = true;
  // Called on the engine's thread when a step fails ("prefill" or "decode", and why): the step's
  // requests have ended with kError and the engine goes on with the next one.
  std::function<void(std::string_view step, std::string_view what)> on_fault;
  // Called on the engine's thread as each request is admitted: its prompt's tokens and how many of
  // them a cached prefix gave (the rest are computed).
  std::function<void(int64_t prompt_tokens, int64_t reused)> on_admit;
  // Tests: called before each step; what it throws is a fault of that step.
  std::function<void(std::string_view step)> before_step;
};

struct EngineStats {
  int64_t slots = 0, active = 0, queued = 0;
  int64_t decode_steps = 0;
  int64_t prefills = 0;           // prefill batches run (each of one or more prompts)
  int64_t faults = 0;             // steps that failed (their requests ended with kError)
  int64_t prompt_tokens = 0;      // prompt tokens of admitted requests
  int64_t prefix_hit_tokens = 0;  // of them, reused from a cached prefix instead of computed
  double kv_cache_usage = 0;      // used token positions / all token positions
};

class Engine {
 public:
  using Callback = std::function<void(const TokenEvent&)>;

  // Loads a Hugging Face GPT-2 directory (config.json + model.safetensors) onto the device.
  static absl::StatusOr<std::unique_ptr<Engine>> Load(const std::string& model_dir, const EngineOptions& options);
  ~Engine();

  // Queues a request; returns its id. INVALID_ARGUMENT naming the field for bad parameters,
  // RESOURCE_EXHAUSTED when the queue is full. Thread-safe.
  absl::StatusOr<int64_t> Submit(GenerationParams params, Callback callback);
  // Ends a request within one decode step (its last event says kCancelled). Thread-safe.
  void Cancel(int64_t id);
  EngineStats stats() const;
  const GPTConfig& config() const;
  int64_t max_context() const;

  class Impl;

 private:
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpt2
