#include "worker/serve/row_linear.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>

#include "worker/serve/simd.h"

namespace gpt2 {
namespace {

// The register block: kRows rows of x by kCols rows of w, 12 accumulators of 8 lanes.
constexpr int kRows = 3, kCols = 4;

struct Args {
  const float* x;
  const float* w;
  const float* b;  // null: no bias
  float* y;
  int64_t K, N;
};

// y[i..i+R, j..j+C]. Every element's arithmetic is the same sequence whatever R and C are.
template <int R, int C>
__attribute__((target("avx2,fma"))) void Tile(const Args& a, int64_t i, int64_t j) {
  const int64_t K = a.K, K8 = K / 8 * 8;
  const float* x = a.x + i * K;
  const float* w = a.w + j * K;
  // Fully unrolled, so the accumulators live in registers.
  __m256 acc[R][C];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K8; k += 8) {
    __m256 wv[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) wv[c] = _mm256_loadu_ps(w + c * K + k);
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
      for (int64_t k = K8; k < K; ++k) s = std::fma(x[r * K + k], w[c * K + k], s);
      a.y[(i + r) * a.N + j + c] = a.b ? s + a.b[j + c] : s;
    }
  }
}

using TileFn = void (*)(const Args&, int64_t, int64_t);
constexpr TileFn kTiles[kRows][kCols] = {{Tile<1, 1>, Tile<1, 2>, Tile<1, 3>, Tile<1, 4>},
                                         {Tile<2, 1>, Tile<2, 2>, Tile<2, 3>, Tile<2, 4>},
                                         {Tile<3, 1>, Tile<3, 2>, Tile<3, 3>, Tile<3, 4>}};

}  // namespace

bool RowLinearAvailable() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

at::Tensor RowLinear(const at::Tensor& x_in, const at::Tensor& w_in, const at::Tensor& b_in) {
  TORCH_CHECK(x_in.dim() == 2 && w_in.dim() == 2 && x_in.size(1) == w_in.size(1), "RowLinear: shapes");
  TORCH_CHECK(x_in.scalar_type() == at::kFloat && w_in.scalar_type() == at::kFloat && x_in.is_cpu(),
              "RowLinear: float32 on the CPU");
  const at::Tensor x = x_in.contiguous(), w = w_in.contiguous();
  const at::Tensor b = b_in.defined() ? b_in.contiguous() : b_in;
  const int64_t m = x.size(0), K = x.size(1), N = w.size(0);
  at::Tensor y = at::empty({m, N}, x.options());
  const Args a{
      x.data_ptr<float>(), w.data_ptr<float>(), b.defined() ? b.data_ptr<float>() : nullptr, y.data_ptr<float>(), K, N};
  // Threads split the columns (w's rows); each streams its rows of w once, reusing each tile of
  // kCols rows across all of x's rows while it is in cache.
  const int64_t tiles = (N + kCols - 1) / kCols;
  at::parallel_for(0, tiles, 16, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t j = t * kCols;
      const int c = static_cast<int>(std::min<int64_t>(kCols, N - j));
      for (int64_t i = 0; i < m; i += kRows) kTiles[std::min<int64_t>(kRows, m - i) - 1][c - 1](a, i, j);
    }
  });
  return y;
}

}  // namespace gpt2
