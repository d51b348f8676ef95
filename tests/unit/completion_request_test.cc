// The serving APIs' validation edge: defaults, the API's field names in every refusal, prompts as
// text or ids, the engine's limits. No model, no RPC: what gRPC's GenerateService and the HTTP
// API both call.
#include "worker/serve/completion_request.h"

#include <gtest/gtest.h>

namespace gpt2 {
namespace {

class CompletionRequestTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<Tokenizer> loaded = LoadTokenizer(GPT2D_DEFAULT_VOCAB);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    tok_ = new Tokenizer(*std::move(loaded));
  }
  static void TearDownTestSuite() { delete tok_; }
  static absl::StatusOr<Completion> To(const CompletionRequest& r, int64_t max_context = 0) {
    GPTConfig c;  // GPT-2 124M: 50257 tokens, 1024 positions
    return ToCompletion(r, GrpcApiFields(), *tok_, c, max_context);
  }
  static std::string Refusal(const CompletionRequest& r, int64_t max_context = 0) {
    absl::StatusOr<Completion> c = To(r, max_context);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(c.status().message());
  }
  static Tokenizer* tok_;
};
Tokenizer* CompletionRequestTest::tok_ = nullptr;

TEST_F(CompletionRequestTest, WhatARequestLeavesOutTakesTheOneTableOfDefaults) {
  CompletionRequest r;
  r.prompt = "Hello, world";
  absl::StatusOr<Completion> c = To(r);
  ASSERT_TRUE(c.ok()) << c.status();
  const GenerationParams defaults;
  EXPECT_EQ(c->params.prompt, (std::vector<int32_t>{15496, 11, 995}));  // tiktoken's ids
  EXPECT_EQ(c->params.temperature, defaults.temperature);
  EXPECT_EQ(c->params.top_k, defaults.top_k);
  EXPECT_EQ(c->params.top_p, defaults.top_p);
  EXPECT_EQ(c->params.max_tokens, kDefaultMaxTokens);
  EXPECT_EQ(kDefaultMaxTokens, 16);
  EXPECT_FALSE(c->params.ignore_eos);
  EXPECT_FALSE(c->logprobs);
  EXPECT_TRUE(c->stop.empty());
  // An empty prompt starts a new document; ids pass through; a seed is drawn when none is given.
  absl::StatusOr<Completion> empty = To({});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->params.prompt, (std::vector<int32_t>{50256}));
  r.prompt.reset();
  r.prompt_tokens = std::vector<int32_t>{464, 3290};
  r.temperature = 0;
  r.top_k = 40;
  r.top_p = 0.9;
  r.seed = 7;
  r.max_tokens = 100;
  r.stop = {"\n\n"};
  r.logprobs = r.ignore_eos = true;
  c = To(r);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->params.prompt, (std::vector<int32_t>{464, 3290}));
  EXPECT_EQ(c->params.temperature, 0);
  EXPECT_EQ(c->params.top_k, 40);
  EXPECT_EQ(c->params.top_p, 0.9);
  EXPECT_EQ(c->params.seed, 7u);
  EXPECT_EQ(c->params.max_tokens, 100);
  EXPECT_TRUE(c->params.ignore_eos && c->logprobs);
  EXPECT_EQ(c->stop, (std::vector<std::string>{"\n\n"}));
}

TEST_F(CompletionRequestTest, RefusalsNameTheApisField) {
  auto with = [](auto set) {
    CompletionRequest r;
    r.prompt = "x";
    set(r);
    return r;
  };
  EXPECT_EQ(Refusal(with([](auto& r) { r.temperature = -1; })),
            "sampling.temperature: must be a finite number >= 0, got -1");
  EXPECT_EQ(Refusal(with([](auto& r) { r.top_k = -2; })), "sampling.top_k: must be >= 0, got -2");
  EXPECT_EQ(Refusal(with([](auto& r) { r.top_p = 1.5; })), "sampling.top_p: must be in (0, 1], got 1.5");
  EXPECT_EQ(Refusal(with([](auto& r) { r.max_tokens = 0; })),
            "sampling.max_tokens: must be > 0 (0 only with echo: the prompt alone), got 0");
  EXPECT_EQ(Refusal(with([](auto& r) { r.n = 17; })), "n: must be in [1, 16], got 17");
  EXPECT_EQ(Refusal(with([](auto& r) { r.min_tokens = 20; })),
            "sampling.min_tokens: must be in [0, max_tokens = 16], got 20");
  EXPECT_EQ(Refusal(with([](auto& r) { r.stop_token_ids = {5, 50257}; })),
            "sampling.stop_token_ids[1]: 50257 is not a token id (0..50256)");
  EXPECT_EQ(Refusal(with([](auto& r) {
              r.logprobs = true;
              r.top_logprobs = 21;
            })),
            "sampling.top_logprobs: must be in [0, 20], got 21");
  EXPECT_EQ(Refusal(with([](auto& r) { r.max_tokens = 1024; })),
            "sampling.max_tokens: the prompt (1 tokens) plus 1024 new tokens exceed the context of 1024 of the model");
  EXPECT_EQ(Refusal(with([](auto& r) { r.max_tokens = 200; }), /*max_context=*/128),
            "sampling.max_tokens: the prompt (1 tokens) plus 200 new tokens exceed the context of 128 served");
  EXPECT_EQ(Refusal(with([](auto& r) { r.stop = {"a", ""}; })), "sampling.stop[1]: empty");
  EXPECT_EQ(Refusal(with([](auto& r) { r.stop.assign(9, "a"); })), "sampling.stop: at most 8 strings, got 9");
  EXPECT_EQ(Refusal(with([](auto& r) { r.prompt_tokens = std::vector<int32_t>{1}; })),
            "prompt: set either prompt or prompt_tokens, not both");
  CompletionRequest ids;
  ids.prompt_tokens = std::vector<int32_t>{464, 50257};
  EXPECT_EQ(Refusal(ids), "prompt_tokens[1]: 50257 is not a token id (0..50256)");
  // The OpenAI API's names: its `logprobs` is the number of alternatives.
  CompletionRequest r = with([](auto& r) { r.top_p = 0; });
  EXPECT_EQ(ToCompletion(r, OpenAiApiFields(), *tok_, GPTConfig{}, 0).status().message(),
            "top_p: must be in (0, 1], got 0");
  r = with([](auto& r) {
    r.logprobs = true;
    r.top_logprobs = 30;
  });
  EXPECT_EQ(ToCompletion(r, OpenAiApiFields(), *tok_, GPTConfig{}, 0).status().message(),
            "logprobs: must be in [0, 20], got 30");
}

TEST_F(CompletionRequestTest, EchoScoresThePromptAndNAsksForChoices) {
  CompletionRequest r;
  r.prompt = "Hello, world";
  r.echo = r.logprobs = true;
  r.max_tokens = 0;  // only with echo: the prompt's log-likelihood
  r.n = 3;
  absl::StatusOr<Completion> c = To(r);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->echo && c->params.prompt_logprobs);
  EXPECT_EQ(c->params.max_tokens, 0);
  EXPECT_EQ(c->n, 3);
  r.logprobs = false;  // echo alone returns the text: no scores computed unless max_tokens is 0
  r.max_tokens = 4;
  c = To(r);
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->params.prompt_logprobs);
  r.echo = false;
  r.logprobs = true;
  r.top_logprobs = 5;
  r.min_tokens = 2;
  r.stop_token_ids = {198};
  c = To(r);
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->params.prompt_logprobs);
  EXPECT_EQ(c->params.top_logprobs, 5);
  EXPECT_EQ(c->params.min_tokens, 2);
  EXPECT_EQ(c->params.stop_token_ids, (std::vector<int32_t>{198}));
}

}  // namespace
}  // namespace gpt2
