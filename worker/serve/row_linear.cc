#include "worker/serve/row_linear.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/where.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <utility>

#include "worker/serve/simd.h"

namespace gpt2 {
namespace {

struct Args {
  const float* x;
  const void* w;       // (N,K) in the format
  const float* scale;  // int8: (N)
  const float* b;      // null: no bias
  float* y;
  int64_t K, N;
};

// One weight as a float (the tail past the last full vector).
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

// 8 (AVX2) or 16 (AVX-512) weights from w + i as fp32 lanes: a bf16 is the top half of its fp32;
// an int8 is sign-extended and converted.
template <WeightFormat F>
__attribute__((target("avx2,fma"))) inline __m256 Load8(const void* w, int64_t i) {
  if constexpr (F == WeightFormat::kFp32) {
    return _mm256_loadu_ps(static_cast<const float*>(w) + i);
  } else if constexpr (F == WeightFormat::kBf16) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else {
    const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const int8_t*>(w) + i));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
  }
}
template <WeightFormat F>
__attribute__((target("avx512f"))) inline __m512 Load16(const void* w, int64_t i) {
  if constexpr (F == WeightFormat::kFp32) {
    return _mm512_loadu_ps(static_cast<const float*>(w) + i);
  } else if constexpr (F == WeightFormat::kBf16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const int8_t*>(w) + i));
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
  }
}

// AVX2: 3 rows of x by 4 rows of w (12 accumulators and 4 weight vectors of the 16 registers).
#define ROW_TILE_TARGET __attribute__((target("avx2,fma")))
#define ROW_TILE_NAME Tile8
#define ROW_TILE_VEC __m256
#define ROW_TILE_LANES 8
#define ROW_TILE_ZERO _mm256_setzero_ps
#define ROW_TILE_LOADX _mm256_loadu_ps
#define ROW_TILE_FMA _mm256_fmadd_ps
#define ROW_TILE_SUM simd::Sum8
#define ROW_TILE_LOADW Load8
#include "worker/serve/row_linear_tile.inc"
#undef ROW_TILE_TARGET
#undef ROW_TILE_NAME
#undef ROW_TILE_VEC
#undef ROW_TILE_LANES
#undef ROW_TILE_ZERO
#undef ROW_TILE_LOADX
#undef ROW_TILE_FMA
#undef ROW_TILE_SUM
#undef ROW_TILE_LOADW

// AVX-512: 4 rows by 6 (24 accumulators and 6 weight vectors of the 32 registers).
#define ROW_TILE_TARGET __attribute__((target("avx512f")))
#define ROW_TILE_NAME Tile16
#define ROW_TILE_VEC __m512
#define ROW_TILE_LANES 16
#define ROW_TILE_ZERO _mm512_setzero_ps
#define ROW_TILE_LOADX _mm512_loadu_ps
#define ROW_TILE_FMA _mm512_fmadd_ps
#define ROW_TILE_SUM simd::Sum16
#define ROW_TILE_LOADW Load16
#include "worker/serve/row_linear_tile.inc"
#undef ROW_TILE_TARGET
#undef ROW_TILE_NAME
#undef ROW_TILE_VEC
#undef ROW_TILE_LANES
#undef ROW_TILE_ZERO
#undef ROW_TILE_LOADX
#undef ROW_TILE_FMA
#undef ROW_TILE_SUM
#undef ROW_TILE_LOADW

using TileFn = void (*)(const Args&, int64_t, int64_t);

// The tiles of every edge size, kTiles[r - 1][c - 1].
template <WeightFormat F, int R, int C, bool Wide>
struct Tiles {
  TileFn fn[R][C];
  constexpr Tiles() : fn() {
    Fill(std::make_integer_sequence<int, R * C>());
  }
  template <int... I>
  constexpr void Fill(std::integer_sequence<int, I...>) {
    ((fn[I / C][I % C] = Wide ? &Tile16<F, I / C + 1, I % C + 1> : &Tile8<F, I / C + 1, I % C + 1>), ...);
  }
};

// Threads split the columns (w's rows); each streams its rows of w once, reusing each tile of
// C rows across all of x's rows while it is in cache.
template <WeightFormat F, int R, int C, bool Wide>
void Run(const Args& a, int64_t m) {
  static constexpr Tiles<F, R, C, Wide> kTiles;
  const int64_t tiles = (a.N + C - 1) / C;
  at::parallel_for(0, tiles, 16, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t j = t * C;
      const int c = static_cast<int>(std::min<int64_t>(C, a.N - j));
      for (int64_t i = 0; i < m; i += R) kTiles.fn[std::min<int64_t>(R, m - i) - 1][c - 1](a, i, j);
    }
  });
}

template <WeightFormat F>
void Run(const Args& a, int64_t m) {
  if (RowLinearWide())
    Run<F, 4, 6, true>(a, m);
  else
    Run<F, 3, 4, false>(a, m);
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

bool RowLinearWide() {
  static const bool wide = [] {
    const char* isa = std::getenv("GPT2_ROW_LINEAR_ISA");  // "avx2" pins the 8-lane kernels (tests, benchmarks)
    return __builtin_cpu_supports("avx512f") && !(isa && std::string_view(isa) == "avx2");
  }();
  return wide;
}

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
