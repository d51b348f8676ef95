#include "worker/serve/completion_request.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>

#include "absl/strings/str_cat.h"

namespace gpt2 {

absl::Status ValidateGeneration(const GenerationParams& p, const GPTConfig& c, int64_t max_context) {
  const int64_t context = max_context > 0 ? std::min(max_context, c.n_positions) : c.n_positions;
  if (p.prompt.empty()) return absl::InvalidArgumentError("prompt: must hold at least one token");
  for (size_t i = 0; i < p.prompt.size(); ++i) {
    if (p.prompt[i] < 0 || p.prompt[i] >= c.vocab_size)
      return absl::InvalidArgumentError(
          absl::StrCat("prompt_tokens[", i, "]: ", p.prompt[i], " is not a token id (0..", c.vocab_size - 1, ")"));
  }
  if (p.max_tokens < (p.prompt_logprobs ? 0 : 1)) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens: must be > 0",
                                                   p.prompt_logprobs ? "" : " (0 only with echo: the prompt alone)",
                                                   ", got ", p.max_tokens));
  }
  const int64_t need = static_cast<int64_t>(p.prompt.size()) + p.max_tokens;
  if (need > context) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens: the prompt (", p.prompt.size(), " tokens) plus ",
                                                   p.max_tokens, " new tokens exceed the context of ", context,
                                                   context < c.n_positions ? " served" : " of the model"));
  }
  if (!(p.temperature >= 0) || !std::isfinite(p.temperature))
    return absl::InvalidArgumentError(absl::StrCat("temperature: must be a finite number >= 0, got ", p.temperature));
  if (p.top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k: must be >= 0, got ", p.top_k));
  if (!(p.top_p > 0 && p.top_p <= 1))
    return absl::InvalidArgumentError(absl::StrCat("top_p: must be in (0, 1], got ", p.top_p));
  if (p.min_tokens < 0 || p.min_tokens > p.max_tokens)
    return absl::InvalidArgumentError(
        absl::StrCat("min_tokens: must be in [0, max_tokens = ", p.max_tokens, "], got ", p.min_tokens));
  for (size_t i = 0; i < p.stop_token_ids.size(); ++i) {
    if (p.stop_token_ids[i] < 0 || p.stop_token_ids[i] >= c.vocab_size)
      return absl::InvalidArgumentError(absl::StrCat("stop_token_ids[", i, "]: ", p.stop_token_ids[i],
                                                     " is not a token id (0..", c.vocab_size - 1, ")"));
  }
  if (p.top_logprobs < 0 || p.top_logprobs > kMaxTopLogprobs)
    return absl::InvalidArgumentError(
        absl::StrCat("top_logprobs: must be in [0, ", kMaxTopLogprobs, "], got ", p.top_logprobs));
  return absl::OkStatus();
}

const ApiFields& GrpcApiFields() {
  static const ApiFields fields{"prompt",
                                "prompt_tokens",
                                "sampling.temperature",
                                "sampling.top_k",
                                "sampling.top_p",
                                "sampling.seed",
                                "sampling.max_tokens",
                                "sampling.stop",
                                "sampling.top_logprobs",
                                "sampling.min_tokens",
                                "sampling.stop_token_ids",
                                "n"};
  return fields;
}

const ApiFields& OpenAiApiFields() {
  static const ApiFields fields{"prompt",     "prompt", "temperature", "top_k",      "top_p",          "seed",
                                "max_tokens", "stop",   "logprobs",    "min_tokens", "stop_token_ids", "n"};
  return fields;
}

namespace {

// The engine's message with its field's name replaced by the API's.
absl::Status InApiTerms(const absl::Status& st, const ApiFields& f) {
  std::string msg(st.message());
  const std::pair<const char*, const std::string*> names[] = {{"prompt_tokens", &f.prompt_tokens},
                                                              {"prompt", &f.prompt},
                                                              {"temperature", &f.temperature},
                                                              {"top_k", &f.top_k},
                                                              {"top_p", &f.top_p},
                                                              {"max_tokens", &f.max_tokens},
                                                              {"min_tokens", &f.min_tokens},
                                                              {"stop_token_ids", &f.stop_token_ids},
                                                              {"top_logprobs", &f.top_logprobs}};
  for (const auto& [engine, api] : names) {
    const std::string e(engine);
    if (msg.rfind(e, 0) == 0 && msg.size() > e.size() && (msg[e.size()] == ':' || msg[e.size()] == '[')) {
      msg = *api + msg.substr(e.size());
      break;
    }
  }
  return absl::InvalidArgumentError(msg);
}

}  // namespace

absl::StatusOr<Completion> ToCompletion(const CompletionRequest& r, const ApiFields& f, const Tokenizer& tok,
                                        const GPTConfig& model, int64_t max_context) {
  Completion c;
  GenerationParams& p = c.params;
  if (r.prompt && r.prompt_tokens && !r.prompt->empty() && !r.prompt_tokens->empty())
    return absl::InvalidArgumentError(
        absl::StrCat(f.prompt, ": set either ", f.prompt, " or ", f.prompt_tokens, ", not both"));
  if (r.prompt_tokens && !r.prompt_tokens->empty()) {
    p.prompt = *r.prompt_tokens;
  } else {
    p.prompt = tok.EncodePrompt(r.prompt.value_or(""));
  }
  if (r.temperature) p.temperature = *r.temperature;
  if (r.top_k) p.top_k = *r.top_k;
  if (r.top_p) p.top_p = *r.top_p;
  p.seed = r.seed ? *r.seed : std::random_device{}();
  if (r.max_tokens) p.max_tokens = *r.max_tokens;
  p.ignore_eos = r.ignore_eos;
  if (r.min_tokens) p.min_tokens = *r.min_tokens;
  for (int64_t id : r.stop_token_ids) {
    if (id < 0 || id > INT32_MAX)  // ValidateGeneration names the entry of an int32 out of the vocabulary
      return absl::InvalidArgumentError(absl::StrCat(f.stop_token_ids, ": ", id, " is not a token id"));
    p.stop_token_ids.push_back(static_cast<int32_t>(id));
  }
  if (r.top_logprobs) {
    if (!r.logprobs)
      return absl::InvalidArgumentError(absl::StrCat(f.top_logprobs, ": alternatives need log-probabilities on"));
    p.top_logprobs = *r.top_logprobs;
  }
  // With echo and logprobs the prompt's log-probabilities are returned; with echo, max_tokens may
  // be 0 (the engine then computes the prompt alone).
  p.prompt_logprobs = r.echo && (r.logprobs || p.max_tokens == 0);
  c.n = r.n.value_or(1);
  if (c.n < 1 || c.n > kMaxChoices)
    return absl::InvalidArgumentError(absl::StrCat(f.n, ": must be in [1, ", kMaxChoices, "], got ", c.n));
  c.echo = r.echo;
  if (absl::Status s = ValidateGeneration(p, model, max_context); !s.ok()) return InApiTerms(s, f);
  if (static_cast<int>(r.stop.size()) > kMaxStops)
    return absl::InvalidArgumentError(absl::StrCat(f.stop, ": at most ", kMaxStops, " strings, got ", r.stop.size()));
  for (size_t i = 0; i < r.stop.size(); ++i)
    if (r.stop[i].empty()) return absl::InvalidArgumentError(absl::StrCat(f.stop, "[", i, "]: empty"));
  c.stop = r.stop;
  c.logprobs = r.logprobs;
  return c;
}

}  // namespace gpt2
