#include "common/model_config.h"

#include <gtest/gtest.h>

namespace gpt2 {
namespace {

TEST(ConfigTest, Gpt2SmallHasTheRecipeSizes) {
  GPTConfig c = *PresetConfig("gpt2");
  EXPECT_EQ(c.padded_vocab_size(), 50304);
  // 124,439,808 with the real vocabulary, plus 47 padded rows of 768.
  EXPECT_EQ(c.NumParameters(), 124'439'808 + 47 * 768);
  // nanoGPT's estimate for T = 1024: about 8.55e8 FLOPs per token.
  EXPECT_NEAR(c.FlopsPerToken(1024), 8.554e8, 0.001e8);
}

TEST(ConfigTest, PresetsMatchTheReleasedModels) {
  EXPECT_EQ(PresetConfig("gpt2-medium")->n_layer, 24);
  EXPECT_EQ(PresetConfig("gpt2-large")->n_embd, 1280);
  EXPECT_EQ(PresetConfig("gpt2-xl")->n_head, 25);
  EXPECT_FALSE(PresetConfig("gpt3").ok());
}

TEST(ConfigTest, HfJsonRoundTrip) {
  GPTConfig c;
  c.n_layer = 3, c.n_head = 4, c.n_embd = 64, c.n_positions = 128, c.vocab_size = 1000, c.n_inner = 96;
  absl::StatusOr<GPTConfig> back = ConfigFromHfJson(ConfigToHfJson(c));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->n_layer, 3);
  EXPECT_EQ(back->n_head, 4);
  EXPECT_EQ(back->n_embd, 64);
  EXPECT_EQ(back->n_positions, 128);
  EXPECT_EQ(back->vocab_size, 1000);
  EXPECT_EQ(back->n_inner, 96);
}

TEST(ConfigTest, RefusesWhatTheModelCannotRepresentNamingTheField) {
  const std::string base = R"("n_layer": 2, "n_head": 2, "n_embd": 8, "n_positions": 16, "vocab_size": 100)";
  auto error = [&](const std::string& extra) {
    return std::string(ConfigFromHfJson("{" + base + extra + "}").status().message());
  };
  EXPECT_NE(error(R"(, "model_type": "llama")").find("model_type"), std::string::npos);
  EXPECT_NE(error(R"(, "activation_function": "relu")").find("activation_function"), std::string::npos);
  EXPECT_NE(error(R"(, "scale_attn_by_inverse_layer_idx": true)").find("scale_attn_by_inverse_layer_idx"),
            std::string::npos);
  EXPECT_NE(std::string(ConfigFromHfJson(R"({"n_head": 2})").status().message()).find("n_layer"), std::string::npos);
  EXPECT_NE(
      std::string(ConfigFromHfJson(R"({"n_layer": 2, "n_head": 3, "n_embd": 8, "n_positions": 16, "vocab_size": 100})")
                      .status()
                      .message())
          .find("n_embd"),
      std::string::npos);
  EXPECT_NE(std::string(
                ConfigFromHfJson(R"({"n_layer": "2", "n_head": 2, "n_embd": 8, "n_positions": 16, "vocab_size": 100})")
                    .status()
                    .message())
                .find("n_layer"),
            std::string::npos);
  EXPECT_FALSE(ConfigFromHfJson("not json").ok());
  EXPECT_FALSE(ConfigFromHfJson("[1, 2]").ok());
}

}  // namespace
}  // namespace gpt2
