#include "worker/train/trainer.h"

#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <ATen/ops/_fused_sdp_choice.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/cuda.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/utils.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "worker/data/loader.h"
#include "worker/data/shard.h"
#include "worker/model/hf_checkpoint.h"
#include "worker/model/sampling.h"
#include "worker/train/adamw.h"
#include "worker/train/checkpoint.h"
#include "worker/train/hellaswag.h"
#include "worker/train/lr_schedule.h"

namespace gpt2 {
namespace {

// The scaled_dot_product_attention kernel ATen picks for this run's attention (micro-batch, heads,
// context, head size; causal; in the compute dtype): logged at the start, so that a CUDA run shows
// that flash attention is what it uses.
std::string AttentionKernel(const TrainConfig& cfg, c10::Device device, at::ScalarType dtype) {
  const int64_t head = cfg.model.n_embd / cfg.model.n_head;
  const at::Tensor q =
      at::zeros({cfg.micro_batch, cfg.model.n_head, cfg.seq_len, head}, at::TensorOptions().device(device).dtype(dtype));
  switch (at::_fused_sdp_choice(q, q, q, {}, 0.0, /*is_causal=*/true)) {
    case 0:
      return "math";
    case 1:
      return "flash";
    case 2:
      return "memory-efficient";
    case 3:
      return "cudnn";
    default:
      return "other";
  }
}

using Clock = std::chrono::steady_clock;

// Autocast for one forward pass; libtorch ships no C++ guard, so restore the state ourselves.
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device, std::optional<at::ScalarType> dtype)
      : device_(device), active_(dtype.has_value()) {
    if (!active_) return;
    prev_enabled_ = at::autocast::is_autocast_enabled(device);
    prev_dtype_ = at::autocast::get_autocast_dtype(device);
    at::autocast::set_autocast_enabled(device, true);
    at::autocast::set_autocast_dtype(device, *dtype);
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (!active_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(device_, prev_enabled_);
    at::autocast::set_autocast_dtype(device_, prev_dtype_);
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType device_;
  bool active_;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kFloat;
};

absl::StatusOr<c10::Device> ResolveDevice(const std::string& name, int rank) {
  const bool cuda = torch::cuda::is_available();
  if (name == "cpu" || (name == "auto" && !cuda)) return c10::Device(c10::kCPU);
  if (!cuda)
    return absl::FailedPreconditionError(absl::StrCat("device ", name, " asked for, but CUDA is not available here"));
  const auto count = static_cast<int>(torch::cuda::device_count());
  int index = rank % count;  // one rank per GPU on a node
  if (name.starts_with("cuda:")) index = std::stoi(name.substr(5));
  if (index >= count) return absl::InvalidArgumentError(absl::StrCat("device ", name, ": only ", count, " GPUs"));
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

class Trainer {
 public:
  Trainer(TrainConfig config, const TrainRunOptions& run, TrainObserver& observer)
      : cfg_(std::move(config)), run_(run), obs_(observer) {}

  absl::Status Setup();
  absl::Status Run();

 private:
  at::Tensor Batch(std::vector<int64_t>& buf) {
    return at::tensor(buf, at::kLong).view({cfg_.micro_batch, cfg_.seq_len}).to(device_);
  }
  absl::StatusOr<double> ValLoss();
  // Whether any rank's observer asks to stop. Every rank must call it at the same point: with
  // several ranks it is a collective, so that all of them stop at the same micro-step instead of
  // the rest waiting for the stopped one until the collective timeout.
  bool StopRequested() {
    const bool local = obs_.ShouldStop();
    if (group_->world_size() == 1) return local;
    at::Tensor flag = at::full({}, local ? 1.0f : 0.0f, at::TensorOptions().device(device_));
    group_->AllReduceSum(flag);
    return flag.item<float>() > 0;
  }
  std::vector<std::string> Samples();
  absl::Status SaveCheckpoint(int64_t steps_done, std::optional<double> val_loss, const StepMetrics& m);
  std::optional<at::ScalarType> AutocastDType() const {
    if (cfg_.autocast == "fp32") return std::nullopt;
    if (cfg_.autocast == "bf16" || device_.is_cuda()) return at::kBFloat16;
    return std::nullopt;
  }

  TrainConfig cfg_;
  const TrainRunOptions& run_;
  TrainObserver& obs_;
  c10::Device device_{c10::kCPU};
  std::unique_ptr<ProcessGroup> group_;
  std::optional<Tokenizer> tokenizer_;
  GPT model_{nullptr};
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<DataLoader> train_loader_, val_loader_;
  std::vector<HellaSwagExample> hellaswag_;
  std::unique_ptr<CheckpointStore> store_;
  int64_t start_step_ = 0;
  int64_t tokens_seen_ = 0;
};

absl::Status Trainer::Setup() {
  const int rank = run_.dist.rank, world = run_.dist.world_size;
  if (world != cfg_.world_size) {
    // Started by hand with another world size than the spec's: the batch arithmetic follows the ranks.
    cfg_.world_size = world;
    if (cfg_.total_batch_tokens % (cfg_.micro_batch * cfg_.seq_len * world) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "batch.total_tokens: ", cfg_.total_batch_tokens,
          " is not divisible by micro_batch x seq_len x world_size = ", cfg_.micro_batch * cfg_.seq_len * world));
    }
  }
  absl::StatusOr<c10::Device> device = ResolveDevice(cfg_.device, rank);
  if (!device.ok()) return device.status();
  device_ = *device;
  if (device_.is_cuda()) {
    c10::cuda::set_device(device_.index());
    at::globalContext().setFloat32MatmulPrecision("high");  // TF32 matmuls
  }
  if (rank == 0) {
    const at::ScalarType dtype = AutocastDType().value_or(at::kFloat);
    std::cerr << "gpt2-worker: training on " << device_.str() << ": " << c10::toString(dtype) << " compute"
              << (device_.is_cuda() ? ", TF32 matmuls" : "") << ", attention kernel "
              << AttentionKernel(cfg_, device_, dtype) << std::endl;
  }
  absl::StatusOr<std::unique_ptr<ProcessGroup>> group = ProcessGroup::Create(run_.dist, device_);
  if (!group.ok()) return group.status();
  group_ = *std::move(group);

  if (!cfg_.hellaswag_path.empty() || cfg_.sample_every > 0) {
    absl::StatusOr<Tokenizer> tok = LoadTokenizer(run_.vocab);
    if (!tok.ok()) return tok.status();
    tokenizer_ = *std::move(tok);
  }
  if (!cfg_.hellaswag_path.empty() && cfg_.hellaswag_every > 0) {
    absl::StatusOr<std::vector<HellaSwagExample>> hs = ReadHellaSwag(cfg_.hellaswag_path, cfg_.hellaswag_limit);
    if (!hs.ok()) return hs.status();
    hellaswag_ = *std::move(hs);
  }

  // Same seed on every rank gives the same initial weights; rank 0's are broadcast anyway.
  torch::manual_seed(cfg_.seed);
  model_ = GPT(cfg_.model);
  if (!cfg_.init_from.empty()) {
    if (absl::Status s = LoadHfWeights(model_, cfg_.init_from); !s.ok()) return s;
  }
  model_->to(device_);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model_->parameters()) group_->Broadcast(p, 0);
  }
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (auto& item : model_->named_parameters()) named.emplace_back(item.key(), item.value());
  optimizer_ = std::make_unique<AdamW>(
      named, AdamWOptions{cfg_.beta1, cfg_.beta2, cfg_.eps, cfg_.weight_decay, cfg_.fused_adamw});

  absl::StatusOr<std::vector<std::string>> train_shards = ListShards(cfg_.data_dir, "train");
  if (!train_shards.ok()) return train_shards.status();
  absl::StatusOr<DataLoader> train = DataLoader::Create(*train_shards, cfg_.micro_batch, cfg_.seq_len, rank, world);
  if (!train.ok()) return train.status();
  train_loader_ = std::make_unique<DataLoader>(*std::move(train));
  if (cfg_.val_every > 0) {
    absl::StatusOr<std::vector<std::string>> val_shards = ListShards(cfg_.data_dir, "val");
    if (!val_shards.ok()) return val_shards.status();
    absl::StatusOr<DataLoader> val = DataLoader::Create(*val_shards, cfg_.micro_batch, cfg_.seq_len, rank, world);
    if (!val.ok()) return val.status();
    val_loader_ = std::make_unique<DataLoader>(*std::move(val));
  }

  if (!cfg_.checkpoint_dir.empty())
    store_ = std::make_unique<CheckpointStore>(cfg_.checkpoint_dir, cfg_.keep_last, cfg_.keep_best);
  if (!run_.resume.empty()) {
    std::string dir = run_.resume;
    if (dir == "latest") {
      if (!store_) return absl::InvalidArgumentError("resume latest: the spec has no checkpoint.dir");
      absl::StatusOr<std::string> latest = store_->Latest();
      if (!latest.ok()) return latest.status();
      dir = *latest;
    }
    TrainerState state;
    if (absl::Status s = LoadTrainingCheckpoint(dir, model_, *optimizer_, &state); !s.ok()) return s;
    if (state.world_size != world || state.micro_batch != cfg_.micro_batch || state.seq_len != cfg_.seq_len) {
      return absl::FailedPreconditionError(
          absl::StrCat(dir, " was written by ", state.world_size, " ranks with micro_batch ", state.micro_batch,
                       " and seq_len ", state.seq_len, "; an exact resume needs the same (this run: ", world, ", ",
                       cfg_.micro_batch, ", ", cfg_.seq_len, ")"));
    }
    const auto [shard, offset] = state.loader_positions.at(static_cast<size_t>(rank));
    if (absl::Status s = train_loader_->SetPosition({shard, offset}); !s.ok()) return s;
    start_step_ = state.step;
    tokens_seen_ = state.tokens_seen;
  }
  return absl::OkStatus();
}

absl::StatusOr<double> Trainer::ValLoss() {
  torch::NoGradGuard no_grad;
  val_loader_->Reset();
  std::vector<int64_t> x(cfg_.micro_batch * cfg_.seq_len), y(x.size());
  at::Tensor total = at::zeros({}, at::TensorOptions().device(device_));
  for (int64_t i = 0; i < cfg_.val_batches; ++i) {
    obs_.OnProgress();
    if (absl::Status s = val_loader_->NextBatch(x, y); !s.ok()) return s;
    AutocastGuard autocast(device_.type(), AutocastDType());
    total += model_->Loss(model_->forward(Batch(x)), Batch(y)).detach() / static_cast<double>(cfg_.val_batches);
  }
  std::vector<at::Tensor> t{total};
  group_->AllReduceMean(t);
  return t[0].item<double>();
}

std::vector<std::string> Trainer::Samples() {
  std::vector<std::string> out;
  torch::NoGradGuard no_grad;
  at::Generator gen = MakeGenerator(42 + static_cast<uint64_t>(group_->rank()));  // as build-nanogpt
  const SamplingOptions top50{1.0, 50, 1.0};
  for (int64_t n = 0; n < cfg_.sample_count; ++n) {
    std::vector<TokenId> ids = tokenizer_->EncodePrompt(cfg_.sample_prompt);
    for (int64_t i = 0; i < cfg_.sample_tokens; ++i) {
      obs_.OnProgress();
      const int64_t end = static_cast<int64_t>(ids.size()), begin = std::max<int64_t>(0, end - cfg_.model.n_positions);
      std::vector<int64_t> ctx(ids.begin() + begin, ids.end());
      AutocastGuard autocast(device_.type(), AutocastDType());
      at::Tensor logits = model_->forward(at::tensor(ctx, at::kLong).unsqueeze(0).to(device_));
      ids.push_back(static_cast<TokenId>(SampleToken(logits[0][-1], cfg_.model.vocab_size, top50, gen).id));
    }
    absl::StatusOr<std::string> text = tokenizer_->Decode(ids);
    out.push_back(text.ok() ? *text : "");
  }
  return out;
}

absl::Status Trainer::SaveCheckpoint(int64_t steps_done, std::optional<double> val_loss, const StepMetrics& m) {
  // Every rank's data position, gathered on every rank (a sum of one-hot slots).
  const int world = group_->world_size(), rank = group_->rank();
  at::Tensor pos = at::zeros({2 * world}, at::kLong);
  const LoaderPosition mine = train_loader_->position();
  pos[2 * rank] = mine.shard;
  pos[2 * rank + 1] = mine.offset;
  pos = pos.to(device_);
  group_->AllReduceSum(pos);
  pos = pos.cpu();
  if (rank != 0) return absl::OkStatus();
  TrainerState state;
  state.step = steps_done;
  state.tokens_seen = tokens_seen_;
  state.world_size = world;
  state.micro_batch = cfg_.micro_batch;
  state.seq_len = cfg_.seq_len;
  for (int r = 0; r < world; ++r)
    state.loader_positions.emplace_back(pos[2 * r].item<int64_t>(), pos[2 * r + 1].item<int64_t>());
  state.val_loss = val_loss;
  state.spec_json = cfg_.spec_json;
  state.metrics_json =
      nlohmann::json{
          {"loss", m.loss}, {"lr", m.lr}, {"grad_norm", m.grad_norm}, {"tokens_per_second", m.tokens_per_second}}
          .dump();
  absl::StatusOr<std::string> path = store_->Save(model_, *optimizer_, state);
  if (!path.ok())  // e.g. "checkpoint of step 20: cannot write .../optimizer.safetensors: No space left on device"
    return absl::Status(path.status().code(),
                        absl::StrCat("checkpoint of step ", steps_done, ": ", path.status().message()));
  obs_.OnCheckpoint({steps_done, *path, val_loss, ListCheckpoints(cfg_.checkpoint_dir)});
  return absl::OkStatus();
}

absl::Status Trainer::Run() {
  const int64_t accum = cfg_.grad_accum_steps();
  const double peak = cfg_.peak_flops > 0 ? cfg_.peak_flops : (device_.is_cuda() ? 989e12 : 0.0);
  const double flops_per_step = cfg_.model.FlopsPerToken(cfg_.seq_len) * static_cast<double>(cfg_.total_batch_tokens);
  std::vector<at::Tensor> params = model_->parameters();
  std::vector<int64_t> x(cfg_.micro_batch * cfg_.seq_len), y(x.size());
  for (int64_t step = start_step_; step < cfg_.max_steps; ++step) {
    const auto t0 = Clock::now();
    model_->zero_grad(/*set_to_none=*/true);
    at::Tensor loss_accum = at::zeros({}, at::TensorOptions().device(device_));
    for (int64_t micro = 0; micro < accum; ++micro) {
      // Checked every micro-step: a step of the full recipe on few devices takes minutes.
      if (StopRequested()) return absl::CancelledError(absl::StrCat("stopped during step ", step + 1));
      if (absl::Status s = train_loader_->NextBatch(x, y); !s.ok()) return s;
      at::Tensor loss;
      {
        AutocastGuard autocast(device_.type(), AutocastDType());
        loss = model_->Loss(model_->forward(Batch(x)), Batch(y));
      }
      loss = loss / static_cast<double>(accum);  // the gradient of the mean over all micro-batches
      loss_accum += loss.detach();
      loss.backward();
    }
    // Once per optimizer step, after the last micro-step: average gradients and the loss.
    if (group_->world_size() > 1) {
      std::vector<at::Tensor> grads;
      for (auto& p : params) grads.push_back(p.mutable_grad());
      grads.push_back(loss_accum);
      group_->AllReduceMean(grads);
    }
    // clip_grad_norm_ returns the total norm before clipping; with no clipping asked for, a bound
    // no norm reaches makes it only measure (the same fused computation, nothing scaled).
    const double grad_norm = torch::nn::utils::clip_grad_norm_(params, cfg_.grad_clip > 0 ? cfg_.grad_clip : 1e30);
    const double lr = LearningRate(step, cfg_.max_lr, cfg_.min_lr_ratio, cfg_.warmup_steps, cfg_.max_steps);
    optimizer_->Step(lr);
    if (device_.is_cuda()) c10::cuda::device_synchronize();
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();

    const int64_t steps_done = step + 1;
    tokens_seen_ += cfg_.total_batch_tokens;
    StepMetrics m;
    m.step = steps_done;
    m.max_steps = cfg_.max_steps;
    m.loss = loss_accum.item<double>();
    m.lr = lr;
    m.grad_norm = grad_norm;
    m.step_seconds = dt;
    m.tokens_per_second = static_cast<double>(cfg_.total_batch_tokens) / dt;
    m.mfu = peak > 0 ? flops_per_step / dt / (peak * group_->world_size()) : 0.0;
    m.tokens_seen = tokens_seen_;
    obs_.OnStep(m);

    const bool last = steps_done == cfg_.max_steps;
    auto due = [&](int64_t every) { return every > 0 && (steps_done % every == 0 || last); };
    EvalMetrics ev;
    ev.step = steps_done;
    if (val_loader_ && due(cfg_.val_every)) {
      absl::StatusOr<double> val = ValLoss();
      if (!val.ok()) return val.status();
      ev.val_loss = *val;
    }
    if (!hellaswag_.empty() && due(cfg_.hellaswag_every)) {
      torch::NoGradGuard no_grad;
      obs_.OnProgress();
      HellaSwagResult r = EvalHellaSwag(model_, *tokenizer_, hellaswag_, group_.get());
      obs_.OnProgress();
      ev.hellaswag_acc = r.acc();
      ev.hellaswag_acc_norm = r.acc_norm();
      ev.hellaswag_examples = r.examples;
    }
    if (tokenizer_ && cfg_.sample_every > 0 && (steps_done % cfg_.sample_every == 0 || last)) ev.samples = Samples();
    if (ev.val_loss || ev.hellaswag_acc || !ev.samples.empty()) obs_.OnEval(ev);
    if (store_ && ((cfg_.checkpoint_every > 0 && steps_done % cfg_.checkpoint_every == 0) || last)) {
      obs_.OnProgress();
      if (absl::Status s = SaveCheckpoint(steps_done, ev.val_loss, m); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunTraining(TrainConfig config, const TrainRunOptions& run, TrainObserver& observer) {
  try {
    Trainer trainer(std::move(config), run, observer);
    if (absl::Status s = trainer.Setup(); !s.ok()) return s;
    return trainer.Run();
  } catch (const c10::DistBackendError& e) {
    return absl::UnavailableError(
        absl::StrCat("a collective failed (did a peer rank die or hang?): ", e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    return absl::InternalError(e.what_without_backtrace());
  } catch (const std::exception& e) {
    // gloo reports dead peers as its own IoException (a std::runtime_error).
    return absl::UnavailableError(absl::StrCat("training stopped: ", e.what()));
  }
}

}  // namespace gpt2
