// worker/train/spec: a job spec (YAML or JSON) of arbitrary text parses into a TrainSpec or is
// refused, and a spec that parses resolves into a training config or INVALID_ARGUMENT.
#include "common/job_spec.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gpt2;
  absl::StatusOr<gpt2d::v1::TrainSpec> spec = ParseTrainSpec(fuzz::AsText(data, size));
  if (!spec.ok()) {
    FUZZ_CHECK(spec.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  absl::StatusOr<TrainConfig> config = ResolveTrainSpec(*spec);
  FUZZ_CHECK(config.ok() || config.status().code() == absl::StatusCode::kInvalidArgument);
  return 0;
}
