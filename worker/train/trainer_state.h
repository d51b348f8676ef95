// trainer_state.json, the part of a training checkpoint that says where training stands (no
// libtorch: read and written as JSON here, the RNG states as base64 of the generators' bytes).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace gpt2 {

inline constexpr char kTrainerStateFile[] = "trainer_state.json";

struct TrainerState {
  int64_t step = 0;  // optimizer steps completed
  int64_t tokens_seen = 0;
  int world_size = 1;
  int64_t micro_batch = 0, seq_len = 0;
  std::vector<std::pair<int64_t, int64_t>> loader_positions;  // (shard, offset) of each rank
  std::optional<double> val_loss;
  std::string rng_cpu;                // base64 of the default CPU generator's state
  std::vector<std::string> rng_cuda;  // base64, one per CUDA device
  std::string spec_json;
  std::string metrics_json;  // the last step's metrics, for people reading the directory
};

// The JSON text of a trainer state (what SaveTrainingCheckpoint writes).
std::string TrainerStateToJson(const TrainerState& state);
// Parses `json`; `where` names it in errors. DataLoss for text that is not such a state: not
// JSON, a field missing or of the wrong type, counts out of range (a negative step or position,
// a world size below 1, a position per rank).
absl::StatusOr<TrainerState> ParseTrainerState(std::string_view json, const std::string& where);
// Reads <checkpoint_dir>/trainer_state.json. NotFound when there is none.
absl::StatusOr<TrainerState> ReadTrainerState(const std::string& checkpoint_dir);

}  // namespace gpt2
