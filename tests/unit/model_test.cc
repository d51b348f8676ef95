#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/utils.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "worker/model/gpt2.h"
#include "worker/model/hf_checkpoint.h"
#include "worker/model/safetensors.h"
#include "worker/model/sampling.h"

namespace gpt2 {
namespace {

namespace fs = std::filesystem;

GPTConfig Tiny() {
  GPTConfig c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 32, c.n_positions = 16, c.vocab_size = 100;
  return c;
}

class ModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(0);
    dir_ = fs::temp_directory_path() / ("model_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(ModelTest, ParameterNamesAreHuggingFaces) {
  GPT m(Tiny());
  auto p = m->named_parameters();
  for (const char* name :
       {"transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight",
        "transformer.h.1.attn.c_attn.weight", "transformer.h.1.attn.c_proj.bias", "transformer.h.0.mlp.c_fc.weight",
        "transformer.h.0.mlp.c_proj.weight", "transformer.ln_f.bias"}) {
    EXPECT_NE(p.find(name), nullptr) << name;
  }
  EXPECT_EQ(p.size(), 4u + 12u * 2);                    // wte, wpe, ln_f weight and bias; 12 tensors a block
  EXPECT_EQ(p["transformer.wte.weight"].size(0), 128);  // 100 padded to a multiple of 64
  int64_t n = 0;
  for (auto& t : m->parameters()) n += t.numel();
  EXPECT_EQ(n, Tiny().NumParameters());
}

TEST_F(ModelTest, InitialisationFollowsGpt2) {
  GPTConfig c = Tiny();
  c.n_layer = 8, c.n_embd = 256, c.n_head = 4;
  GPT m(c);
  auto p = m->named_parameters();
  EXPECT_NEAR(p["transformer.h.0.mlp.c_fc.weight"].std().item<double>(), 0.02, 0.001);
  EXPECT_NEAR(p["transformer.h.0.mlp.c_proj.weight"].std().item<double>(), 0.02 / std::sqrt(16.0), 0.0005);
  EXPECT_NEAR(p["transformer.h.3.attn.c_proj.weight"].std().item<double>(), 0.02 / std::sqrt(16.0), 0.0005);
  EXPECT_NEAR(p["transformer.wte.weight"].slice(0, 0, 100).std().item<double>(), 0.02, 0.001);
  EXPECT_EQ(p["transformer.wte.weight"].slice(0, 100).abs().max().item<double>(), 0.0);  // padded rows
  EXPECT_EQ(p["transformer.h.0.attn.c_attn.bias"].abs().max().item<double>(), 0.0);
  EXPECT_EQ(p["transformer.h.0.ln_2.weight"].min().item<double>(), 1.0);
}

TEST_F(ModelTest, ForwardIsCausalAndTheHeadIsTied) {
  GPT m(Tiny());
  m->eval();
  torch::NoGradGuard g;
  torch::Tensor idx = torch::randint(0, 100, {2, 10}, torch::kLong);
  torch::Tensor logits = m->forward(idx);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 10, 128}));
  // Changing the last token leaves earlier positions untouched.
  torch::Tensor idx2 = idx.clone();
  idx2[0][9] = (idx[0][9].item<int64_t>() + 1) % 100;
  torch::Tensor logits2 = m->forward(idx2);
  EXPECT_TRUE(torch::allclose(logits.slice(1, 0, 9), logits2.slice(1, 0, 9)));
  EXPECT_FALSE(torch::allclose(logits.slice(1, 9, 10), logits2.slice(1, 9, 10)));
  EXPECT_THROW(m->forward(torch::zeros({1, 17}, torch::kLong)), c10::Error);  // past the context
}

TEST_F(ModelTest, LossIgnoresThePaddedVocabulary) {
  GPT m(Tiny());
  torch::Tensor logits = torch::randn({2, 5, 128});
  torch::Tensor targets = torch::randint(0, 100, {2, 5}, torch::kLong);
  torch::Tensor expected =
      torch::nn::functional::cross_entropy(logits.slice(2, 0, 100).reshape({-1, 100}), targets.reshape({-1}));
  EXPECT_NEAR(m->Loss(logits, targets).item<double>(), expected.item<double>(), 1e-6);
  // Making padded logits huge changes nothing.
  logits.slice(2, 100, 128).fill_(1e4);
  EXPECT_NEAR(m->Loss(logits, targets).item<double>(), expected.item<double>(), 1e-6);
}

TEST_F(ModelTest, SaveThenLoadGivesTheSameLogits) {
  GPT m(Tiny());
  m->eval();
  ASSERT_TRUE(SaveHfModel(m, dir_.string()).ok());
  absl::StatusOr<GPT> back = LoadHfModel(dir_.string());
  ASSERT_TRUE(back.ok()) << back.status();
  torch::NoGradGuard g;
  torch::Tensor idx = torch::randint(0, 100, {1, 16}, torch::kLong);
  EXPECT_TRUE(torch::equal(m->forward(idx).slice(2, 0, 100), (*back)->forward(idx).slice(2, 0, 100)));
  // The file holds Conv1D layout (in, out) and the real vocabulary only.
  SafetensorsReader r = *SafetensorsReader::Open((dir_ / "model.safetensors").string());
  EXPECT_EQ(r.Find("transformer.h.0.mlp.c_fc.weight")->shape, (std::vector<int64_t>{32, 128}));
  EXPECT_EQ(r.Find("transformer.wte.weight")->shape, (std::vector<int64_t>{100, 32}));
  EXPECT_EQ(r.Find("lm_head.weight"), nullptr);
}

TEST_F(ModelTest, LoadRefusesAMismatchedCheckpointAndLeavesTheModelAlone) {
  GPT m(Tiny());
  ASSERT_TRUE(SaveHfModel(m, dir_.string()).ok());
  GPTConfig wider = Tiny();
  wider.n_embd = 64;
  GPT other(wider);
  torch::Tensor before = other->named_parameters()["transformer.wpe.weight"].clone();
  absl::Status s = LoadHfWeights(other, dir_.string());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("shape"), std::string::npos) << s;
  EXPECT_TRUE(torch::equal(before, other->named_parameters()["transformer.wpe.weight"]));

  GPTConfig deeper = Tiny();
  deeper.n_layer = 3;
  GPT third(deeper);
  s = LoadHfWeights(third, dir_.string());
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(s.message()).find("h.2."), std::string::npos) << s;

  EXPECT_EQ(LoadHfModel((dir_ / "nope").string()).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ModelTest, SamplingIsSeededAndRespectsCuts) {
  torch::Tensor logits = torch::randn({128});
  logits.slice(0, 100, 128).fill_(100.0);  // padded entries: never chosen
  SamplingOptions o{1.0, 0, 1.0};
  at::Generator g1 = MakeGenerator(7), g2 = MakeGenerator(7);
  for (int i = 0; i < 50; ++i) {
    SampledToken a = SampleToken(logits, 100, o, g1), b = SampleToken(logits, 100, o, g2);
    EXPECT_EQ(a.id, b.id);
    EXPECT_LT(a.id, 100);
  }
  at::Generator g = MakeGenerator(1);
  const int64_t best = logits.slice(0, 0, 100).argmax().item<int64_t>();
  EXPECT_EQ(SampleToken(logits, 100, {0.0, 0, 1.0}, g).id, best);
  EXPECT_EQ(SampleToken(logits, 100, {1.0, 1, 1.0}, g).id, best);
  EXPECT_EQ(SampleToken(logits, 100, {1.0, 0, 1e-6}, g).id, best);
  auto top3 = std::get<1>(logits.slice(0, 0, 100).topk(3));
  for (int i = 0; i < 50; ++i) {
    int64_t id = SampleToken(logits, 100, {2.0, 3, 1.0}, g).id;
    EXPECT_TRUE((top3 == id).any().item<bool>());
  }
  EXPECT_FALSE(ValidateSampling({-1.0, 0, 1.0}).ok());
  EXPECT_FALSE(ValidateSampling({1.0, -2, 1.0}).ok());
  EXPECT_FALSE(ValidateSampling({1.0, 0, 0.0}).ok());
  EXPECT_FALSE(ValidateSampling({1.0, 0, 1.5}).ok());
}

}  // namespace
}  // namespace gpt2
