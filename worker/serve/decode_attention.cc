#include "worker/serve/decode_attention.h"

#include <ATen/Parallel.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>

#include "worker/serve/simd.h"

namespace gpt2 {
namespace {

// One (request, head): out (HS) = softmax(q·Kᵀ · scale) · V over L positions; `scores` is scratch.
__attribute__((target("avx2,fma"))) void Head(const float* q, const float* K, const float* V, int64_t L, int64_t HS,
                                              float scale, std::vector<float>& scores, float* out) {
  const int64_t H8 = HS / 8 * 8;
  scores.resize(L);
  float max = -INFINITY;
  for (int64_t t = 0; t < L; ++t) {
    const float* k = K + t * HS;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t d = 0; d < H8; d += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(k + d), acc);
    float s = simd::Sum8(acc);
    for (int64_t d = H8; d < HS; ++d) s = std::fma(q[d], k[d], s);
    scores[t] = s * scale;
    max = std::max(max, scores[t]);
  }
  float sum = 0;
  for (int64_t t = 0; t < L; ++t) {
    scores[t] = std::exp(scores[t] - max);
    sum += scores[t];
  }
  const float inv = 1.0f / sum;
  for (int64_t d = 0; d < H8; d += 8) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t t = 0; t < L; ++t)
      acc = _mm256_fmadd_ps(_mm256_set1_ps(scores[t]), _mm256_loadu_ps(V + t * HS + d), acc);
    _mm256_storeu_ps(out + d, _mm256_mul_ps(acc, _mm256_set1_ps(inv)));
  }
  for (int64_t d = H8; d < HS; ++d) {
    float acc = 0;
    for (int64_t t = 0; t < L; ++t) acc = std::fma(scores[t], V[t * HS + d], acc);
    out[d] = acc * inv;
  }
}

}  // namespace

at::Tensor DecodeAttention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                           const std::vector<int64_t>& slots, const std::vector<int64_t>& lengths) {
  TORCH_CHECK(q.dim() == 2 && q.stride(1) == 1 && q.scalar_type() == at::kFloat && q.is_cpu(),
              "DecodeAttention: q must be (m,C) float32 on the CPU with unit column stride");
  TORCH_CHECK(k_cache.dim() == 4 && k_cache.is_contiguous() && v_cache.is_contiguous() &&
                  k_cache.sizes() == v_cache.sizes() && k_cache.scalar_type() == at::kFloat &&
                  v_cache.scalar_type() == at::kFloat,
              "DecodeAttention: caches must be contiguous (S,NH,T,HS) float32");
  const int64_t NH = k_cache.size(1), T = k_cache.size(2), HS = k_cache.size(3), C = NH * HS;
  const auto n = static_cast<int64_t>(slots.size());
  TORCH_CHECK(q.size(1) == C && q.size(0) >= n && lengths.size() == slots.size(), "DecodeAttention: shapes");
  for (int64_t i = 0; i < n; ++i)
    TORCH_CHECK(slots[i] >= 0 && slots[i] < k_cache.size(0) && lengths[i] >= 1 && lengths[i] <= T,
                "DecodeAttention: slot or length out of range");
  at::Tensor out = at::zeros({q.size(0), C}, q.options());
  const float* qp = q.data_ptr<float>();
  const float *kp = k_cache.data_ptr<float>(), *vp = v_cache.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t ldq = q.stride(0);
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  at::parallel_for(0, n * NH, 1, [&](int64_t j0, int64_t j1) {
    std::vector<float> scores;
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t i = j / NH, h = j % NH;
      const int64_t base = (slots[i] * NH + h) * T * HS;
      Head(qp + i * ldq + h * HS, kp + base, vp + base, lengths[i], HS, scale, scores, op + i * C + h * HS);
    }
  });
  return out;
}

}  // namespace gpt2
