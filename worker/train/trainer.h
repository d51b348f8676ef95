// One rank of a GPT-2 training run: build-nanogpt's loop in C++. Micro-batches of B x T tokens
// accumulate gradients up to the total batch; gradients are averaged across ranks once per
// optimizer step, clipped, and applied by AdamW at the scheduled learning rate. Validation loss,
// HellaSwag and samples run every so many steps; rank 0 writes checkpoints that every rank can
// resume from exactly.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "common/train_config.h"
#include "worker/train/distributed.h"
#include "worker/train/events.h"

namespace gpt2 {

struct TrainRunOptions {
  DistOptions dist;
  std::string resume;  // "", a checkpoint directory, or "latest" (the newest in the job's checkpoint dir)
  std::string vocab;   // tokenizer file for HellaSwag and samples; empty = default lookup
};

// Runs until max_steps, cancellation (CANCELLED) or an error: a bad spec or data
// (INVALID_ARGUMENT / NOT_FOUND), a failed peer (UNAVAILABLE, within the collective timeout).
absl::Status RunTraining(TrainConfig config, const TrainRunOptions& run, TrainObserver& observer);

}  // namespace gpt2
