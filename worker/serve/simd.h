// AVX2 helpers shared by the serving engine's CPU kernels (RowLinear, DecodeAttention). Each
// function carries its own target attribute, so callers need no special compile flags; call them
// only from code that checked RowLinearAvailable().
#pragma once

#include <immintrin.h>

namespace gpt2::simd {

// The 8 lanes of `v` summed in one fixed order (halves, then pairs, then the last two), so a dot
// product's rounding never depends on where it is computed.
__attribute__((target("avx2,fma"))) inline float Sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The 16 lanes of `v`: the two halves added lane-wise, then Sum8.
__attribute__((target("avx512f"))) inline float Sum16(__m512 v) {
  const __m256 lo = _mm512_castps512_ps256(v);
  const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  return Sum8(_mm256_add_ps(lo, hi));
}

}  // namespace gpt2::simd
