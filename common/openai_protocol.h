// The OpenAI-compatible completions API's wire format, apart from any socket: a /v1/completions
// body (JSON) becomes gpt2d.v1.GenerateRequests (one per prompt; the serving replica validates
// their values through the one validation edge, worker/serve/completion_request.h, in OpenAI's
// field names), and gpt2d.v1 results become OpenAI's completion objects, stream chunks and error
// objects. No libtorch; the tokenizer gives each token's text for `logprobs`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/tokenizer/stream_decoder.h"
#include "common/tokenizer/tokenizer.h"
#include "gpt2d/v1/generate.pb.h"
#include "nlohmann/json.hpp"

namespace gpt2::openai {

// A parsed POST /v1/completions body.
struct CompletionsCall {
  std::string model;                                // the deployment; empty = the default one
  std::vector<gpt2d::v1::GenerateRequest> prompts;  // one per prompt, each asking for `n` choices
  int n = 1;
  bool stream = false, include_usage = false;
  std::optional<int> logprobs;  // OpenAI's: alternatives per position; set = log-probabilities on
  bool echo = false;
};

// INVALID_ARGUMENT naming the field ("temperature: must be a number") for a body that is not JSON,
// not an object, has a field of the wrong type, or a field OpenAI's API does not define.
absl::StatusOr<CompletionsCall> ParseCompletions(const std::string& body);

// The fields OpenAI's completions API defines that we accept and ignore (docs/serving.md).
const std::vector<std::string>& IgnoredFields();

// One choice as it accumulates from gpt2d.v1 pieces (GenerateResponse), and its OpenAI JSON.
class ChoiceBuilder {
 public:
  ChoiceBuilder(const Tokenizer& tokenizer, int index, bool echo, std::optional<int> logprobs);
  // Adds a piece; returns the OpenAI choice object for what it adds (a stream chunk's choice).
  nlohmann::json Add(const gpt2d::v1::GenerateResponse& piece);
  // The whole choice (a non-streamed completion's).
  nlohmann::json Whole() const;
  bool done() const { return done_; }
  int64_t prompt_tokens() const { return prompt_tokens_; }
  int64_t completion_tokens() const { return completion_tokens_; }
  const gpt2d::v1::ModelVersion& model() const { return model_; }

 private:
  // Appends tokens (with their log-probabilities and alternatives, when asked) to `lp`.
  void AddTokens(const google::protobuf::RepeatedField<int32_t>& ids, const google::protobuf::RepeatedField<float>& lps,
                 const google::protobuf::RepeatedPtrField<gpt2d::v1::TopLogprobs>& tops, nlohmann::json* lp);
  const Tokenizer& tokenizer_;
  StreamDecoder decoder_;  // the text so far, a character at a time (text_offset)
  const int index_;
  const bool echo_;
  const std::optional<int> logprobs_;
  std::string text_;
  nlohmann::json logprobs_json_;  // {tokens, token_logprobs, top_logprobs, text_offset}
  int64_t chars_ = 0;             // Unicode characters of the text so far (text_offset)
  std::string finish_reason_;
  bool done_ = false;
  int64_t prompt_tokens_ = 0, completion_tokens_ = 0;
  gpt2d::v1::ModelVersion model_;
};

// A token's text in `logprobs.tokens`: its UTF-8 text, or, for a token that is part of a
// character, "bytes:\xNN..." (OpenAI's convention).
std::string TokenText(const Tokenizer& tokenizer, int32_t id);

// "text_completion" objects. `choices` are by index: prompt i's choice j is i * n + j. A whole
// completion; one stream chunk (one choice's delta; `usage: null` when the stream ends with a usage
// chunk); that usage chunk (no choices).
nlohmann::json Completion(const std::string& id, int64_t created, const std::string& model,
                          const std::vector<ChoiceBuilder>& choices, int n);
nlohmann::json Chunk(const std::string& id, int64_t created, const std::string& model, nlohmann::json choice,
                     bool with_usage_field);
nlohmann::json UsageChunk(const std::string& id, int64_t created, const std::string& model,
                          const std::vector<ChoiceBuilder>& choices, int n);
nlohmann::json Usage(const std::vector<ChoiceBuilder>& choices, int n);

// An error as OpenAI sends it: {"error": {message, type, param, code}} and its HTTP status. The
// parameter is the field an INVALID_ARGUMENT message starts with ("max_tokens: ...").
struct Error {
  int http_status = 500;
  nlohmann::json body;
};
Error ToError(const absl::Status& status);

// A fresh "cmpl-..." id.
std::string NewCompletionId();

}  // namespace gpt2::openai
