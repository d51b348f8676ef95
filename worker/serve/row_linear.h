// A linear layer for the serving engine's decode steps whose rows never depend on the batch:
// y (m,N) = x (m,K) · wᵀ (+ b), each element one dot product in a fixed order (FMA chains of 8
// or 16 lanes, by the CPU, over K, a fixed horizontal sum, then the row's scale and the bias), so a
// row's result is the same bits whatever m, the other rows or the thread count. A BLAS picks kernels by m and rounds
// differently for each; this one also takes the weights once per call however few rows there are,
// which is what a decode step on a CPU is bound by, so it reads them in the format they are served
// in (fp32, bf16, or int8 with a scale per output row), converted to fp32 in registers.
// CPUs with AVX2 and FMA (RowLinearAvailable()), 16 lanes with AVX-512 (RowLinearWide()); w8a8
// on AVX-512 VNNI, and AMX's tiles for rows in groups of 16 where the CPU and the kernel allow
// them (exact integer sums: the same bits whichever kernel a row took).
#pragma once

#include <ATen/core/Tensor.h>

#include "worker/serve/weight_format.h"

namespace gpt2 {

// A weight (N,K) in a format: data is float, bfloat16 or int8 (N,K) contiguous (w8a8: int8
// (N,Kp), K padded with zeros to a multiple of 64); scale (N) float with int8 and w8a8; wsum (N)
// int32 with w8a8, each row's sum of its int8 weights.
struct PackedWeight {
  WeightFormat format = WeightFormat::kFp32;
  at::Tensor data, scale, wsum;
  int64_t in_features = 0;  // K
  // w8a8 on CPUs with AVX-512 VNNI: data again, as blocks of 16 rows (N/16, Kp/4, 16, 4), the
  // layout whose loads feed vpdpbusd directly.
  at::Tensor vnni;
};

// Rounds w (N,K) float32 to `format` (fp32 shares w's storage).
PackedWeight PackWeight(const at::Tensor& w, WeightFormat format);
// The float32 (N,K) values the packed weight stands for (what the BLAS computes with).
at::Tensor Unpack(const PackedWeight& w);

bool RowLinearAvailable();
// Whether RowLinear runs its 16-lane (AVX-512) kernels: CPUs with AVX-512F, unless the
// environment's GPT2_ROW_LINEAR_ISA says avx2 (avx512 keeps AVX-512 but not AMX). Rounding differs
// between the two (lanes sum in another order), so a process keeps one for its life; rows stay
// independent of the batch in both.
bool RowLinearWide();
// Whether w8a8 takes AMX's tiles for rows in groups of 16 (AVX-512 VNNI for the rest).
bool RowLinearAmx();
// x (m,K) float32 on the CPU; b (N) float32 or undefined. Returns y (m,N).
at::Tensor RowLinear(const at::Tensor& x, const PackedWeight& w, const at::Tensor& b);
inline at::Tensor RowLinear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return RowLinear(x, PackedWeight{WeightFormat::kFp32, w, {}, {}, w.size(1), {}}, b);
}

}  // namespace gpt2
