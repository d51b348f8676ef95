#include "worker/serve/row_linear.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/where.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "worker/serve/simd.h"

namespace gpt2 {
namespace {

// The register block: kRows rows of x by kCols rows of w, 12 accumulators of 8 lanes.
constexpr int kRows = 3, kCols = 4;

struct Args {
  const float* x;
  const void* w;      // (N,K) in the format
  const float* scale;  // int8: (N)
  const float* b;      // null: no bias
  float* y;
  int64_t K, N;
};

// 8 weights from w + i, as fp32 lanes, and one weight as a float (the tail past K / 8 * 8).
template <WeightFormat F>
__attribute__((target("avx2,fma"))) inline __m256 Load8(const void* w, int64_t i) {
  if constexpr (F == WeightFormat::kFp32) {
    return _mm256_loadu_ps(static_cast<const float*>(w) + i);
  } else if constexpr (F == WeightFormat::kBf16) {  // a bf16 is the top half of its fp32
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else {
    const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const int8_t*>(w) + i));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
  }
}
template <WeightFormat F>
inline float Load1(const void* w, int64_t i) {
  if constexpr (F == WeightFormat::kFp32) {
    return static_cast<const float*>(w)[i];
  } else if constexpr (F == WeightFormat::kBf16) {
    const uint32_t bits = uint32_t{static_cast<const uint16_t*>(w)[i]} << 16;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  } else {
    return static_cast<float>(static_cast<const int8_t*>(w)[i]);
  }
}

// y[i..i+R, j..j+C]. Every element's arithmetic is the same sequence whatever R and C are.
template <WeightFormat F, int R, int C>
__attribute__((target("avx2,fma"))) void Tile(const Args& a, int64_t i, int64_t j) {
  const int64_t K = a.K, K8 = K / 8 * 8;
  const float* x = a.x + i * K;
  const int64_t w0 = j * K;  // element offset of w's row j
  // Fully unrolled, so the accumulators live in registers.
  __m256 acc[R][C];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K8; k += 8) {
    __m256 wv[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) wv[c] = Load8<F>(a.w, w0 + c * K + k);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m256 xv = _mm256_loadu_ps(x + r * K + k);
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) {
      float s = simd::Sum8(acc[r][c]);
      for (int64_t k = K8; k < K; ++k) s = std::fma(x[r * K + k], Load1<F>(a.w, w0 + c * K + k), s);
      if constexpr (F == WeightFormat::kInt8) s *= a.scale[j + c];
      a.y[(i + r) * a.N + j + c] = a.b ? s + a.b[j + c] : s;
    }
  }
}

using TileFn = void (*)(const Args&, int64_t, int64_t);
template <WeightFormat F>
constexpr TileFn kTiles[kRows][kCols] = {{Tile<F, 1, 1>, Tile<F, 1, 2>, Tile<F, 1, 3>, Tile<F, 1, 4>},
                                         {Tile<F, 2, 1>, Tile<F, 2, 2>, Tile<F, 2, 3>, Tile<F, 2, 4>},
                                         {Tile<F, 3, 1>, Tile<F, 3, 2>, Tile<F, 3, 3>, Tile<F, 3, 4>}};

template <WeightFormat F>
void Run(const Args& a, int64_t m) {
  // Threads split the columns (w's rows); each streams its rows of w once, reusing each tile of
  // kCols rows across all of x's rows while it is in cache.
  const int64_t tiles = (a.N + kCols - 1) / kCols;
  at::parallel_for(0, tiles, 16, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t j = t * kCols;
      const int c = static_cast<int>(std::min<int64_t>(kCols, a.N - j));
      for (int64_t i = 0; i < m; i += kRows) kTiles<F>[std::min<int64_t>(kRows, m - i) - 1][c - 1](a, i, j);
    }
  });
}

}  // namespace

PackedWeight PackWeight(const at::Tensor& w_in, WeightFormat format) {
  TORCH_CHECK(w_in.dim() == 2 && w_in.scalar_type() == at::kFloat, "PackWeight: a float32 matrix");
  const at::Tensor w = w_in.contiguous();
  switch (format) {
    case WeightFormat::kFp32: return {format, w, {}};
    case WeightFormat::kBf16: return {format, w.to(at::kBFloat16), {}};  // round to nearest even
    case WeightFormat::kInt8: {
      // scale = max |w| of the row / 127 (1 for a row of zeros), q = round(w / scale).
      at::Tensor amax = w.abs().amax(1);
      at::Tensor scale = at::where(amax.gt(0), amax.div(127.0), at::ones_like(amax)).contiguous();
      at::Tensor q = w.div(scale.unsqueeze(1)).round().clamp(-127, 127).to(at::kChar).contiguous();
      return {format, q, scale};
    }
  }
  TORCH_CHECK(false, "PackWeight: unknown format");
}

at::Tensor Unpack(const PackedWeight& w) {
  if (w.format == WeightFormat::kInt8) return w.data.to(at::kFloat).mul(w.scale.unsqueeze(1));
  return w.data.to(at::kFloat);
}

bool RowLinearAvailable() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

at::Tensor RowLinear(const at::Tensor& x_in, const PackedWeight& w, const at::Tensor& b_in) {
  static constexpr at::ScalarType kData[] = {at::kFloat, at::kBFloat16, at::kChar};
  TORCH_CHECK(x_in.dim() == 2 && w.data.dim() == 2 && x_in.size(1) == w.data.size(1), "RowLinear: shapes");
  TORCH_CHECK(x_in.scalar_type() == at::kFloat && x_in.is_cpu(), "RowLinear: x float32 on the CPU");
  TORCH_CHECK(w.data.scalar_type() == kData[static_cast<int>(w.format)] && w.data.is_contiguous(),
              "RowLinear: weights not in their format (PackWeight)");
  TORCH_CHECK(w.format != WeightFormat::kInt8 || (w.scale.defined() && w.scale.numel() == w.data.size(0)),
              "RowLinear: int8 weights need a scale per row");
  const at::Tensor x = x_in.contiguous();
  const at::Tensor b = b_in.defined() ? b_in.contiguous() : b_in;
  const int64_t m = x.size(0), K = x.size(1), N = w.data.size(0);
  at::Tensor y = at::empty({m, N}, x.options());
  const Args a{x.data_ptr<float>(),
               w.data.data_ptr(),
               w.scale.defined() ? w.scale.data_ptr<float>() : nullptr,
               b.defined() ? b.data_ptr<float>() : nullptr,
               y.data_ptr<float>(),
               K,
               N};
  switch (w.format) {
    case WeightFormat::kFp32: Run<WeightFormat::kFp32>(a, m); break;
    case WeightFormat::kBf16: Run<WeightFormat::kBf16>(a, m); break;
    case WeightFormat::kInt8: Run<WeightFormat::kInt8>(a, m); break;
  }
  return y;
}

}  // namespace gpt2
