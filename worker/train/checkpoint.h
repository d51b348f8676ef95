// Training checkpoints: one directory per step, written under a temporary name and renamed when
// complete, so a crash never leaves a partial checkpoint where a reader would look.
//
//   <dir>/step_00001000/
//     config.json, model.safetensors   Hugging Face GPT-2 layout: transformers loads it as is
//     optimizer.safetensors            AdamW exp_avg / exp_avg_sq / step for every parameter
//     trainer_state.json               step, tokens seen, each rank's data position, RNG states,
//                                      the job spec, the metrics at that step
//
// Retention keeps the newest `keep_last` and, when asked, the one with the best validation loss.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/gpt2.h"
#include "worker/train/adamw.h"
#include "worker/train/trainer_state.h"

namespace gpt2 {

// Restores weights, optimizer state and trainer state. Nothing is changed if any part is bad.
absl::Status LoadTrainingCheckpoint(const std::string& checkpoint_dir, GPT& model, AdamW& optimizer,
                                    TrainerState* state);

// The step directories under `dir`, oldest first; temporary and incomplete ones are not listed.
std::vector<std::string> ListCheckpoints(const std::string& dir);

class CheckpointStore {
 public:
  CheckpointStore(std::string dir, int64_t keep_last, bool keep_best);

  // Writes step `state.step` atomically, then applies retention. Returns the directory.
  absl::StatusOr<std::string> Save(GPT& model, const AdamW& optimizer, const TrainerState& state);
  // The newest complete checkpoint, NOT_FOUND when there is none.
  absl::StatusOr<std::string> Latest() const;

 private:
  void ApplyRetention();
  std::string dir_;
  int64_t keep_last_;
  bool keep_best_;
};

}  // namespace gpt2
