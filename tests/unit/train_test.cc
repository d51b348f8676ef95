#include <gtest/gtest.h>
#include <torch/utils.h>

#include <sys/mount.h>
#include <unistd.h>

#include <filesystem>

#include "worker/train/adamw.h"
#include "worker/train/checkpoint.h"
#include "worker/train/lr_schedule.h"

namespace gpt2 {
namespace {

namespace fs = std::filesystem;

TEST(LearningRateTest, WarmupThenCosineToTenPercent) {
  EXPECT_DOUBLE_EQ(LearningRate(0, 6e-4, 0.1, 715, 19073), 6e-4 / 715);
  EXPECT_DOUBLE_EQ(LearningRate(714, 6e-4, 0.1, 715, 19073), 6e-4);
  EXPECT_NEAR(LearningRate(715, 6e-4, 0.1, 715, 19073), 6e-4, 1e-15);
  EXPECT_NEAR(LearningRate((715 + 19073) / 2, 6e-4, 0.1, 715, 19073), 3.3e-4, 1e-7);
  EXPECT_NEAR(LearningRate(19073, 6e-4, 0.1, 715, 19073), 6e-5, 1e-15);
  EXPECT_DOUBLE_EQ(LearningRate(30000, 6e-4, 0.1, 715, 19073), 6e-5);
}

std::vector<std::pair<std::string, at::Tensor>> Params(uint64_t seed) {
  torch::manual_seed(seed);
  return {{"w", torch::randn({8, 4}).requires_grad_()}, {"b", torch::randn({4}).requires_grad_()}};
}

TEST(AdamWTest, FusedKernelEqualsTheReferenceArithmetic) {
  auto a = Params(1), b = Params(1);
  AdamW fused(a, {0.9, 0.95, 1e-8, 0.1, true}), plain(b, {0.9, 0.95, 1e-8, 0.1, false});
  EXPECT_TRUE(fused.fused());
  EXPECT_EQ(fused.decayed_numel(), 32);
  EXPECT_EQ(fused.undecayed_numel(), 4);
  for (int step = 0; step < 5; ++step) {
    torch::manual_seed(100 + step);
    for (auto* ps : {&a, &b}) {
      torch::manual_seed(100 + step);
      for (auto& [_, p] : *ps) p.mutable_grad() = torch::randn_like(p);
    }
    fused.Step(1e-2);
    plain.Step(1e-2);
  }
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_TRUE(torch::allclose(a[i].second, b[i].second, 1e-6, 1e-7)) << a[i].first;
  // Bias has no weight decay: with zero gradients only decayed parameters move.
  auto c = Params(2);
  AdamW decay_only(c, {0.9, 0.95, 1e-8, 0.5, true});
  at::Tensor w0 = c[0].second.detach().clone(), b0 = c[1].second.detach().clone();
  for (auto& [_, p] : c) p.mutable_grad() = torch::zeros_like(p);
  decay_only.Step(0.1);
  EXPECT_TRUE(torch::allclose(c[0].second, w0 * (1 - 0.1 * 0.5)));
  EXPECT_TRUE(torch::equal(c[1].second, b0));
}

// A tiny GPT and its AdamW, for checkpoints.
struct TinyTraining {
  explicit TinyTraining(int64_t n_embd, int64_t vocab) : model(Config(n_embd, vocab)), opt(Named(model), {}) {}
  static GPTConfig Config(int64_t n_embd, int64_t vocab) {
    GPTConfig cfg;
    cfg.n_layer = 1, cfg.n_head = 1, cfg.n_embd = n_embd, cfg.n_positions = 8, cfg.vocab_size = vocab;
    return cfg;
  }
  static std::vector<std::pair<std::string, at::Tensor>> Named(GPT& m) {
    std::vector<std::pair<std::string, at::Tensor>> named;
    for (auto& item : m->named_parameters()) named.emplace_back(item.key(), item.value());
    return named;
  }
  GPT model;
  AdamW opt;
};

TEST(CheckpointStoreTest, KeepsTheLastAndTheBestAndIsAtomic) {
  const fs::path dir = fs::temp_directory_path() / ("ckpt_test_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  TinyTraining t(8, 64);
  GPT& model = t.model;
  AdamW& opt = t.opt;
  CheckpointStore store(dir.string(), /*keep_last=*/2, /*keep_best=*/true);
  EXPECT_EQ(store.Latest().status().code(), absl::StatusCode::kNotFound);
  fs::create_directories(dir / ".tmp-step_00000099-1");  // a writer that died
  const double losses[] = {5.0, 3.0, 4.0, 4.5};
  for (int i = 0; i < 4; ++i) {
    TrainerState s;
    s.step = (i + 1) * 10;
    s.val_loss = losses[i];
    s.loader_positions = {{0, 0}};
    ASSERT_TRUE(store.Save(model, opt, s).ok());
  }
  std::vector<std::string> kept = ListCheckpoints(dir.string());
  ASSERT_EQ(kept.size(), 3u);  // 20 (best), 30, 40 (last two)
  EXPECT_TRUE(kept[0].ends_with("step_00000020"));
  EXPECT_TRUE(kept[2].ends_with("step_00000040"));
  EXPECT_EQ(*store.Latest(), kept[2]);
  EXPECT_FALSE(fs::exists(dir / ".tmp-step_00000099-1"));
  absl::StatusOr<TrainerState> s = ReadTrainerState(kept[1]);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->step, 30);
  EXPECT_FALSE(s->rng_cpu.empty());
  // A directory without trainer_state.json is not a checkpoint.
  fs::create_directories(dir / "step_00000050");
  EXPECT_EQ(*store.Latest(), kept[2]);
  fs::remove_all(dir);
}

// A full disk while a checkpoint is written (a tmpfs as root; skipped otherwise): the save fails
// with the OS's reason, leaves no temporary directory to keep the disk full, lists and loads
// nothing partial, and the earlier checkpoint stays intact and loadable.
TEST(CheckpointStoreTest, AFullDiskFailsTheSaveCleanlyAndKeepsTheEarlierCheckpoint) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root";
  TinyTraining t(16, 2048);
  GPT& model = t.model;
  AdamW& opt = t.opt;
  // One checkpoint's size, measured on an ordinary disk.
  const fs::path scratch = fs::temp_directory_path() / ("ckpt_size_" + std::to_string(::getpid()));
  TrainerState s;
  s.step = 1;
  s.loader_positions = {{0, 0}};
  ASSERT_TRUE(CheckpointStore(scratch.string(), 5, false).Save(model, opt, s).ok());
  uintmax_t bytes = 0;
  for (const auto& e : fs::recursive_directory_iterator(scratch))
    if (e.is_regular_file()) bytes += e.file_size();
  fs::remove_all(scratch);

  const fs::path dir = fs::temp_directory_path() / ("ckpt_full_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string size = "size=" + std::to_string(bytes * 3 / 2 / 4096 * 4096 + 8192);
  if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, size.c_str()) != 0) {
    fs::remove_all(dir);
    GTEST_SKIP() << "cannot mount a tmpfs here";
  }
  CheckpointStore store(dir.string(), 5, false);
  absl::StatusOr<std::string> first = store.Save(model, opt, s);
  ASSERT_TRUE(first.ok()) << first.status();
  s.step = 2;
  absl::StatusOr<std::string> second = store.Save(model, opt, s);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted) << second.status();
  EXPECT_NE(second.status().message().find("No space left on device"), std::string::npos) << second.status();
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"step_00000001"});  // no .tmp-step_00000002-* left
  EXPECT_EQ(ListCheckpoints(dir.string()), std::vector<std::string>{*first});
  EXPECT_EQ(*store.Latest(), *first);
  TinyTraining loaded(16, 2048);
  TrainerState st;
  ASSERT_TRUE(LoadTrainingCheckpoint(*first, loaded.model, loaded.opt, &st).ok());
  EXPECT_EQ(st.step, 1);
  auto want = model->named_parameters();
  for (auto& item : loaded.model->named_parameters()) EXPECT_TRUE(torch::equal(item.value(), want[item.key()])) << item.key();
  ::umount(dir.c_str());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace gpt2
