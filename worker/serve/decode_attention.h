// Attention for the serving engine's decode steps on a CPU: each running request's one new query
// against exactly its own cached positions, all requests and heads in one parallel pass, in a
// fixed order (8-lane FMA dot products, an 8-lane softmax, 8-lane FMA sums over positions), so
// a request's bits depend only on its own query, cache and length, never on the batch or the
// thread count. Replaces one scaled_dot_product_attention call per request and layer.
// fp32 on CPUs with AVX2 and FMA (RowLinearAvailable()).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace gpt2 {

// q (m,C) rows (any row stride, unit column stride; C = NH*HS); k_cache and v_cache (S,NH,T,HS)
// contiguous. Row i < slots.size() attends over positions [0, lengths[i]) of cache slot slots[i];
// rows past slots.size() come out zero. Returns (m,C).
at::Tensor DecodeAttention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                           const std::vector<int64_t>& slots, const std::vector<int64_t>& lengths);

}  // namespace gpt2
