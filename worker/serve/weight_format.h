// How a serving replica holds its weights (`--weights`). No libtorch, for the worker's gRPC side.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace gpt2 {

// fp32 as trained; bf16 (each weight rounded to nearest even: half the bytes a decode step reads);
// int8 (symmetric, one fp32 scale per output row, w ≈ q · scale with q in [-127, 127]: a quarter;
// computed in fp32); w8a8 (int8 weights as int8, and each row of activations quantized the same
// way as it enters a layer: the dot products are exact int32 sums of int8 products, four times the
// arithmetic per instruction of fp32 where the CPU has VNNI).
enum class WeightFormat { kFp32, kBf16, kInt8, kW8A8 };

// Every format's name, for flags' choices.
inline std::vector<std::string> WeightFormatNames() { return {"fp32", "bf16", "int8", "w8a8"}; }

inline absl::StatusOr<WeightFormat> ParseWeightFormat(std::string_view name) {
  if (name == "fp32") return WeightFormat::kFp32;
  if (name == "bf16") return WeightFormat::kBf16;
  if (name == "int8") return WeightFormat::kInt8;
  if (name == "w8a8") return WeightFormat::kW8A8;
  return absl::InvalidArgumentError(
      absl::StrCat("weights: expected fp32, bf16, int8 or w8a8, got ", std::string(name)));
}

inline std::string WeightFormatName(WeightFormat format) {
  switch (format) {
    case WeightFormat::kFp32: return "fp32";
    case WeightFormat::kBf16: return "bf16";
    case WeightFormat::kInt8: return "int8";
    case WeightFormat::kW8A8: return "w8a8";
  }
  return "?";
}

}  // namespace gpt2
