#include "worker/serve/decode_attention.h"

#include <ATen/Parallel.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>

#include "worker/serve/simd.h"

namespace gpt2 {
namespace {

// e^x for x <= 0, 8 lanes (Cephes' expf: x = n ln2 + r, a degree-5 polynomial in r, times 2^n),
// below -87 zero. About 1 ulp; the same bits for the same input, wherever it is computed.
__attribute__((target("avx2,fma"))) inline __m256 Exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.0f);
  const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_max_ps(x, lo);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

// q · k over HS (8-lane FMA chain, a fixed horizontal sum, the tail), as one score.
__attribute__((target("avx2,fma"))) inline float Dot(const float* q, const float* k, int64_t HS) {
  const int64_t H8 = HS / 8 * 8;
  __m256 acc = _mm256_setzero_ps();
  for (int64_t d = 0; d < H8; d += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(k + d), acc);
  float s = simd::Sum8(acc);
  for (int64_t d = H8; d < HS; ++d) s = std::fma(q[d], k[d], s);
  return s;
}

// Dot for four positions at once: the same arithmetic per position, four independent chains.
__attribute__((target("avx2,fma"))) inline void Dot4(const float* q, const float* k, int64_t HS, float scale,
                                                     float* out) {
  const int64_t H8 = HS / 8 * 8;
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t d = 0; d < H8; d += 8) {
    const __m256 qv = _mm256_loadu_ps(q + d);
    a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + d), a0);
    a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + HS + d), a1);
    a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + 2 * HS + d), a2);
    a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + 3 * HS + d), a3);
  }
  const __m256 acc[4] = {a0, a1, a2, a3};
  for (int i = 0; i < 4; ++i) {
    float s = simd::Sum8(acc[i]);
    for (int64_t d = H8; d < HS; ++d) s = std::fma(q[d], k[i * HS + d], s);
    out[i] = s * scale;
  }
}

// out[d0 + 8v ..] += Σ_t p[t] V[t][d0 + 8v ..] for NV vectors of columns, t in order.
template <int NV>
__attribute__((target("avx2,fma"))) inline void WeightedSum(const float* p, const float* V, int64_t L, int64_t HS,
                                                            int64_t d0, float inv, float* out) {
  __m256 acc[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) acc[v] = _mm256_setzero_ps();
  for (int64_t t = 0; t < L; ++t) {
    const __m256 pt = _mm256_set1_ps(p[t]);
    const float* row = V + t * HS + d0;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[v] = _mm256_fmadd_ps(pt, _mm256_loadu_ps(row + v * 8), acc[v]);
  }
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) _mm256_storeu_ps(out + d0 + v * 8, _mm256_mul_ps(acc[v], _mm256_set1_ps(inv)));
}

// One (row, head): out (HS) = softmax(q·Kᵀ · scale) · V over L positions; `scores` is scratch.
// Every step's order is fixed by L and HS alone. The loops are arranged for independent chains
// (four positions' dot products at a time; V's columns as separate accumulators, positions in
// order), so a head costs its arithmetic, not its FMA latency.
__attribute__((target("avx2,fma"))) void Head(const float* q, const float* K, const float* V, int64_t L, int64_t HS,
                                              float scale, std::vector<float>& scores, float* out) {
  const int64_t L8 = (L + 7) / 8 * 8;
  scores.resize(L8);
  int64_t t = 0;
  for (; t + 4 <= L; t += 4) Dot4(q, K + t * HS, HS, scale, scores.data() + t);
  for (; t < L; ++t) scores[t] = Dot(q, K + t * HS, HS) * scale;
  float max = -INFINITY;
  for (t = 0; t < L; ++t) max = std::max(max, scores[t]);
  for (t = L; t < L8; ++t) scores[t] = -INFINITY;  // exp gives 0
  const __m256 mv = _mm256_set1_ps(max);
  __m256 sum8 = _mm256_setzero_ps();
  for (t = 0; t < L8; t += 8) {
    const __m256 e = Exp8(_mm256_sub_ps(_mm256_loadu_ps(scores.data() + t), mv));
    _mm256_storeu_ps(scores.data() + t, e);
    sum8 = _mm256_add_ps(sum8, e);
  }
  const float inv = 1.0f / simd::Sum8(sum8);
  // out[d] = Σ_t p[t] V[t][d], t in order, up to 8 vectors of columns at a time.
  const int64_t H8 = HS / 8 * 8;
  int64_t d0 = 0;
  for (; d0 + 64 <= H8; d0 += 64) WeightedSum<8>(scores.data(), V, L, HS, d0, inv, out);
  for (; d0 < H8; d0 += 8) WeightedSum<1>(scores.data(), V, L, HS, d0, inv, out);
  for (int64_t d = H8; d < HS; ++d) {
    float acc = 0;
    for (t = 0; t < L; ++t) acc = std::fma(scores[t], V[t * HS + d], acc);
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
