// Named libtorch tensors <-> safetensors files. The one place tensors meet the byte format.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/safetensors.h"

namespace gpt2 {

// A copy of one stored tensor as a CPU float32 tensor (F32/F16/BF16/F64 accepted).
absl::StatusOr<at::Tensor> ReadFloatTensor(const SafetensorsReader& file, const TensorInfo& info);

// Writes the tensors (any device; float32, int64 or uint8) in the given order.
absl::Status WriteTensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors);

}  // namespace gpt2
