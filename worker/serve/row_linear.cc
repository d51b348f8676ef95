#include "worker/serve/row_linear.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <utility>

#include <sys/syscall.h>
#include <unistd.h>

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

// The tiles of every edge size of a kernel K (K::Tile<r, c>), fn[r - 1][c - 1].
template <typename A, int R, int C, typename K>
struct TileTable {
  using Fn = void (*)(const A&, int64_t, int64_t);
  Fn fn[R][C];
  constexpr TileTable() : fn() { Fill(std::make_integer_sequence<int, R * C>()); }
  template <int... I>
  constexpr void Fill(std::integer_sequence<int, I...>) {
    ((fn[I / C][I % C] = &K::template Tile<I / C + 1, I % C + 1>), ...);
  }
};

// Threads split the columns (w's rows); each streams its rows of w once, reusing each tile of
// C rows across all of x's rows while it is in cache.
// `N` counts the kernel's columns (for QVnniPacked, blocks of 16); `grain`: tiles a thread takes at least.
template <int R, int C, typename K, typename A>
void RunTiles(const A& a, int64_t m, int64_t N, int64_t grain = 16) {
  static constexpr TileTable<A, R, C, K> kTiles;
  const int64_t tiles = (N + C - 1) / C;
  at::parallel_for(0, tiles, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t j = t * C;
      const int c = static_cast<int>(std::min<int64_t>(C, N - j));
      for (int64_t i = 0; i < m; i += R) kTiles.fn[std::min<int64_t>(R, m - i) - 1][c - 1](a, i, j);
    }
  });
}

template <WeightFormat F>
struct Narrow {
  template <int R, int C>
  static void Tile(const Args& a, int64_t i, int64_t j) {
    Tile8<F, R, C>(a, i, j);
  }
};
template <WeightFormat F>
struct Wide {
  template <int R, int C>
  static void Tile(const Args& a, int64_t i, int64_t j) {
    Tile16<F, R, C>(a, i, j);
  }
};

template <WeightFormat F>
void Run(const Args& a, int64_t m) {
  if (RowLinearWide())
    RunTiles<4, 6, Wide<F>>(a, m, a.N);
  else
    RunTiles<3, 4, Narrow<F>>(a, m, a.N);
}

// w8a8: int8 rows of x (each with its scale) by int8 rows of w. The dot products are int32 sums
// of int8 products, exact, so their order does not matter and both kernels give the same bits:
// y = float(Σ qx·qw) · sx · sw (+ b).
struct QArgs {
  const int8_t* x;       // (m,Kp)
  const int8_t* wp;      // QVnniPacked's layout of w (PackedWeight::vnni), or null
  const float* sx;       // (m)
  const int8_t* w;       // (N,Kp)
  const float* sw;       // (N)
  const int32_t* wsum;   // (N)
  const float* b;        // null: no bias
  float* y;
  int64_t Kp, N;
};
constexpr int64_t kQuantAlign = 64;  // Kp: K padded with zeros to a multiple of this

inline void QStore(const QArgs& a, int64_t i, int64_t j, int32_t dot) {
  const float v = static_cast<float>(dot) * a.sx[i] * a.sw[j];
  a.y[i * a.N + j] = a.b ? v + a.b[j] : v;
}

// AVX2: |x| (unsigned) times w with x's sign (signed) in pairs (vpmaddubsw; each pair at most
// 2 · 127 · 127, no saturation), pairs summed into int32 lanes (vpmaddwd).
struct QNarrow {
  template <int R, int C>
  __attribute__((target("avx2,fma"))) static void Tile(const QArgs& a, int64_t i, int64_t j) {
    __m256i acc[R][C];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_si256();
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t k = 0; k < a.Kp; k += 32) {
      __m256i wv[C];
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c)
        wv[c] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.w + (j + c) * a.Kp + k));
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.x + (i + r) * a.Kp + k));
        const __m256i ax = _mm256_abs_epi8(xv);
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) {
          const __m256i pairs = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(wv[c], xv));
          acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(pairs, ones));
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int c = 0; c < C; ++c) {
        alignas(32) int32_t lanes[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc[r][c]);
        int32_t dot = 0;
        for (int32_t v : lanes) dot += v;
        QStore(a, i + r, j + c, dot);
      }
    }
  }
};

// The w8a8 epilogue of 16 columns from `col` (fewer at the end): y = float(dot) · sx · sw (+ b),
// multiplies, then the bias (no fused multiply-add), as PyTorch rounds it.
struct QColumns {
  int64_t col;
  __mmask16 mask;
  __m512 sw, bias;
  __attribute__((target("avx512f"))) QColumns(const QArgs& a, int64_t c)
      : col(c), mask(a.N - c >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (a.N - c)) - 1)) {
    sw = _mm512_maskz_loadu_ps(mask, a.sw + col);
    bias = a.b ? _mm512_maskz_loadu_ps(mask, a.b + col) : _mm512_setzero_ps();
  }
  __attribute__((target("avx512f"))) void Store(const QArgs& a, int64_t row, __m512i dot) const {
    __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(a.sx[row])), sw);
    if (a.b) v = _mm512_add_ps(v, bias);
    _mm512_mask_storeu_ps(a.y + row * a.N + col, mask, v);
  }
};

// AVX-512 VNNI: x + 128 (unsigned) times w (signed), four products a lane (vpdpbusd); the 128 · Σw
// that the offset adds comes off at the end. w in blocks of 16 columns, each stored as (Kp/4, 16, 4)
// (PackedWeight::vnni):
// one load holds 4 k-bytes of 16 columns, a broadcast holds 4 k-bytes of a row of x, and vpdpbusd
// adds their products into the 16 columns' int32 sums, so a tile of R rows by C blocks needs no
// horizontal sums and each weight load feeds R multiply-adds. The same integers as QNarrow (exact),
// the same float epilogue (multiplies, then the bias: no fused multiply-add).
struct QVnniPacked {
  template <int R, int C>
  __attribute__((target("avx512f,avx512bw,avx512vnni"))) static void Tile(const QArgs& a, int64_t i, int64_t jb) {
    __m512i acc[R][C];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_si512();
    const __m512i offset = _mm512_set1_epi8(static_cast<char>(0x80));
    const int64_t K4 = a.Kp / 4;
    const int8_t* w = a.wp + jb * K4 * 64;
    for (int64_t k = 0; k < K4; ++k) {
      __m512i xb[R];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        int32_t four;
        std::memcpy(&four, a.x + (i + r) * a.Kp + 4 * k, 4);
        xb[r] = _mm512_xor_si512(_mm512_set1_epi32(four), offset);
      }
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) {
        const __m512i wv = _mm512_loadu_si512(w + (c * K4 + k) * 64);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], xb[r], wv);
      }
    }
    for (int c = 0; c < C; ++c) {
      const QColumns cols(a, (jb + c) * 16);
      const __m512i correction = _mm512_slli_epi32(_mm512_maskz_loadu_epi32(cols.mask, a.wsum + cols.col), 7);  // 128 · Σw
      for (int r = 0; r < R; ++r) cols.Store(a, i + r, _mm512_sub_epi32(acc[r][c], correction));
    }
  }
};

// AMX (Sapphire Rapids on): one instruction (tdpbssd) multiplies a tile of 16 rows of x's int8
// (16 x 64 bytes, a row's 64 k-bytes each) by a tile of 16 columns' 64 k-bytes (16 rows of 4
// k-bytes x 16 columns: the VNNI layout's 64-byte rows, so the packed weights load as they are),
// signed by signed, into a tile of 16 x 16 int32 sums. A pass holds 2 x 2 of them: 32 rows by 32
// columns. The same exact integers as the other kernels, and QVnniPacked's epilogue.
struct alignas(64) AmxConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Tiles 0-3 sums (row tile r, column block c at 2r + c), 4-5 x, 6-7 w; all 16 rows of 64 bytes.
template <int NR, int NC>
__attribute__((target("amx-tile,amx-int8,avx512f,avx512bw"))) void AmxTile(const QArgs& a, int64_t i, int64_t jb) {
  _tile_zero(0);
  if constexpr (NC > 1) _tile_zero(1);
  if constexpr (NR > 1) _tile_zero(2);
  if constexpr (NR > 1 && NC > 1) _tile_zero(3);
  const int64_t K4 = a.Kp / 4;
  const int8_t* x = a.x + i * a.Kp;
  const int8_t* w = a.wp + jb * K4 * 64;
  for (int64_t k = 0; k < a.Kp; k += 64) {
    _tile_loadd(4, x + k, a.Kp);
    if constexpr (NR > 1) _tile_loadd(5, x + 16 * a.Kp + k, a.Kp);
    _tile_loadd(6, w + k * 16, 64);
    if constexpr (NC > 1) _tile_loadd(7, w + (K4 + k / 4) * 64, 64);
    _tile_dpbssd(0, 4, 6);
    if constexpr (NC > 1) _tile_dpbssd(1, 4, 7);
    if constexpr (NR > 1) _tile_dpbssd(2, 5, 6);
    if constexpr (NR > 1 && NC > 1) _tile_dpbssd(3, 5, 7);
  }
  alignas(64) int32_t sums[4][16][16];
  _tile_stored(0, sums[0], 64);
  if constexpr (NC > 1) _tile_stored(1, sums[1], 64);
  if constexpr (NR > 1) _tile_stored(2, sums[2], 64);
  if constexpr (NR > 1 && NC > 1) _tile_stored(3, sums[3], 64);
  for (int c = 0; c < NC; ++c) {
    const QColumns cols(a, (jb + c) * 16);
    for (int r = 0; r < NR * 16; ++r) cols.Store(a, i + r, _mm512_load_si512(sums[(r / 16) * 2 + c][r % 16]));
  }
}

// Column blocks [2 p0, 2 p1) of the first m16 rows (a multiple of 16), on this thread.
__attribute__((target("amx-tile,amx-int8,avx512f,avx512bw"))) void AmxColumns(const QArgs& a, int64_t m16,
                                                                             int64_t p0, int64_t p1) {
  AmxConfig config;
  for (int t = 0; t < 8; ++t) config.rows[t] = 16, config.colsb[t] = 64;
  _tile_loadconfig(&config);
  const int64_t blocks = (a.N + 15) / 16;
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t jb = 2 * p;
    const bool pair = jb + 1 < blocks;
    int64_t i = 0;
    for (; i + 32 <= m16; i += 32) pair ? AmxTile<2, 2>(a, i, jb) : AmxTile<2, 1>(a, i, jb);
    if (i < m16) pair ? AmxTile<1, 2>(a, i, jb) : AmxTile<1, 1>(a, i, jb);
  }
  _tile_release();
}

bool RowLinearVnni() {
  static const bool vnni = [] {
    const char* isa = std::getenv("GPT2_ROW_LINEAR_ISA");
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") &&
           !(isa && std::string_view(isa) == "avx2");
  }();
  return vnni;
}

}  // namespace

// AMX needs the kernel's leave for this process to use the tile registers (Linux 5.16 on:
// arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)); without it the first tile instruction
// faults. GPT2_ROW_LINEAR_ISA=avx512 (or avx2) keeps to the vector kernels.
bool RowLinearAmx() {
  static const bool amx = [] {
    const char* isa = std::getenv("GPT2_ROW_LINEAR_ISA");
    if (isa && (std::string_view(isa) == "avx2" || std::string_view(isa) == "avx512")) return false;
    if (!RowLinearVnni() || !__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-int8")) return false;
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return amx;
}

namespace {

// Each row of x (m,K) as int8 (m,Kp) with its scale: max |x| / 127 (1 for a row of zeros),
// q = x / scale rounded to nearest even (|q| <= 127 by construction), the padding zero. A row's
// result depends on that row alone; the vector and the scalar steps round alike.
// 8 floats / s, rounded to nearest even, as int32 lanes.
__attribute__((target("avx2,fma"))) inline __m256i Quantize8(const float* p, __m256 s) {
  return _mm256_cvtps_epi32(
      _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(p), s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

__attribute__((target("avx2,fma"))) void QuantizeRow(const float* row, int64_t K, int64_t Kp, int8_t* out,
                                                    float* scale) {
  const int64_t K32 = K / 32 * 32;
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 vmax = _mm256_setzero_ps();
  for (int64_t k = 0; k + 8 <= K; k += 8) vmax = _mm256_max_ps(vmax, _mm256_and_ps(_mm256_loadu_ps(row + k), abs_mask));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  float amax = 0;
  for (float v : lanes) amax = std::max(amax, v);
  for (int64_t k = K / 8 * 8; k < K; ++k) amax = std::max(amax, std::abs(row[k]));
  const float s = amax > 0 ? amax / 127.0f : 1.0f;
  *scale = s;
  const __m256 sv = _mm256_set1_ps(s);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t k = 0; k < K32; k += 32) {
    const __m256i ab = _mm256_packs_epi32(Quantize8(row + k, sv), Quantize8(row + k + 8, sv));
    const __m256i cd = _mm256_packs_epi32(Quantize8(row + k + 16, sv), Quantize8(row + k + 24, sv));
    const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k), bytes);
  }
  for (int64_t k = K32; k < K; ++k) out[k] = static_cast<int8_t>(std::nearbyint(row[k] / s));
  std::memset(out + K, 0, static_cast<size_t>(Kp - K));
}

void QuantizeRows(const float* x, int64_t m, int64_t K, int64_t Kp, int8_t* q, float* scale) {
  at::parallel_for(0, m, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) QuantizeRow(x + r * K, K, Kp, q + r * Kp, scale + r);
  });
}

at::Tensor RowLinearW8A8(const at::Tensor& x, const PackedWeight& w, const at::Tensor& b) {
  const int64_t m = x.size(0), K = x.size(1), Kp = w.data.size(1), N = w.data.size(0);
  at::Tensor qx = at::empty({m, Kp}, x.options().dtype(at::kChar));
  at::Tensor sx = at::empty({m}, x.options());
  QuantizeRows(x.data_ptr<float>(), m, K, Kp, qx.data_ptr<int8_t>(), sx.data_ptr<float>());
  at::Tensor y = at::empty({m, N}, x.options());
  const QArgs a{qx.data_ptr<int8_t>(),
                w.vnni.defined() ? w.vnni.data_ptr<int8_t>() : nullptr,
                sx.data_ptr<float>(),
                w.data.data_ptr<int8_t>(),
                w.scale.data_ptr<float>(),
                w.wsum.data_ptr<int32_t>(),
                b.defined() ? b.data_ptr<float>() : nullptr,
                y.data_ptr<float>(),
                Kp,
                N};
  if (!a.wp) {  // packed when the CPU has VNNI
    RunTiles<2, 4, QNarrow>(a, m, N);
    return y;
  }
  // With AMX, rows in tiles of 16 there, the rest (fewer than 16) on the VNNI tiles: the same sums.
  const int64_t m16 = RowLinearAmx() ? m / 16 * 16 : 0;
  if (m16 > 0) {
    const int64_t pairs = ((N + 15) / 16 + 1) / 2;
    at::parallel_for(0, pairs, 1, [&](int64_t p0, int64_t p1) { AmxColumns(a, m16, p0, p1); });
  }
  if (m16 < m) {
    QArgs rest = a;
    rest.x += m16 * Kp, rest.sx += m16, rest.y += m16 * N;
    RunTiles<4, 6, QVnniPacked>(rest, m - m16, (N + 15) / 16, /*grain=*/1);
  }
  return y;
}

}  // namespace

PackedWeight PackWeight(const at::Tensor& w_in, WeightFormat format) {
  TORCH_CHECK(w_in.dim() == 2 && w_in.scalar_type() == at::kFloat, "PackWeight: a float32 matrix");
  const at::Tensor w = w_in.contiguous();
  const int64_t K = w.size(1);
  switch (format) {
    case WeightFormat::kFp32: return {format, w, {}, {}, K, {}};
    case WeightFormat::kBf16: return {format, w.to(at::kBFloat16), {}, {}, K, {}};  // round to nearest even
    case WeightFormat::kInt8:
    case WeightFormat::kW8A8: {
      // scale = max |w| of the row / 127 (1 for a row of zeros), q = round(w / scale).
      at::Tensor amax = w.abs().amax(1);
      at::Tensor scale = at::where(amax.gt(0), amax.div(127.0), at::ones_like(amax)).contiguous();
      at::Tensor q = w.div(scale.unsqueeze(1)).round().clamp(-127, 127).to(at::kChar).contiguous();
      if (format == WeightFormat::kInt8) return {format, q, scale, {}, K, {}};
      const int64_t Kp = (K + kQuantAlign - 1) / kQuantAlign * kQuantAlign;
      at::Tensor padded = at::zeros({w.size(0), Kp}, q.options());
      padded.narrow(1, 0, K).copy_(q);
      PackedWeight p{format, padded, scale, q.sum(1, /*keepdim=*/false, at::kInt).contiguous(), K, {}};
      if (RowLinearVnni()) {  // QVnniPacked's layout: (N/16 blocks, Kp/4, 16 columns, 4 k-bytes)
        const int64_t N = w.size(0), Nb = (N + 15) / 16;
        at::Tensor rows = at::zeros({Nb * 16, Kp}, q.options());
        rows.narrow(0, 0, N).copy_(padded);
        p.vnni = rows.view({Nb, 16, Kp / 4, 4}).permute({0, 2, 1, 3}).contiguous();
      }
      return p;
    }
  }
  TORCH_CHECK(false, "PackWeight: unknown format");
}

at::Tensor Unpack(const PackedWeight& w) {
  if (w.format == WeightFormat::kInt8 || w.format == WeightFormat::kW8A8)
    return w.data.narrow(1, 0, w.in_features).to(at::kFloat).mul(w.scale.unsqueeze(1));
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
  static constexpr at::ScalarType kData[] = {at::kFloat, at::kBFloat16, at::kChar, at::kChar};
  TORCH_CHECK(x_in.dim() == 2 && w.data.dim() == 2 && x_in.size(1) == w.in_features, "RowLinear: shapes");
  TORCH_CHECK(x_in.scalar_type() == at::kFloat && x_in.is_cpu(), "RowLinear: x float32 on the CPU");
  TORCH_CHECK(w.data.scalar_type() == kData[static_cast<int>(w.format)] && w.data.is_contiguous(),
              "RowLinear: weights not in their format (PackWeight)");
  TORCH_CHECK(w.format == WeightFormat::kFp32 || w.format == WeightFormat::kBf16 ||
                  (w.scale.defined() && w.scale.numel() == w.data.size(0)),
              "RowLinear: int8 weights need a scale per row");
  TORCH_CHECK(w.format != WeightFormat::kW8A8 || (w.wsum.defined() && w.data.size(1) % kQuantAlign == 0),
              "RowLinear: w8a8 weights not packed (PackWeight)");
  const at::Tensor x = x_in.contiguous();
  const at::Tensor b = b_in.defined() ? b_in.contiguous() : b_in;
  if (w.format == WeightFormat::kW8A8) return RowLinearW8A8(x, w, b);
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
    case WeightFormat::kW8A8: break;  // above
  }
  return y;
}

}  // namespace gpt2
