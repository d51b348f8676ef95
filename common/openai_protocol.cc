#include "common/openai_protocol.h"

#include <cmath>
#include <limits>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/utf8.h"

namespace gpt2::openai {
namespace {

namespace v1 = ::gpt2d::v1;
using nlohmann::json;

absl::Status Bad(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

// JSON's integers, also those written as 3.0; the type's name otherwise.
std::optional<int64_t> Integer(const json& v) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::abs(d) < 9e15) return static_cast<int64_t>(d);
  }
  return std::nullopt;
}

absl::Status Int(const json& body, const char* field, int64_t lo, int64_t hi, std::optional<int64_t>* out) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  std::optional<int64_t> v = Integer(*it);
  if (!v) return Bad(field, absl::StrCat("must be an integer, got ", it->dump()));
  if (*v < lo || *v > hi) return Bad(field, absl::StrCat("must be in [", lo, ", ", hi, "], got ", *v));
  *out = v;
  return absl::OkStatus();
}

absl::Status Number(const json& body, const char* field, std::optional<double>* out) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return Bad(field, absl::StrCat("must be a number, got ", it->dump()));
  *out = it->get<double>();
  return absl::OkStatus();
}

absl::Status Bool(const json& body, const char* field, bool* out) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return Bad(field, absl::StrCat("must be true or false, got ", it->dump()));
  *out = it->get<bool>();
  return absl::OkStatus();
}

// The prompt field: a string, strings, token ids, or lists of token ids.
absl::Status Prompts(const json& body, std::vector<v1::GenerateRequest>* out) {
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) return Bad("prompt", "required");
  const json& p = *it;
  auto tokens = [](const json& list, v1::GenerateRequest* r) -> absl::Status {
    for (size_t i = 0; i < list.size(); ++i) {
      std::optional<int64_t> id = Integer(list[i]);
      if (!id || *id < 0 || *id > std::numeric_limits<int32_t>::max())
        return Bad("prompt", absl::StrCat("token ", i, " is not a token id: ", list[i].dump()));
      r->add_prompt_tokens(static_cast<int32_t>(*id));
    }
    if (list.empty()) return Bad("prompt", "an empty list of tokens");
    return absl::OkStatus();
  };
  if (p.is_string()) {
    out->emplace_back().set_prompt(p.get<std::string>());
    return absl::OkStatus();
  }
  if (!p.is_array() || p.empty())
    return Bad("prompt", "must be a string, a list of strings, a list of token ids or a list of such lists");
  if (p[0].is_number()) return tokens(p, &out->emplace_back());
  for (const json& e : p) {
    if (e.is_string()) {
      out->emplace_back().set_prompt(e.get<std::string>());
    } else if (e.is_array()) {
      if (absl::Status s = tokens(e, &out->emplace_back()); !s.ok()) return s;
    } else {
      return Bad("prompt", absl::StrCat("a list must hold strings or lists of token ids, got ", e.dump()));
    }
  }
  return absl::OkStatus();
}

std::string FinishReason(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_EOS:
    case v1::FINISH_REASON_STOP:
      return "stop";
    default:
      return "";
  }
}

// Unicode characters in UTF-8 text (the decoder's output is valid UTF-8).
int64_t Characters(std::string_view s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace

const std::vector<std::string>& IgnoredFields() {
  static const std::vector<std::string> fields = {"user",    "suffix",    "presence_penalty", "frequency_penalty",
                                                  "best_of", "logit_bias"};
  return fields;
}

absl::StatusOr<CompletionsCall> ParseCompletions(const std::string& text) {
  json body = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return absl::InvalidArgumentError("the body is not JSON");
  if (!body.is_object()) return absl::InvalidArgumentError("the body must be a JSON object");
  static const std::set<std::string> known = {"model", "prompt",     "max_tokens", "temperature",    "top_p",    "seed",
                                              "stop",  "n",          "stream",     "stream_options", "logprobs", "echo",
                                              "top_k", "ignore_eos", "min_tokens", "stop_token_ids"};
  std::vector<std::string> unknown;
  for (auto it = body.begin(); it != body.end(); ++it) {
    if (!known.count(it.key()) &&
        std::find(IgnoredFields().begin(), IgnoredFields().end(), it.key()) == IgnoredFields().end())
      unknown.push_back(it.key());
  }
  if (!unknown.empty()) return Bad(unknown[0], absl::StrCat("unknown field(s) ", absl::StrJoin(unknown, ", ")));

  CompletionsCall call;
  if (auto it = body.find("model"); it != body.end() && !it->is_null()) {
    if (!it->is_string()) return Bad("model", "must be a string");
    call.model = it->get<std::string>();
  }
  if (absl::Status s = Prompts(body, &call.prompts); !s.ok()) return s;

  std::optional<int64_t> max_tokens, n, logprobs, top_k, min_tokens, seed;
  std::optional<double> temperature, top_p;
  bool ignore_eos = false;
  constexpr int64_t kInt32 = std::numeric_limits<int32_t>::max();
  for (absl::Status s :
       {Int(body, "max_tokens", 0, kInt32, &max_tokens), Int(body, "n", 1, kInt32, &n),
        Int(body, "logprobs", 0, kInt32, &logprobs), Int(body, "top_k", -1, kInt32, &top_k),
        Int(body, "min_tokens", 0, kInt32, &min_tokens),
        Int(body, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), &seed),
        Number(body, "temperature", &temperature), Number(body, "top_p", &top_p), Bool(body, "stream", &call.stream),
        Bool(body, "echo", &call.echo), Bool(body, "ignore_eos", &ignore_eos)}) {
    if (!s.ok()) return s;
  }
  std::vector<std::string> stop;
  if (auto it = body.find("stop"); it != body.end() && !it->is_null()) {
    if (it->is_string()) {
      stop.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      for (const json& e : *it) {
        if (!e.is_string()) return Bad("stop", absl::StrCat("must be a string or a list of strings, got ", e.dump()));
        stop.push_back(e.get<std::string>());
      }
    } else {
      return Bad("stop", "must be a string or a list of strings");
    }
  }
  std::vector<int32_t> stop_token_ids;
  if (auto it = body.find("stop_token_ids"); it != body.end() && !it->is_null()) {
    if (!it->is_array()) return Bad("stop_token_ids", "must be a list of token ids");
    for (const json& e : *it) {
      std::optional<int64_t> id = Integer(e);
      if (!id || *id < 0 || *id > kInt32) return Bad("stop_token_ids", absl::StrCat("not a token id: ", e.dump()));
      stop_token_ids.push_back(static_cast<int32_t>(*id));
    }
  }
  if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) return Bad("stream_options", "must be an object");
    if (!call.stream) return Bad("stream_options", "only with stream: true");
    for (auto f = it->begin(); f != it->end(); ++f) {
      if (f.key() != "include_usage") return Bad("stream_options", absl::StrCat("unknown field ", f.key()));
      if (!f->is_boolean()) return Bad("stream_options.include_usage", "must be true or false");
      call.include_usage = f->get<bool>();
    }
  }
  if (top_p && *top_p == 0) return Bad("top_p", "must be in (0, 1], got 0");  // gpt2d.v1's 0 would mean unset
  call.n = static_cast<int>(std::min<int64_t>(n.value_or(1), 1 << 20));
  if (logprobs) call.logprobs = static_cast<int>(std::min<int64_t>(*logprobs, 1 << 20));
  for (v1::GenerateRequest& r : call.prompts) {
    r.set_deployment(call.model);
    r.set_n(call.n);
    r.set_echo(call.echo);
    v1::SamplingParams& s = *r.mutable_sampling();
    if (max_tokens) s.set_max_tokens(static_cast<int32_t>(*max_tokens));
    if (temperature) s.set_temperature(static_cast<float>(*temperature));
    if (top_p) s.set_top_p(static_cast<float>(*top_p));
    if (top_k && *top_k > 0) s.set_top_k(static_cast<int32_t>(*top_k));  // vLLM's -1 (and 0): no limit
    if (seed) s.set_seed(static_cast<uint64_t>(*seed));
    for (const std::string& st : stop) s.add_stop(st);
    s.set_ignore_eos(ignore_eos);
    if (min_tokens) s.set_min_tokens(static_cast<int32_t>(*min_tokens));
    for (int32_t id : stop_token_ids) s.add_stop_token_ids(id);
    if (call.logprobs) {
      s.set_logprobs(true);
      s.set_top_logprobs(*call.logprobs);
    }
  }
  return call;
}

std::string TokenText(const Tokenizer& tokenizer, int32_t id) {
  absl::StatusOr<std::string_view> bytes = tokenizer.TokenBytes(static_cast<TokenId>(id));
  if (!bytes.ok()) return "";
  if (ValidUtf8PrefixLength(*bytes) == bytes->size()) return std::string(*bytes);
  std::string out = "bytes:";
  for (unsigned char c : *bytes) absl::StrAppendFormat(&out, "\\x%02x", c);
  return out;
}

ChoiceBuilder::ChoiceBuilder(const Tokenizer& tokenizer, int index, bool echo, std::optional<int> logprobs)
    : tokenizer_(tokenizer), decoder_(tokenizer), index_(index), echo_(echo), logprobs_(logprobs) {
  logprobs_json_ = {{"tokens", json::array()},
                    {"token_logprobs", json::array()},
                    {"top_logprobs", json::array()},
                    {"text_offset", json::array()}};
}

void ChoiceBuilder::AddTokens(const google::protobuf::RepeatedField<int32_t>& ids,
                              const google::protobuf::RepeatedField<float>& lps,
                              const google::protobuf::RepeatedPtrField<v1::TopLogprobs>& tops, json* lp) {
  for (int i = 0; i < ids.size(); ++i) {
    const std::string token = TokenText(tokenizer_, ids[i]);
    (*lp)["tokens"].push_back(token);
    (*lp)["text_offset"].push_back(chars_);
    (*lp)["token_logprobs"].push_back(i < lps.size() && !std::isnan(lps[i]) ? json(lps[i]) : json(nullptr));
    if (i < lps.size() && !std::isnan(lps[i])) {
      json top = json::object();
      if (i < tops.size()) {
        for (int k = 0; k < tops[i].token_ids_size(); ++k) {
          const std::string t = TokenText(tokenizer_, tops[i].token_ids(k));
          if (!top.contains(t)) top[t] = tops[i].logprobs(k);
        }
      }
      if (!top.contains(token)) top[token] = lps[i];  // the chosen token is always there, as OpenAI's
      (*lp)["top_logprobs"].push_back(top);
    } else {
      (*lp)["top_logprobs"].push_back(nullptr);
    }
    // The text offset advances by the token's characters as decoded in sequence; a token that
    // ends inside a character advances it when that character completes.
    if (absl::StatusOr<std::string> text = decoder_.Push(static_cast<TokenId>(ids[i])); text.ok())
      chars_ += Characters(*text);
  }
}

json ChoiceBuilder::Add(const v1::GenerateResponse& piece) {
  json lp = {{"tokens", json::array()},
             {"token_logprobs", json::array()},
             {"top_logprobs", json::array()},
             {"text_offset", json::array()}};
  std::string text;
  if (echo_ && piece.has_prompt()) {
    const v1::Prompt& p = piece.prompt();
    text += p.text();
    prompt_tokens_ = p.token_ids_size();
    AddTokens(p.token_ids(), p.logprobs(), p.top_logprobs(), &lp);
  }
  text += piece.text();
  completion_tokens_ += piece.token_ids_size();
  AddTokens(piece.token_ids(), piece.logprobs(), piece.top_logprobs(), &lp);
  text_ += text;
  for (const char* k : {"tokens", "token_logprobs", "top_logprobs", "text_offset"})
    for (const json& v : lp[k]) logprobs_json_[k].push_back(v);
  if (piece.done()) {
    done_ = true;
    finish_reason_ = FinishReason(piece.finish_reason());
    prompt_tokens_ = piece.usage().prompt_tokens();
    model_ = piece.model();
  }
  return {{"index", index_},
          {"text", text},
          {"logprobs", logprobs_ ? lp : json(nullptr)},
          {"finish_reason", done_ && !finish_reason_.empty() ? json(finish_reason_) : json(nullptr)}};
}

json ChoiceBuilder::Whole() const {
  return {{"index", index_},
          {"text", text_},
          {"logprobs", logprobs_ ? logprobs_json_ : json(nullptr)},
          {"finish_reason", finish_reason_.empty() ? json(nullptr) : json(finish_reason_)}};
}

json Usage(const std::vector<ChoiceBuilder>& choices, int n) {
  int64_t prompt = 0, completion = 0;
  for (size_t i = 0; i < choices.size(); ++i) {
    if (i % static_cast<size_t>(n) == 0) prompt += choices[i].prompt_tokens();  // once per prompt
    completion += choices[i].completion_tokens();
  }
  return {{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
}

namespace {

json Checkpoint(const std::vector<ChoiceBuilder>& choices) {
  for (const ChoiceBuilder& c : choices)
    if (!c.model().job_id().empty() || !c.model().path().empty())
      return {{"job", c.model().job_id()}, {"step", c.model().step()}, {"path", c.model().path()}};
  return nullptr;
}

}  // namespace

json Completion(const std::string& id, int64_t created, const std::string& model,
                const std::vector<ChoiceBuilder>& choices, int n) {
  json out = UsageChunk(id, created, model, choices, n);
  for (const ChoiceBuilder& c : choices) out["choices"].push_back(c.Whole());
  return out;
}

json Chunk(const std::string& id, int64_t created, const std::string& model, json choice, bool with_usage_field) {
  json out = {{"id", id},
              {"object", "text_completion"},
              {"created", created},
              {"model", model},
              {"choices", json::array({std::move(choice)})}};
  if (with_usage_field) out["usage"] = nullptr;
  return out;
}

json UsageChunk(const std::string& id, int64_t created, const std::string& model,
                const std::vector<ChoiceBuilder>& choices, int n) {
  return {{"id", id},
          {"object", "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array()},
          {"usage", Usage(choices, n)},
          {"checkpoint", Checkpoint(choices)}};
}

Error ToError(const absl::Status& status) {
  struct Kind {
    int http;
    const char* type;
    const char* code;
  };
  Kind k{500, "server_error", "internal_error"};
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      k = {400, "invalid_request_error", "invalid_value"};
      break;
    case absl::StatusCode::kUnauthenticated:
      k = {401, "invalid_request_error", "invalid_api_key"};
      break;
    case absl::StatusCode::kPermissionDenied:
      k = {403, "invalid_request_error", "permission_denied"};
      break;
    case absl::StatusCode::kNotFound:
      k = {404, "invalid_request_error", "model_not_found"};
      break;
    case absl::StatusCode::kResourceExhausted:
      k = {429, "rate_limit_error", "queue_full"};
      break;
    case absl::StatusCode::kUnavailable:
      k = {503, "server_error", "no_ready_replica"};
      break;
    case absl::StatusCode::kDeadlineExceeded:
      k = {504, "server_error", "deadline_exceeded"};
      break;
    case absl::StatusCode::kCancelled:
      k = {499, "invalid_request_error", "cancelled"};
      break;
    default:
      break;
  }
  json param = nullptr;
  if (k.http == 400) {
    const std::string m(status.message());
    const size_t end = m.find_first_of(":[ ");
    if (end != std::string::npos && end > 0 && m[end] != ' ') param = m.substr(0, end);
  }
  return {
      k.http,
      {{"error", {{"message", std::string(status.message())}, {"type", k.type}, {"param", param}, {"code", k.code}}}}};
}

std::string NewCompletionId() {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  return absl::StrFormat("cmpl-%016x%016x", rng(), rng());
}

}  // namespace gpt2::openai
