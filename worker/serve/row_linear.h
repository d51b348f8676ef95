// A linear layer for the serving engine's decode steps whose rows never depend on the batch:
// y (m,N) = x (m,K) · wᵀ (+ b), each element one dot product in a fixed order (8-lane FMA chains
// over K, a fixed horizontal sum, then the bias), so a row's result is the same bits whatever m,
// the other rows or the thread count. A BLAS picks kernels by m and rounds differently for each;
// this one also takes the weights once per call however few rows there are, which is what a
// decode step on a CPU is bound by. fp32 on CPUs with AVX2 and FMA (RowLinearAvailable()).
#pragma once

#include <ATen/core/Tensor.h>

namespace gpt2 {

bool RowLinearAvailable();
// x (m,K) and w (N,K) float32 on the CPU; b (N) or undefined. Returns y (m,N).
at::Tensor RowLinear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b);

}  // namespace gpt2
