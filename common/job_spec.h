// Job specs: a gpt2d.v1.TrainSpec written as YAML or JSON, its defaults (the GPT-2 124M recipe) and
// its validation. Errors are INVALID_ARGUMENT and name the field ("batch.total_tokens: ...").
// Protobuf only; no libtorch (docs/process-model.md).
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/train_config.h"
#include "gpt2d/v1/train.pb.h"

namespace gpt2 {

// Parses YAML (a superset of JSON) into a TrainSpec; unknown fields are errors.
absl::StatusOr<gpt2d::v1::TrainSpec> ParseTrainSpec(std::string_view text);
absl::StatusOr<gpt2d::v1::TrainSpec> ReadTrainSpec(const std::string& path);

// Applies defaults and checks the spec; the result is what a rank runs.
absl::StatusOr<TrainConfig> ResolveTrainSpec(const gpt2d::v1::TrainSpec& spec);

}  // namespace gpt2
