// The OpenAI API's wire format without a socket: request bodies -> gpt2d.v1 requests or a 400
// naming the field, token texts and offsets for `logprobs`, and errors as OpenAI's objects. The
// end-to-end behaviour (the openai SDK, lm-eval) is tests/cluster/test_openai.py.
#include "common/openai_protocol.h"

#include <gtest/gtest.h>

#include <cmath>

namespace gpt2::openai {
namespace {

namespace v1 = ::gpt2d::v1;

std::string Refusal(const std::string& body) {
  absl::StatusOr<CompletionsCall> c = ParseCompletions(body);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << body;
  return std::string(c.status().message());
}

TEST(OpenAiProtocol, EveryPromptShapeBecomesOneRequestPerPrompt) {
  absl::StatusOr<CompletionsCall> c = ParseCompletions(
      R"({"model": "m", "prompt": ["a", [1, 2]], "max_tokens": 0, "echo": true, "logprobs": 3, "n": 2,
          "temperature": 0.5, "top_p": 0.9, "top_k": -1, "seed": -1, "stop": "\n", "stream": true,
          "stream_options": {"include_usage": true}, "ignore_eos": true, "min_tokens": 1,
          "stop_token_ids": [198], "user": "ignored", "presence_penalty": 0})");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->prompts.size(), 2u);
  EXPECT_EQ(c->prompts[0].prompt(), "a");
  EXPECT_EQ(c->prompts[1].prompt_tokens_size(), 2);
  EXPECT_TRUE(c->stream && c->include_usage && c->echo);
  EXPECT_EQ(c->logprobs, 3);
  for (const v1::GenerateRequest& r : c->prompts) {
    EXPECT_EQ(r.deployment(), "m");
    EXPECT_EQ(r.n(), 2);
    EXPECT_TRUE(r.echo());
    const v1::SamplingParams& s = r.sampling();
    EXPECT_TRUE(s.has_max_tokens() && s.max_tokens() == 0);  // an explicit 0 stays 0
    EXPECT_FLOAT_EQ(s.temperature(), 0.5f);
    EXPECT_EQ(s.top_k(), 0);  // vLLM's -1: no limit
    EXPECT_EQ(s.seed(), UINT64_MAX);
    EXPECT_TRUE(s.logprobs());
    EXPECT_EQ(s.top_logprobs(), 3);
    EXPECT_EQ(s.stop_size(), 1);
    EXPECT_TRUE(s.ignore_eos());
    EXPECT_EQ(s.min_tokens(), 1);
    EXPECT_EQ(s.stop_token_ids(0), 198);
  }
  c = ParseCompletions(R"({"prompt": [[5], [6, 7]]})");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->prompts.size(), 2u);
  EXPECT_FALSE(c->prompts[0].sampling().has_max_tokens());  // the engine's default applies
  EXPECT_FALSE(c->logprobs.has_value());
}

TEST(OpenAiProtocol, BadBodiesNameTheField) {
  EXPECT_EQ(Refusal("not json"), "the body is not JSON");
  EXPECT_EQ(Refusal("[1]"), "the body must be a JSON object");
  EXPECT_EQ(Refusal(R"({"max_tokens": 3})"), "prompt: required");
  EXPECT_EQ(Refusal(R"({"prompt": "x", "max_tokens": "3"})"), "max_tokens: must be an integer, got \"3\"");
  EXPECT_EQ(Refusal(R"({"prompt": "x", "max_tokens": 2.5})"), "max_tokens: must be an integer, got 2.5");
  EXPECT_EQ(Refusal(R"({"prompt": "x", "temperature": "hot"})"), "temperature: must be a number, got \"hot\"");
  EXPECT_EQ(Refusal(R"({"prompt": "x", "stream": 1})"), "stream: must be true or false, got 1");
  EXPECT_EQ(Refusal(R"({"prompt": "x", "bogus": 1, "other": 2})"), "bogus: unknown field(s) bogus, other");
  EXPECT_EQ(Refusal(R"({"prompt": []})").rfind("prompt:", 0), 0u);
  EXPECT_EQ(Refusal(R"({"prompt": [1, -2]})"), "prompt: token 1 is not a token id: -2");
  EXPECT_EQ(Refusal(R"({"prompt": "x", "stop": [1]})"), "stop: must be a string or a list of strings, got 1");
  EXPECT_EQ(Refusal(R"({"prompt": "x", "n": 0})"), "n: must be in [1, 2147483647], got 0");
  EXPECT_EQ(Refusal(R"({"prompt": "x", "stream_options": {"include_usage": true}})"),
            "stream_options: only with stream: true");
  EXPECT_EQ(Refusal(R"({"prompt": "x", "top_p": 0})"), "top_p: must be in (0, 1], got 0");
  // The error object names the field as `param`.
  Error e = ToError(absl::InvalidArgumentError("max_tokens: must be > 0"));
  EXPECT_EQ(e.http_status, 400);
  EXPECT_EQ(e.body["error"]["param"], "max_tokens");
  EXPECT_EQ(e.body["error"]["type"], "invalid_request_error");
  EXPECT_TRUE(ToError(absl::InvalidArgumentError("the body is not JSON")).body["error"]["param"].is_null());
  EXPECT_EQ(ToError(absl::UnauthenticatedError("no")).http_status, 401);
  EXPECT_EQ(ToError(absl::NotFoundError("no")).http_status, 404);
  EXPECT_EQ(ToError(absl::ResourceExhaustedError("full")).http_status, 429);
  EXPECT_EQ(ToError(absl::UnavailableError("none")).http_status, 503);
  EXPECT_EQ(ToError(absl::DeadlineExceededError("late")).http_status, 504);
  EXPECT_EQ(ToError(absl::InternalError("fault")).http_status, 500);
}

class OpenAiChoices : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<Tokenizer> loaded = LoadTokenizer(GPT2D_DEFAULT_VOCAB);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    tok_ = new Tokenizer(*std::move(loaded));
  }
  static void TearDownTestSuite() { delete tok_; }
  static Tokenizer* tok_;
};
Tokenizer* OpenAiChoices::tok_ = nullptr;

TEST_F(OpenAiChoices, TokenTextsAndOffsetsFollowTheDecodedText) {
  // "é日" as GPT-2 tokens: some of them are parts of a character.
  const std::vector<TokenId> ids = tok_->EncodeOrdinary("Hi é日本");
  ChoiceBuilder b(*tok_, 0, /*echo=*/false, /*logprobs=*/0);
  v1::GenerateResponse piece;
  for (TokenId id : ids) {
    piece.add_token_ids(static_cast<int32_t>(id));
    piece.add_logprobs(-1.5f);
  }
  piece.set_text("Hi é日本");
  piece.set_done(true);
  piece.set_finish_reason(v1::FINISH_REASON_EOS);
  nlohmann::json delta = b.Add(piece);
  EXPECT_EQ(delta["text"], "Hi é日本");
  EXPECT_EQ(delta["finish_reason"], "stop");
  const nlohmann::json& lp = delta["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), ids.size());
  std::string joined;
  bool partial = false;
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string t = lp["tokens"][i];
    partial = partial || t.rfind("bytes:", 0) == 0;
    if (t.rfind("bytes:", 0) != 0) joined += t;
    EXPECT_EQ(lp["top_logprobs"][i][t], -1.5f);  // the chosen token is always among the alternatives
  }
  EXPECT_TRUE(partial) << lp.dump();  // 日 or 本 spans tokens in GPT-2's vocabulary
  // Offsets count characters of the text before each token: "Hi" 0, " é" 2, ...
  EXPECT_EQ(lp["text_offset"][0], 0);
  EXPECT_EQ(lp["text_offset"][1], 2);
  for (size_t i = 1; i < ids.size(); ++i) EXPECT_GE(lp["text_offset"][i], lp["text_offset"][i - 1]);
  EXPECT_LE(lp["text_offset"].back().get<int64_t>(), 5);
  EXPECT_EQ(TokenText(*tok_, 15496), "Hello");
}

TEST_F(OpenAiChoices, EchoPutsThePromptFirstWithANullFirstScore) {
  ChoiceBuilder b(*tok_, 3, /*echo=*/true, /*logprobs=*/1);
  v1::GenerateResponse piece;
  v1::Prompt& p = *piece.mutable_prompt();
  p.set_text("Hello world");
  p.add_token_ids(15496);
  p.add_token_ids(995);
  p.add_logprobs(std::nanf(""));
  p.add_logprobs(-2.0f);
  p.add_top_logprobs();
  v1::TopLogprobs& top = *p.add_top_logprobs();
  top.add_token_ids(11);
  top.add_logprobs(-1.0f);
  piece.set_done(true);
  piece.set_finish_reason(v1::FINISH_REASON_LENGTH);
  piece.mutable_usage()->set_prompt_tokens(2);
  b.Add(piece);
  nlohmann::json whole = b.Whole();
  EXPECT_EQ(whole["index"], 3);
  EXPECT_EQ(whole["text"], "Hello world");
  EXPECT_EQ(whole["finish_reason"], "length");
  EXPECT_TRUE(whole["logprobs"]["token_logprobs"][0].is_null());
  EXPECT_TRUE(whole["logprobs"]["top_logprobs"][0].is_null());
  EXPECT_EQ(whole["logprobs"]["token_logprobs"][1], -2.0f);
  EXPECT_EQ(whole["logprobs"]["top_logprobs"][1].size(), 2u);  // "," and the chosen " world"
  EXPECT_EQ(whole["logprobs"]["text_offset"][1], 5);
  const nlohmann::json usage = Usage({b}, 1);
  EXPECT_EQ(usage["prompt_tokens"], 2);
  EXPECT_EQ(usage["total_tokens"], 2);
}

}  // namespace
}  // namespace gpt2::openai
