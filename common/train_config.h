// What a training run needs to know, as plain values: the job spec (proto) after defaults and
// validation. Neither libtorch nor protobuf here, so both sides of the worker can include it.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/model_config.h"

namespace gpt2 {

struct TrainConfig {
  std::string name = "train";
  GPTConfig model;        // preset + overrides
  std::string init_from;  // checkpoint directory to start from; empty = fresh GPT-2 init
  std::string data_dir;

  int64_t total_batch_tokens = 524288;  // per optimizer step, all ranks
  int64_t micro_batch = 64;             // B
  int64_t seq_len = 1024;               // T

  double max_lr = 6e-4;
  double min_lr_ratio = 0.1;
  int64_t warmup_steps = 715;
  int64_t max_steps = 19073;
  double weight_decay = 0.1;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double grad_clip = 1.0;
  bool fused_adamw = true;

  int64_t val_every = 250, val_batches = 20;
  int64_t hellaswag_every = 250;
  std::string hellaswag_path;
  int64_t hellaswag_limit = 0;
  int64_t sample_every = 250, sample_count = 4, sample_tokens = 32;
  std::string sample_prompt = "Hello, I'm a language model,";

  std::string checkpoint_dir;
  int64_t checkpoint_every = 5000, keep_last = 3;
  bool keep_best = true;

  uint64_t seed = 1337;
  std::string device = "auto";
  std::string autocast;   // "bf16" | "fp32"; empty = bf16 on CUDA, fp32 on CPU
  double peak_flops = 0;  // per device; 0 = unknown (CUDA defaults to 989e12)
  int64_t log_every = 1;
  int world_size = 1;

  std::string spec_json;  // the spec as resolved, stored in every checkpoint

  // Micro-steps per optimizer step on each rank.
  int64_t grad_accum_steps() const { return total_batch_tokens / (micro_batch * seq_len * world_size); }
};

// Reads a job spec (YAML or JSON, a gpt2d.v1.TrainSpec), applies the defaults and validates it.
// Defined in spec.cc, which is the only place that sees the proto.
absl::StatusOr<TrainConfig> ReadTrainConfig(const std::string& path);

}  // namespace gpt2
