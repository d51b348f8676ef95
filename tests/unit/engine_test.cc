// The serving engine on a small random GPT-2: batching never changes a result (greedy and seeded
// sampling, requests of different lengths arriving at different times), greedy tokens are the
// argmax of a plain full-context forward, and cancellation, a full queue and bad parameters
// behave as documented.
#include "worker/serve/engine.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "worker/model/gpt2.h"
#include "worker/model/hf_checkpoint.h"
#include "worker/serve/row_linear.h"

namespace gpt2 {
namespace {

// Collects one request's events; Wait() returns once the last one arrived. With `hold_at` > 0
// the callback of that token blocks (and with it the engine's thread) until Resume(), so a test
// can act while the request surely still holds its slot.
struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::vector<std::vector<std::pair<int32_t, float>>> tops;
  std::vector<TokenEvent> prompt;  // prompt_logprobs' events
  FinishReason finish = FinishReason::kNone;
  std::string error;
  size_t hold_at = 0;
  bool held = false, resumed = false;
  Engine::Callback Callback() {
    return [this](const TokenEvent& e) {
      std::unique_lock lock(mu);
      if (e.prompt) {
        EXPECT_TRUE(tokens.empty()) << "a prompt event after a generated token";
        EXPECT_EQ(e.finish, FinishReason::kNone);
        prompt.push_back(e);
        return;
      }
      if (e.token >= 0) {
        tokens.push_back(e.token);
        logprobs.push_back(e.logprob);
        tops.push_back(e.top);
      }
      finish = e.finish;
      error = e.error;
      if (hold_at > 0 && tokens.size() == hold_at && e.token >= 0) {
        held = true;
        cv.notify_all();
        cv.wait(lock, [&] { return resumed; });
      }
      cv.notify_all();
    };
  }
  void WaitUntilHeld() {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return held; }));
  }
  void Resume() {
    std::lock_guard lock(mu);
    resumed = true;
    cv.notify_all();
  }
  void Wait() {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return finish != FinishReason::kNone; }));
  }
  void WaitForTokens(size_t n) {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return tokens.size() >= n; }));
  }
};

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(
        (std::filesystem::temp_directory_path() / ("engine_test_" + std::to_string(::getpid()))).string());
    GPTConfig c;
    c.n_layer = 2;
    c.n_head = 4;
    c.n_embd = 64;
    c.n_positions = 64;
    torch::manual_seed(7);
    GPT model(c);
    ASSERT_TRUE(SaveHfModel(model, *dir_).ok());
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  static std::unique_ptr<Engine> Make(int64_t max_slots = 16, int64_t max_queue = 64, EngineOptions o = {}) {
    o.max_slots = max_slots;
    o.max_queue = max_queue;
    absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Load(*dir_, o);
    EXPECT_TRUE(e.ok()) << e.status();
    return *std::move(e);
  }
  static std::vector<GenerationParams> Requests() {
    std::mt19937 rng(3);
    std::vector<GenerationParams> out;
    for (int i = 0; i < 16; ++i) {
      GenerationParams p;
      const int len = 1 + static_cast<int>(rng() % 24);
      for (int t = 0; t < len; ++t) p.prompt.push_back(static_cast<int32_t>(rng() % 50257));
      p.max_tokens = 8 + static_cast<int>(rng() % 13);
      p.ignore_eos = true;
      if (i % 2 == 0) {
        p.temperature = 0;
      } else {
        p.temperature = 0.9;
        p.top_k = 50;
        p.top_p = 0.95;
        p.seed = 1000 + i;
      }
      out.push_back(p);
    }
    return out;
  }
  static std::string* dir_;
};
std::string* EngineTest::dir_ = nullptr;

// Each request alone with the default prefill budget, then all of them arriving in waves into a
// running batch, with prompts longer than the budget computed in chunks beside running streams:
// the same tokens and the same float logprobs, for every weight format.
class BatchInvarianceTest : public EngineTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(BatchInvarianceTest, BatchingAndChunkingNeverChangeTheTokens) {
  const std::vector<GenerationParams> requests = Requests();
  EngineOptions o;
  o.weights = GetParam();
  std::vector<std::vector<int32_t>> alone;
  std::vector<std::vector<float>> alone_logprobs;
  {
    auto engine = Make(16, 64, o);
    for (const GenerationParams& p : requests) {
      Collector c;
      ASSERT_TRUE(engine->Submit(p, c.Callback()).ok());
      c.Wait();
      EXPECT_EQ(c.finish, FinishReason::kLength);
      EXPECT_EQ(static_cast<int64_t>(c.tokens.size()), p.max_tokens);
      alone.push_back(c.tokens);
      alone_logprobs.push_back(c.logprobs);
    }
  }
  // Where rows are computed on their own (RowLinear), a prompt's chunks do not change its rows
  // either; elsewhere chunk boundaries are the prompt's own, so the reference uses the same budget.
  o.max_prefill_tokens = 7;
  std::vector<std::vector<int32_t>> reference = alone;
  std::vector<std::vector<float>> reference_logprobs = alone_logprobs;
  if (!RowLinearAvailable()) {
    auto engine = Make(16, 64, o);
    for (size_t i = 0; i < requests.size(); ++i) {
      Collector c;
      ASSERT_TRUE(engine->Submit(requests[i], c.Callback()).ok());
      c.Wait();
      reference[i] = c.tokens;
      reference_logprobs[i] = c.logprobs;
    }
  }
  auto engine = Make(16, 64, o);
  std::vector<std::unique_ptr<Collector>> batched;
  for (size_t i = 0; i < requests.size(); ++i) {
    batched.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(engine->Submit(requests[i], batched.back()->Callback()).ok());
    if (i % 4 == 3) batched.back()->WaitForTokens(2);  // the next ones join a running batch
  }
  int64_t decoded = 0, chunks = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    chunks += (static_cast<int64_t>(requests[i].prompt.size()) + 6) / 7;
    batched[i]->Wait();
    EXPECT_EQ(batched[i]->tokens, reference[i]) << "request " << i;
    // Bit-identical arithmetic, not just the same choices: the logprobs are equal floats.
    EXPECT_EQ(batched[i]->logprobs, reference_logprobs[i]) << "request " << i;
    decoded += static_cast<int64_t>(batched[i]->tokens.size()) - 1;  // the first token comes with the prompt
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the engine publishes after its step
  EXPECT_EQ(engine->stats().active, 0);
  // They really ran together: fewer decode steps than tokens decoded, and fewer iterations with
  // prompt rows than chunks (prompts longer than 7 tokens took several).
  EXPECT_LT(engine->stats().decode_steps, decoded / 2);
  EXPECT_LT(engine->stats().prefills, chunks);
  EXPECT_GT(chunks, static_cast<int64_t>(requests.size()));
}

INSTANTIATE_TEST_SUITE_P(Weights, BatchInvarianceTest, ::testing::Values("fp32", "bf16", "int8", "w8a8"));

// Requests sharing a prompt prefix (a system prompt) reuse its KV rows, from a finished request's
// slot or by copy from a running one, and give exactly what they give with prefix caching off.
TEST_F(EngineTest, PrefixHitsChangeNothing) {
  std::mt19937 rng(5);
  std::vector<int32_t> system;
  for (int t = 0; t < 20; ++t) system.push_back(static_cast<int32_t>(rng() % 50257));
  std::vector<GenerationParams> requests;
  for (int i = 0; i < 6; ++i) {
    GenerationParams p;
    p.prompt = system;
    for (int t = 0; t < 1 + i % 4; ++t) p.prompt.push_back(static_cast<int32_t>(rng() % 50257));
    p.max_tokens = 10;
    p.ignore_eos = true;
    p.temperature = i % 2 ? 0.8 : 0;
    p.seed = 77 + i;
    requests.push_back(p);
  }
  requests.push_back(requests[1]);  // the same prompt again: all but its last token reused
  EngineOptions off;
  off.prefix_caching = false;
  std::vector<Collector> want(requests.size());
  {
    auto engine = Make(4, 64, off);
    for (size_t i = 0; i < requests.size(); ++i) {
      ASSERT_TRUE(engine->Submit(requests[i], want[i].Callback()).ok());
      want[i].Wait();
    }
    EXPECT_EQ(engine->stats().prefix_hit_tokens, 0);
  }
  std::atomic<int64_t> reused{0};
  EngineOptions on;
  on.on_admit = [&](int64_t, int64_t r) { reused += r; };
  auto engine = Make(4, 64, on);
  std::vector<Collector> got(requests.size());
  ASSERT_TRUE(engine->Submit(requests[0], got[0].Callback()).ok());
  got[0].Wait();  // its slot keeps the system prompt's rows
  for (size_t i = 1; i < requests.size(); ++i) {
    ASSERT_TRUE(engine->Submit(requests[i], got[i].Callback()).ok());
    if (i == 1) got[1].WaitForTokens(1);  // running: the next ones copy from it or reuse in place
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    got[i].Wait();
    EXPECT_EQ(got[i].tokens, want[i].tokens) << "request " << i;
    EXPECT_EQ(got[i].logprobs, want[i].logprobs) << "request " << i;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const EngineStats st = engine->stats();
  EXPECT_GE(st.prefix_hit_tokens, 20 * 5);  // every request after the first reused the system prompt
  EXPECT_EQ(st.prefix_hit_tokens, reused.load());
  int64_t prompt = 0;
  for (const auto& p : requests) prompt += static_cast<int64_t>(p.prompt.size());
  EXPECT_EQ(st.prompt_tokens, prompt);
}

// Reduced-precision weights change the numbers, boundedly: a request's logprobs under bf16 and
// int8 weights stay near fp32's along the same tokens (a random model's distribution is nearly
// flat, so the greedy choice itself may differ; tests/reference compares a trained model's).
TEST_F(EngineTest, ReducedPrecisionWeightsStayNearFp32) {
  GenerationParams p = Requests()[0];
  p.max_tokens = 1;
  std::map<std::string, float> logprob;
  for (const char* w : {"fp32", "bf16", "int8", "w8a8"}) {
    EngineOptions o;
    o.weights = w;
    auto engine = Make(4, 64, o);
    Collector c;
    ASSERT_TRUE(engine->Submit(p, c.Callback()).ok());
    c.Wait();
    ASSERT_EQ(c.logprobs.size(), 1u);
    logprob[w] = c.logprobs[0];
  }
  EXPECT_NE(logprob["bf16"], logprob["fp32"]);  // the weights really changed
  EXPECT_NE(logprob["int8"], logprob["fp32"]);
  EXPECT_NEAR(logprob["bf16"], logprob["fp32"], 0.05);
  EXPECT_NEAR(logprob["int8"], logprob["fp32"], 0.1);
  EXPECT_NE(logprob["w8a8"], logprob["int8"]);  // activations quantized too
  EXPECT_NEAR(logprob["w8a8"], logprob["fp32"], 0.2);
  EngineOptions bad;
  bad.weights = "fp8";
  EXPECT_EQ(Engine::Load(*dir_, bad).status().message(), "weights: expected fp32, bf16, int8 or w8a8, got fp8");
}

TEST_F(EngineTest, GreedyTokensAreTheArgmaxOfAFullForward) {
  auto engine = Make();
  absl::StatusOr<GPT> model = LoadHfModel(*dir_);
  ASSERT_TRUE(model.ok());
  torch::InferenceMode inference;
  for (const GenerationParams& p : Requests()) {
    if (p.temperature != 0) continue;
    Collector c;
    ASSERT_TRUE(engine->Submit(p, c.Callback()).ok());
    c.Wait();
    std::vector<int64_t> ids(p.prompt.begin(), p.prompt.end());
    for (size_t i = 0; i < c.tokens.size(); ++i) {
      at::Tensor logits = (*model)->forward(torch::tensor(ids).view({1, -1}))[0][-1].slice(0, 0, 50257);
      at::Tensor logp = torch::log_softmax(logits, 0);
      // The same token, or a tie within float rounding of the cached path.
      EXPECT_GE(logits[c.tokens[i]].item<float>(), logits.max().item<float>() - 1e-4f) << "step " << i;
      EXPECT_NEAR(c.logprobs[i], logp[c.tokens[i]].item<float>(), 1e-4) << "step " << i;
      ids.push_back(c.tokens[i]);
    }
  }
}

// Prompt log-probabilities (how a harness scores a continuation) are those of a plain full forward,
// with the alternatives its top-k gives, and never depend on chunking or on what else runs.
TEST_F(EngineTest, PromptLogprobsAreThoseOfAFullForwardWhateverTheBatch) {
  absl::StatusOr<GPT> model = LoadHfModel(*dir_);
  ASSERT_TRUE(model.ok());
  GenerationParams p;
  std::mt19937 rng(11);
  for (int t = 0; t < 30; ++t) p.prompt.push_back(static_cast<int32_t>(rng() % 50257));
  p.prompt_logprobs = true;
  p.top_logprobs = 3;
  p.temperature = 0;
  p.ignore_eos = true;
  auto run = [&](int64_t budget, bool traffic, int64_t max_tokens) {
    EngineOptions o;
    o.max_prefill_tokens = budget;
    auto engine = Make(16, 64, o);
    std::vector<std::unique_ptr<Collector>> others;
    if (traffic) {  // requests already decoding, and a prompt sharing this one's prefix
      for (GenerationParams q : Requests()) {
        q.max_tokens = 20;
        others.push_back(std::make_unique<Collector>());
        EXPECT_TRUE(engine->Submit(q, others.back()->Callback()).ok());
      }
      GenerationParams prefix = p;
      prefix.prompt_logprobs = false;
      prefix.max_tokens = 4;
      others.push_back(std::make_unique<Collector>());
      EXPECT_TRUE(engine->Submit(prefix, others.back()->Callback()).ok());
      others.front()->WaitForTokens(2);
    }
    GenerationParams q = p;
    q.max_tokens = max_tokens;
    Collector c;
    EXPECT_TRUE(engine->Submit(q, c.Callback()).ok());
    c.Wait();
    for (auto& o : others) o->Wait();
    return std::make_pair(std::move(c.prompt), c.tokens);
  };
  auto [alone, alone_tokens] = run(512, false, 2);
  ASSERT_EQ(alone.size(), p.prompt.size() - 1);
  torch::InferenceMode inference;
  std::vector<int64_t> ids(p.prompt.begin(), p.prompt.end());
  at::Tensor logp =
      torch::log_softmax((*model)->forward(torch::tensor(ids).view({1, -1}))[0].slice(1, 0, 50257), 1);  // (T,V)
  for (size_t i = 0; i < alone.size(); ++i) {
    EXPECT_EQ(alone[i].token, p.prompt[i + 1]);
    EXPECT_NEAR(alone[i].logprob, logp[static_cast<int64_t>(i)][p.prompt[i + 1]].item<float>(), 1e-4) << i;
    ASSERT_EQ(alone[i].top.size(), 3u);
    at::Tensor top = std::get<1>(logp[static_cast<int64_t>(i)].topk(3));
    for (int k = 0; k < 3; ++k) EXPECT_EQ(alone[i].top[k].first, top[k].item<int64_t>()) << i;
    EXPECT_GE(alone[i].top[0].second, alone[i].top[1].second);
  }
  EXPECT_EQ(alone_tokens.size(), 2u);
  for (auto [budget, traffic] : {std::pair{7, true}, std::pair{512, true}}) {
    auto [other, other_tokens] = run(budget, traffic, 2);
    ASSERT_EQ(other.size(), alone.size());
    for (size_t i = 0; i < alone.size(); ++i) {
      EXPECT_EQ(other[i].logprob, alone[i].logprob) << "budget " << budget << " position " << i;  // bit for bit
      EXPECT_EQ(other[i].top, alone[i].top);
    }
    EXPECT_EQ(other_tokens, alone_tokens);
  }
  // max_tokens 0: the prompt alone.
  auto [scored, none] = run(512, false, 0);
  EXPECT_EQ(scored.size(), alone.size());
  EXPECT_TRUE(none.empty());
}

// stop_token_ids end a request without returning the token; min_tokens keeps them (and end of
// text) from being chosen before.
TEST_F(EngineTest, StopTokenIdsAndMinTokens) {
  auto engine = Make();
  GenerationParams p = Requests()[0];
  p.max_tokens = 6;
  p.top_logprobs = 2;
  auto run = [&](const GenerationParams& q) {
    Collector c;
    EXPECT_TRUE(engine->Submit(q, c.Callback()).ok());
    c.Wait();
    return std::make_pair(c.tokens, c.finish);
  };
  Collector free_run;
  ASSERT_TRUE(engine->Submit(p, free_run.Callback()).ok());
  free_run.Wait();
  const std::vector<int32_t> greedy = free_run.tokens;
  ASSERT_EQ(greedy.size(), 6u);
  for (const auto& top : free_run.tops) {
    ASSERT_EQ(top.size(), 2u);
    EXPECT_GE(top[0].second, top[1].second);
  }
  EXPECT_EQ(free_run.tops[0][0].first, greedy[0]);  // greedy takes the most likely
  GenerationParams q = p;
  q.stop_token_ids = {greedy[2]};
  auto [stopped, why] = run(q);
  const auto first = static_cast<size_t>(std::find(greedy.begin(), greedy.end(), greedy[2]) - greedy.begin());
  EXPECT_EQ(stopped, std::vector<int32_t>(greedy.begin(), greedy.begin() + static_cast<ptrdiff_t>(first)));
  EXPECT_EQ(why, FinishReason::kStop);
  q.stop_token_ids = {greedy[0]};
  q.min_tokens = 1;
  auto [held, reason] = run(q);
  ASSERT_FALSE(held.empty());
  EXPECT_NE(held[0], greedy[0]);  // banned at the first position: the runner-up
  EXPECT_EQ(held[0], free_run.tops[0][1].first);
  q.min_tokens = 7;  // > max_tokens
  EXPECT_EQ(engine->Submit(q, [](const TokenEvent&) {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(EngineTest, CancelFreesTheSlotWithinAStep) {
  auto engine = Make(/*max_slots=*/1);
  GenerationParams p;
  p.prompt = {464};
  p.max_tokens = 60;
  p.ignore_eos = true;
  Collector c;
  c.hold_at = 2;
  absl::StatusOr<int64_t> id = engine->Submit(p, c.Callback());
  ASSERT_TRUE(id.ok());
  c.WaitUntilHeld();
  engine->Cancel(*id);
  c.Resume();
  c.Wait();
  EXPECT_EQ(c.finish, FinishReason::kCancelled);
  EXPECT_LE(c.tokens.size(), 3u);  // the step under way finishes, the next one sees the cancel
  // The slot is free again: the next request runs to the end.
  p.max_tokens = 3;
  Collector d;
  ASSERT_TRUE(engine->Submit(p, d.Callback()).ok());
  d.Wait();
  EXPECT_EQ(d.finish, FinishReason::kLength);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(engine->stats().active, 0);
  EXPECT_EQ(engine->stats().kv_cache_usage, 0);
}

TEST_F(EngineTest, AFullQueueIsRefusedAtOnce) {
  auto engine = Make(/*max_slots=*/1, /*max_queue=*/1);
  GenerationParams p;
  p.prompt = {464};
  p.max_tokens = 60;
  p.ignore_eos = true;
  Collector running, waiting;
  running.hold_at = 1;
  absl::StatusOr<int64_t> a = engine->Submit(p, running.Callback());
  ASSERT_TRUE(a.ok());
  running.WaitUntilHeld();  // it holds the only slot
  absl::StatusOr<int64_t> b = engine->Submit(p, waiting.Callback());
  ASSERT_TRUE(b.ok());
  Collector refused;
  EXPECT_EQ(engine->Submit(p, refused.Callback()).status().code(), absl::StatusCode::kResourceExhausted);
  engine->Cancel(*a);
  engine->Cancel(*b);
  running.Resume();
  running.Wait();
  waiting.Wait();
  EXPECT_EQ(waiting.finish, FinishReason::kCancelled);
}

TEST_F(EngineTest, BadParametersNameTheField) {
  auto engine = Make();
  auto refused = [&](GenerationParams p) {
    Collector c;
    absl::Status s = engine->Submit(std::move(p), c.Callback()).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    return std::string(s.message());
  };
  GenerationParams ok;
  ok.prompt = {1, 2, 3};
  GenerationParams p = ok;
  p.temperature = -1;
  EXPECT_EQ(refused(p).rfind("temperature:", 0), 0u);
  p = ok;
  p.top_p = 0;
  EXPECT_EQ(refused(p).rfind("top_p:", 0), 0u);
  p = ok;
  p.top_k = -2;
  EXPECT_EQ(refused(p).rfind("top_k:", 0), 0u);
  p = ok;
  p.max_tokens = 62;  // 3 + 62 > 64
  EXPECT_EQ(refused(p).rfind("max_tokens:", 0), 0u);
  p = ok;
  p.prompt = {50257};
  EXPECT_EQ(refused(p).rfind("prompt_tokens[0]:", 0), 0u);
  p = ok;
  p.prompt = {};
  EXPECT_EQ(refused(p).rfind("prompt:", 0), 0u);
}

}  // namespace
}  // namespace gpt2

namespace gpt2 {
namespace {

TEST_F(EngineTest, AShorterServingContextBoundsRequestsAndStillMatchesTheFullOne) {
  EngineOptions o;
  o.max_slots = 4;
  o.max_context = 16;
  absl::StatusOr<std::unique_ptr<Engine>> short_engine = Engine::Load(*dir_, o);
  ASSERT_TRUE(short_engine.ok()) << short_engine.status();
  EXPECT_EQ((*short_engine)->max_context(), 16);
  GenerationParams p;
  p.prompt = {10, 20, 30, 40, 50, 60};
  p.max_tokens = 11;  // 6 + 11 > 16
  p.temperature = 0;
  p.ignore_eos = true;
  Collector refused;
  absl::Status s = (*short_engine)->Submit(p, refused.Callback()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("context of 16"), std::string::npos) << s;
  p.max_tokens = 10;
  Collector a, b;
  ASSERT_TRUE((*short_engine)->Submit(p, a.Callback()).ok());
  a.Wait();
  auto full = Make();
  ASSERT_TRUE(full->Submit(p, b.Callback()).ok());
  b.Wait();
  // Attention reads only the request's own positions, so the serving context does not enter the
  // arithmetic; the two engines' slot counts (4 and 16) may calibrate different row counts, so
  // the tokens are equal up to a tie within rounding; on this model, equal.
  EXPECT_EQ(a.tokens, b.tokens);
}

}  // namespace
}  // namespace gpt2

namespace gpt2 {
namespace {

// A fault in a step (a c10::Error, out of memory) ends that step's requests with kError and is
// reported; the engine goes on, and what it computes afterwards is what a healthy engine computes.
TEST_F(EngineTest, AFaultyStepEndsItsRequestsAndTheEngineGoesOn) {
  std::mutex mu;
  std::vector<std::string> faults;  // "step: what", from on_fault
  std::atomic<int> decodes{0};
  std::atomic<bool> fail_next_prefill{false};
  EngineOptions o;
  o.before_step = [&](std::string_view step) {
    if (step == "decode" && ++decodes == 3) TORCH_CHECK(false, "injected decode fault");
    if (step == "prefill" && fail_next_prefill.exchange(false)) throw std::bad_alloc();
  };
  o.on_fault = [&](std::string_view step, std::string_view what) {
    std::lock_guard lock(mu);
    faults.push_back(std::string(step) + ": " + std::string(what));
  };
  auto engine = Make(/*max_slots=*/4, /*max_queue=*/64, o);
  GenerationParams p;
  p.prompt = {464, 3290, 318};
  p.max_tokens = 12;
  p.ignore_eos = true;
  p.temperature = 0;

  Collector a;  // running when the third decode step fails
  ASSERT_TRUE(engine->Submit(p, a.Callback()).ok());
  a.Wait();
  EXPECT_EQ(a.finish, FinishReason::kError);
  EXPECT_NE(a.error.find("decode step failed: injected decode fault"), std::string::npos) << a.error;
  EXPECT_EQ(a.tokens.size(), 3u);  // from the prefill and the two decode steps before the fault

  fail_next_prefill = true;
  Collector b;  // its prefill runs out of memory
  ASSERT_TRUE(engine->Submit(p, b.Callback()).ok());
  b.Wait();
  EXPECT_EQ(b.finish, FinishReason::kError);
  EXPECT_TRUE(b.tokens.empty());

  // The engine serves on, with every slot back, and gives what an engine that never failed gives.
  std::vector<Collector> after(4);
  for (auto& c : after) ASSERT_TRUE(engine->Submit(p, c.Callback()).ok());
  Collector clean;
  auto healthy = Make(/*max_slots=*/4);
  ASSERT_TRUE(healthy->Submit(p, clean.Callback()).ok());
  clean.Wait();
  ASSERT_EQ(clean.finish, FinishReason::kLength);
  for (auto& c : after) {
    c.Wait();
    EXPECT_EQ(c.finish, FinishReason::kLength);
    EXPECT_EQ(c.tokens, clean.tokens);
    EXPECT_EQ(c.logprobs, clean.logprobs);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const EngineStats st = engine->stats();
  EXPECT_EQ(st.faults, 2);
  EXPECT_EQ(st.active, 0);
  EXPECT_EQ(st.kv_cache_usage, 0);
  std::lock_guard lock(mu);
  ASSERT_EQ(faults.size(), 2u);
  EXPECT_EQ(faults[0], "decode: injected decode fault");
  EXPECT_EQ(faults[1].rfind("prefill: ", 0), 0u) << faults[1];
}

}  // namespace
}  // namespace gpt2
