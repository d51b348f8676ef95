// worker/train/trainer_state: trainer_state.json of arbitrary bytes parses or is refused
// (DataLoss), and a state it accepts writes back to JSON that parses as the same state.
#include "tests/fuzz/fuzz_util.h"
#include "worker/train/trainer_state.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gpt2;
  absl::StatusOr<TrainerState> s = ParseTrainerState(fuzz::AsText(data, size), "trainer_state.json");
  if (!s.ok()) {
    FUZZ_CHECK(s.status().code() == absl::StatusCode::kDataLoss);
    return 0;
  }
  FUZZ_CHECK(s->step >= 0 && s->world_size >= 1 && static_cast<int64_t>(s->loader_positions.size()) == s->world_size);
  const std::string json = TrainerStateToJson(*s);
  absl::StatusOr<TrainerState> again = ParseTrainerState(json, "again");
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(TrainerStateToJson(*again) == json);
  return 0;
}
