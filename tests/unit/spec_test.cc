#include "common/job_spec.h"

#include <gtest/gtest.h>

namespace gpt2 {
namespace {

TrainConfig Resolve(const std::string& yaml) {
  absl::StatusOr<gpt2d::v1::TrainSpec> spec = ParseTrainSpec(yaml);
  EXPECT_TRUE(spec.ok()) << spec.status();
  absl::StatusOr<TrainConfig> c = ResolveTrainSpec(*spec);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : TrainConfig{};
}

std::string Error(const std::string& yaml) {
  absl::StatusOr<gpt2d::v1::TrainSpec> spec = ParseTrainSpec(yaml);
  if (!spec.ok()) return std::string(spec.status().message());
  absl::StatusOr<TrainConfig> c = ResolveTrainSpec(*spec);
  EXPECT_FALSE(c.ok()) << yaml;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(c.status().message());
}

TEST(SpecTest, DefaultsReproduceGpt2Small) {
  TrainConfig c = Resolve("data: {dir: /d}");
  EXPECT_EQ(c.model.n_layer, 12);
  EXPECT_EQ(c.model.n_embd, 768);
  EXPECT_EQ(c.total_batch_tokens, 524288);
  EXPECT_EQ(c.micro_batch, 64);
  EXPECT_EQ(c.seq_len, 1024);
  EXPECT_EQ(c.grad_accum_steps(), 8);
  EXPECT_DOUBLE_EQ(c.max_lr, 6e-4);
  EXPECT_DOUBLE_EQ(c.min_lr_ratio, 0.1);
  EXPECT_EQ(c.warmup_steps, 715);
  EXPECT_EQ(c.max_steps, 19073);
  EXPECT_DOUBLE_EQ(c.weight_decay, 0.1);
  EXPECT_DOUBLE_EQ(c.beta2, 0.95);
  EXPECT_DOUBLE_EQ(c.eps, 1e-8);
  EXPECT_DOUBLE_EQ(c.grad_clip, 1.0);
  EXPECT_EQ(c.seed, 1337u);
  EXPECT_EQ(c.val_every, 250);
  EXPECT_EQ(c.checkpoint_every, 5000);
}

TEST(SpecTest, YamlAndJsonBothWorkAndZeroIsAValue) {
  TrainConfig y = Resolve(R"(
name: tiny
model: {n_layer: 2, n_head: 2, n_embd: 64, n_positions: 128}
data: {dir: "/data/x"}
batch: {total_tokens: 1024, micro_batch: 4, seq_len: 128}
optimizer: {weight_decay: 0, warmup_steps: 0, max_lr: 1.0e-3}
world_size: 2
)");
  EXPECT_EQ(y.name, "tiny");
  EXPECT_EQ(y.model.n_positions, 128);
  EXPECT_DOUBLE_EQ(y.weight_decay, 0.0);
  EXPECT_EQ(y.warmup_steps, 0);
  EXPECT_EQ(y.grad_accum_steps(), 1);
  TrainConfig j =
      Resolve(R"({"data": {"dir": "/d"}, "optimizer": {"max_lr": 0.001}, "model": {"preset": "gpt2-medium"}})");
  EXPECT_DOUBLE_EQ(j.max_lr, 0.001);
  EXPECT_EQ(j.model.n_layer, 24);
}

TEST(SpecTest, ErrorsNameTheField) {
  EXPECT_NE(Error("{}").find("data.dir"), std::string::npos);
  EXPECT_NE(Error("data: {dir: /d}\nbatch: {total_tokens: 1000}").find("batch.total_tokens"), std::string::npos);
  EXPECT_NE(Error("data: {dir: /d}\nbatch: {seq_len: 2048}").find("batch.seq_len"), std::string::npos);
  EXPECT_NE(Error("data: {dir: /d}\nmodel: {preset: gpt5}").find("model.preset"), std::string::npos);
  EXPECT_NE(Error("data: {dir: /d}\nmodel: {n_head: 5}").find("n_embd"), std::string::npos);
  EXPECT_NE(Error("data: {dir: /d}\noptimizer: {max_lr: -1}").find("optimizer.max_lr"), std::string::npos);
  EXPECT_NE(Error("data: {dir: /d}\noptimizer: {beta2: 1.5}").find("optimizer.beta2"), std::string::npos);
  EXPECT_NE(Error("data: {dir: /d}\ndevice: tpu").find("device"), std::string::npos);
  EXPECT_NE(Error("data: {dir: /d}\ncheckpoint: {keep_last: 0}").find("checkpoint.keep_last"), std::string::npos);
  EXPECT_NE(Error("data: {dir: /d}\nbogus: 1").find("bogus"), std::string::npos);
  EXPECT_NE(Error("data: {dir: /d}\nbatch: {micro_batch: lots}").find("micro_batch"), std::string::npos);
  EXPECT_NE(Error("data: [unclosed").find("YAML"), std::string::npos);
  EXPECT_NE(Error("- a list").find("mapping"), std::string::npos);
}

// Found by tests/fuzz/train_spec_fuzz: each of these once ended the process (an exception nobody
// caught); now each is INVALID_ARGUMENT naming what is wrong, and long scalars parse.
TEST(SpecTest, HostileInputIsAnErrorNotACrash) {
  EXPECT_NE(Error("data: {dir: \"/d\xff\"}").find("UTF-8"), std::string::npos);
  EXPECT_NE(Error("data: {dir: /d}\noptimizer: {max_lr: 6.0e-400}").find("max_lr"), std::string::npos);
  EXPECT_NE(Error("data: {dir: /d}\noptimizer: {max_lr: 1e999}").find("max_lr"), std::string::npos);
  EXPECT_NE(Error("data: {dir: /d}\nbatch: {micro_batch: 99999999999999999999}").find("micro_batch"),
            std::string::npos);
  EXPECT_NE(Error("data: {dir: /d}\ndevice: cuda:" + std::string(100000, '1')).find("device"), std::string::npos);
  const std::string digits(100000, '7');
  EXPECT_FALSE(Resolve("data: {dir: /d}\nname: \"" + digits + "." + digits + "\"").name.empty());
  EXPECT_NE(Error("data: {dir: /d}\nbatch: {micro_batch: " + digits + "." + digits + "}").find("micro_batch"),
            std::string::npos);
  EXPECT_EQ(Resolve("data: {dir: /d}\ndevice: cuda:3").device, "cuda:3");
  EXPECT_DOUBLE_EQ(Resolve("data: {dir: /d}\noptimizer: {max_lr: .5e-3}").max_lr, 0.0005);
}

}  // namespace
}  // namespace gpt2
