// What a training run reports as it goes. Plain values, neither libtorch nor protobuf, so the
// worker daemon can turn them into metrics and gRPC events.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace gpt2 {

struct StepMetrics {
  int64_t step = 0;  // optimizer steps completed, 1-based
  int64_t max_steps = 0;
  double loss = 0;  // mean over the step's micro-batches and ranks
  double lr = 0;
  double grad_norm = 0;  // before clipping
  double step_seconds = 0;
  double tokens_per_second = 0;  // all ranks
  double mfu = 0;                // model FLOPs utilisation, 0 when the peak is unknown
  int64_t tokens_seen = 0;
};

struct EvalMetrics {
  int64_t step = 0;
  std::optional<double> val_loss;
  std::optional<double> hellaswag_acc, hellaswag_acc_norm;
  int64_t hellaswag_examples = 0;
  std::vector<std::string> samples;
};

struct CheckpointEvent {
  int64_t step = 0;
  std::string path;
  std::optional<double> val_loss;
  std::vector<std::string> retained;  // every checkpoint directory kept after retention, oldest first
};

// Callbacks run on rank 0's training thread (OnStep and OnEval on every rank); keep them short.
class TrainObserver {
 public:
  virtual ~TrainObserver() = default;
  virtual void OnStep(const StepMetrics&) {}
  virtual void OnEval(const EvalMetrics&) {}
  virtual void OnCheckpoint(const CheckpointEvent&) {}
  // Proof of life between the events above: each validation batch, sample token and evaluation
  // phase (ShouldStop marks each micro-step). A watchdog tells a slow rank from a hung one by it.
  virtual void OnProgress() {}
  // Polled between steps; true ends the run early (cancellation) without a checkpoint.
  virtual bool ShouldStop() { return false; }
};

}  // namespace gpt2
