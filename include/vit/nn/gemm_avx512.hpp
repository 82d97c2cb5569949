// vit/nn/gemm_avx512.hpp - single-precision GEMM against a pre-packed weight,
// with an AVX-512 micro-kernel chosen at run time and fused epilogues.
//
//   c = a b^T + bias            (Epilogue::store)
//   c += a b^T + bias           (Epilogue::accumulate, the residual form)
//   c = gelu_erf(a b^T + bias)  (Epilogue::gelu, exact erf GELU)
//
// a: [m, k] row-major (any outer stride); b: a Linear weight [n, k], packed
// once by PackedWeight; c: [m, n] row-major (any outer stride); bias: n floats
// or null. The column-range overload computes only columns [n0, n1) of c, so
// threads can split n and share a, b and c.
//
// Design (Goto & van de Geijn, "Anatomy of high-performance matrix
// multiplication"; the BLIS loop structure): the weight is stored once as
// panels of kNr = 32 output columns, each panel k-major (for every depth
// index, 32 contiguous floats), zero-padded to a whole panel. A block of a
// (up to kMc rows by kKc depth) is packed into the caller's scratch as
// micro-panels of kMr = 14 rows, k-major. Loops: depth blocks, row blocks,
// weight panels, micro-panels; the micro-kernel keeps a 14 x 32 tile of c in
// 28 of the 32 zmm registers (2 more hold the weight row, 1 the broadcast of
// a) and does 28 FMAs per 2 vector loads + 14 broadcasts. The packed a block
// stays in L2 and is reused by every weight panel; a weight panel slice is
// reused by every micro-panel. The depth block is long (768, a whole ViT-B
// row): measured on a Zen 5 core (48 KB L1, 1 MB L2), fewer passes over c beat
// keeping the weight slice in L1 (it streams from L2 instead), 256 -> 768 gave
// about +15%. Bias, accumulation and GELU are applied to the tile in registers
// after its last depth block. Edge tiles use kernels instantiated for 1..13
// rows (the last two micro-panels are split evenly rather than leaving 1 row)
// and masked loads/stores of c, so nothing is read or written outside the
// views, and nothing is allocated.
//
// The AVX-512 code is compiled with a target attribute (no -march needed) and
// runs only when the CPU reports AVX-512F/BW/DQ/VL; otherwise (other x86-64
// CPUs, other architectures, or after gemm_packed_force_portable(true)) a
// portable C++ kernel on the same packed layout runs.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <utility>

#include "vit/error.hpp"
#include "vit/tensor.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define VIT_PGEMM_X86 1
#include <immintrin.h>
#define VIT_PGEMM_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))
#else
#define VIT_PGEMM_X86 0
#endif

#if defined(__clang__)
#define VIT_PGEMM_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define VIT_PGEMM_UNROLL _Pragma("GCC unroll 16")
#else
#define VIT_PGEMM_UNROLL
#endif

namespace vit::nn {

/// What gemm_packed does with the product p = a b^T (+ bias) of each element.
enum class Epilogue {
  store,       ///< c = p
  accumulate,  ///< c += p (residual add)
  gelu,        ///< c = gelu_erf(p) = 0.5 p (1 + erf(p / sqrt 2))
};

namespace detail::pgemm {

inline constexpr int kNv = 2;                  // zmm vectors per tile row
inline constexpr Index kNr = 16 * kNv;         // columns per weight panel
inline constexpr int kMr = 14;                 // rows per micro-tile
inline constexpr Index kKc = 768;              // depth block
inline constexpr Index kMc = 36 * Index(kMr);  // row block (504)

// What a micro-tile does besides the product.
struct TileArgs {
  const float* bias;  // bias at the panel's first column, or null
  Epilogue ep;
  bool load_c;                    // start from c (later depth blocks, or accumulate)
  bool last;                      // last depth block: apply bias / GELU
  int lo, hi;                     // tile columns to read/write, [lo, hi) within [0, nr)
  const float* next_c = nullptr;  // the next tile of c (to prefetch), next_rows rows
  int next_rows = 0;
};

// Rows of the micro-panel starting at row i of an mc-row block: mr, except
// that a short remainder is avoided by splitting the last two panels evenly
// (197 rows = 13 x 14 + 8 + 7, not 14 x 14 + 1: a 1-row tile runs at a
// fraction of the speed, its chain of FMAs being latency-bound).
inline int panel_rows(Index i, Index mc, int mr) {
  const Index left = mc - i;
  if (left <= mr) return static_cast<int>(left);
  if (left < 2 * mr && left - mr < mr / 2) return static_cast<int>((left + 1) / 2);
  return mr;
}

// ---------------------------------------------------------------- portable --

inline float gelu_scalar(float x) {
  return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752440f));
}

// RI rows x 8 columns [j0, j0 + 8) of a portable tile: small enough for the
// accumulators to stay in registers on SSE2 (8 xmm) or NEON, the column loop
// vectorised by the compiler for whatever the build targets.
template <int RI>
void tile_portable_block(int r, int i0, int j0, int nr, Index kc, const float* a, const float* b,
                         float* c, Index ldc, const TileArgs& t) {
  float acc[RI][8] = {};
  const int lo = std::max(t.lo - j0, 0), hi = std::min(t.hi - j0, 8);
  if (lo >= hi) return;
  if (t.load_c)
    for (int i = 0; i < RI; ++i)
      for (int j = lo; j < hi; ++j) acc[i][j] = c[(i0 + i) * ldc + j0 + j];
  for (Index k = 0; k < kc; ++k) {
    const float* bk = b + k * nr + j0;
    const float* ak = a + k * r + i0;
    for (int i = 0; i < RI; ++i)
      for (int j = 0; j < 8; ++j) acc[i][j] += ak[i] * bk[j];
  }
  for (int i = 0; i < RI; ++i)
    for (int j = lo; j < hi; ++j) {
      float v = acc[i][j];
      if (t.last) {
        if (t.bias) v += t.bias[j0 + j];
        if (t.ep == Epilogue::gelu) v = gelu_scalar(v);
      }
      c[(i0 + i) * ldc + j0 + j] = v;
    }
}

// An r x (16 NV) tile in blocks of 4 rows x 8 columns.
template <int NV>
void tile_portable(int r, Index kc, const float* a, const float* b, float* c, Index ldc,
                   const TileArgs& t) {
  constexpr int nr = 16 * NV;
  for (int i0 = 0; i0 < r; i0 += 4)
    for (int j0 = 0; j0 < nr; j0 += 8) switch (std::min(4, r - i0)) {
        case 4:
          tile_portable_block<4>(r, i0, j0, nr, kc, a, b, c, ldc, t);
          break;
        case 3:
          tile_portable_block<3>(r, i0, j0, nr, kc, a, b, c, ldc, t);
          break;
        case 2:
          tile_portable_block<2>(r, i0, j0, nr, kc, a, b, c, ldc, t);
          break;
        default:
          tile_portable_block<1>(r, i0, j0, nr, kc, a, b, c, ldc, t);
          break;
      }
}

// ----------------------------------------------------------------- AVX-512 --
#if VIT_PGEMM_X86

// Several unmasked intrinsics (min, max, roundscale, scalef, unpack,
// shuffle_f32x4) start from _mm512_undefined_ps(), which GCC 12 reports under
// -W(maybe-)uninitialized once inlined; their zero-masking forms with all
// lanes selected compile to the same unmasked instructions.
inline constexpr __mmask16 kAll = static_cast<__mmask16>(0xFFFF);
VIT_PGEMM_TARGET inline __m512 min16(__m512 x, __m512 y) { return _mm512_maskz_min_ps(kAll, x, y); }
VIT_PGEMM_TARGET inline __m512 max16(__m512 x, __m512 y) { return _mm512_maskz_max_ps(kAll, x, y); }
VIT_PGEMM_TARGET inline __m512 scalef16(__m512 x, __m512 y) {
  return _mm512_maskz_scalef_ps(kAll, x, y);
}

// 1 + erf(z), |error| <~ 1e-7 (the 1+ form keeps erfc's accuracy for z < 0).
// |z| < 1: 1 + z P(z^2), P a degree-6 near-minimax fit of erf(z)/z.
// |z| >= 1: erfc(|z|) = exp(Q(|z| - 2.5) - z^2), Q a degree-8 fit of
// log(erfc(t)) + t^2 on [1, 4]; 1 + erf = 2 - erfc (z > 0) or erfc (z < 0).
// |z| > 4: erfc = 0 (below half an ulp of 1). NaN stays NaN in gelu16.
VIT_PGEMM_TARGET inline __m512 exp16(__m512 p) {
  // p in [-20, 0]: p = n ln2 + r, |r| <= ln2 / 2, exp(r) by a degree-6 fit.
  const __m512 n =
      _mm512_maskz_roundscale_ps(kAll, _mm512_mul_ps(p, _mm512_set1_ps(1.44269504088896341f)),
                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), p);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723e-6f), r);
  __m512 e = _mm512_set1_ps(0.0013941108434f);
  e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(0.00837512639815f));
  e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(0.0416663528968f));
  e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(0.166664155147f));
  e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(0.500000004712f));
  e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(1.00000003772f));
  e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(1.0f));
  return scalef16(e, n);
}

VIT_PGEMM_TARGET inline __m512 erf1p16(__m512 z) {
  const __m512 t = _mm512_abs_ps(z);
  // Small |z|.
  const __m512 u = _mm512_mul_ps(z, z);
  __m512 p = _mm512_set1_ps(7.87587506269e-5f);
  p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(-0.000801686428717f));
  p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(0.00518908742343f));
  p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(-0.0268542120106f));
  p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(0.112835947152f));
  p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(-0.376126266667f));
  p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(1.12837916585f));
  const __m512 small = _mm512_fmadd_ps(z, p, _mm512_set1_ps(1.0f));
  // Large |z| (t clamped into the fitted range; NaN becomes 4 here).
  const __m512 tc = min16(max16(t, _mm512_set1_ps(1.0f)), _mm512_set1_ps(4.0f));
  const __m512 s = _mm512_sub_ps(tc, _mm512_set1_ps(2.5f));
  __m512 q = _mm512_set1_ps(1.63715141459e-6f);
  q = _mm512_fmadd_ps(q, s, _mm512_set1_ps(-1.33150143973e-5f));
  q = _mm512_fmadd_ps(q, s, _mm512_set1_ps(7.72913761538e-5f));
  q = _mm512_fmadd_ps(q, s, _mm512_set1_ps(-0.000420122523541f));
  q = _mm512_fmadd_ps(q, s, _mm512_set1_ps(0.00216530354916f));
  q = _mm512_fmadd_ps(q, s, _mm512_set1_ps(-0.0108585416429f));
  q = _mm512_fmadd_ps(q, s, _mm512_set1_ps(0.0561062963893f));
  q = _mm512_fmadd_ps(q, s, _mm512_set1_ps(-0.352680674224f));
  q = _mm512_fmadd_ps(q, s, _mm512_set1_ps(-1.55681527273f));
  __m512 erfc = exp16(_mm512_fnmadd_ps(tc, tc, q));  // exp(q - tc^2), one rounding
  erfc = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(t, _mm512_set1_ps(4.0f), _CMP_LE_OQ), erfc);
  const __mmask16 positive = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_GT_OQ);
  const __m512 large = _mm512_mask_sub_ps(erfc, positive, _mm512_set1_ps(2.0f), erfc);
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(t, _mm512_set1_ps(1.0f), _CMP_LT_OQ), large,
                              small);
}

// gelu_erf(x) = 0.5 x (1 + erf(x / sqrt 2)).
VIT_PGEMM_TARGET inline __m512 gelu16(__m512 x) {
  const __m512 g = erf1p16(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752440f)));
  return _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.5f)), g);
}

// Lanes [lo, hi) of a 16-lane vector (both may lie outside [0, 16]).
inline __mmask16 lane_mask(int lo, int hi) {
  lo = std::max(lo, 0);
  hi = std::min(hi, 16);
  if (lo >= hi) return 0;
  return static_cast<__mmask16>(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

// One R x (16 NV) micro-tile over depth kc. a: kc x R (k-major), b: kc x 16 NV
// (k-major, 64-byte aligned), c: the tile's top-left element. Full: all
// columns of the tile are in range (t.lo == 0, t.hi == 16 NV).
template <int R, int NV, bool Full>
VIT_PGEMM_TARGET void tile_avx512(Index kc, const float* a, const float* b, float* c, Index ldc,
                                  const TileArgs& t) {
  // Start fetching the next tile's rows of c (they are read or written next).
  for (int i = 0; i < t.next_rows; ++i) {
    const char* row = reinterpret_cast<const char*>(t.next_c + i * ldc);
    VIT_PGEMM_UNROLL
    for (int v = 0; v < NV; ++v) _mm_prefetch(row + 64 * v, _MM_HINT_T0);
  }
  __m512 acc[R][NV];
  __mmask16 mask[NV];
  VIT_PGEMM_UNROLL
  for (int v = 0; v < NV; ++v)
    mask[v] = Full ? static_cast<__mmask16>(0xFFFF) : lane_mask(t.lo - 16 * v, t.hi - 16 * v);
  if (t.load_c) {
    VIT_PGEMM_UNROLL
    for (int i = 0; i < R; ++i) {
      VIT_PGEMM_UNROLL
      for (int v = 0; v < NV; ++v) {
        if (Full)
          acc[i][v] = _mm512_loadu_ps(c + i * ldc + 16 * v);
        else
          acc[i][v] =
              mask[v] ? _mm512_maskz_loadu_ps(mask[v], c + i * ldc + 16 * v) : _mm512_setzero_ps();
      }
    }
  } else {
    VIT_PGEMM_UNROLL
    for (int i = 0; i < R; ++i) {
      VIT_PGEMM_UNROLL
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
    }
  }

  for (Index k = 0; k < kc; ++k) {
    __m512 bv[NV];
    VIT_PGEMM_UNROLL
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_ps(b + 16 * v);
    VIT_PGEMM_UNROLL
    for (int i = 0; i < R; ++i) {
      const __m512 av = _mm512_set1_ps(a[i]);
      VIT_PGEMM_UNROLL
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
    }
    a += R;
    b += 16 * NV;
  }

  if (t.last && (t.bias || t.ep == Epilogue::gelu)) {
    __m512 bias[NV];
    VIT_PGEMM_UNROLL
    for (int v = 0; v < NV; ++v)
      bias[v] = (t.bias && mask[v]) ? _mm512_maskz_loadu_ps(mask[v], t.bias + 16 * v)
                                    : _mm512_setzero_ps();
    const bool gelu = t.ep == Epilogue::gelu;
    VIT_PGEMM_UNROLL
    for (int i = 0; i < R; ++i) {
      VIT_PGEMM_UNROLL
      for (int v = 0; v < NV; ++v) {
        acc[i][v] = _mm512_add_ps(acc[i][v], bias[v]);
        if (gelu) acc[i][v] = gelu16(acc[i][v]);
      }
    }
  }

  VIT_PGEMM_UNROLL
  for (int i = 0; i < R; ++i) {
    VIT_PGEMM_UNROLL
    for (int v = 0; v < NV; ++v) {
      if (Full)
        _mm512_storeu_ps(c + i * ldc + 16 * v, acc[i][v]);
      else if (mask[v])
        _mm512_mask_storeu_ps(c + i * ldc + 16 * v, mask[v], acc[i][v]);
    }
  }
}

// pack_a (below) with a 16 x 16 register transpose: up to 16 rows of a are
// loaded 16 depth indices at a time, transposed (unpack, shuffle within 128-bit
// lanes, then a 4 x 4 transpose of the lanes), and each depth index's r values
// stored contiguously with a masked store.
VIT_PGEMM_TARGET inline void transpose16(__m512 (&v)[16]) {
  __m512 u[16];
  for (int g = 0; g < 4; ++g) {  // rows 4g .. 4g + 3
    const __m512 t0 = _mm512_maskz_unpacklo_ps(kAll, v[4 * g], v[4 * g + 1]);
    const __m512 t1 = _mm512_maskz_unpackhi_ps(kAll, v[4 * g], v[4 * g + 1]);
    const __m512 t2 = _mm512_maskz_unpacklo_ps(kAll, v[4 * g + 2], v[4 * g + 3]);
    const __m512 t3 = _mm512_maskz_unpackhi_ps(kAll, v[4 * g + 2], v[4 * g + 3]);
    // u[4j + g], lane L: rows 4g .. 4g + 3 at depth 4L + j.
    u[0 + g] = _mm512_shuffle_ps(t0, t2, 0x44);
    u[4 + g] = _mm512_shuffle_ps(t0, t2, 0xEE);
    u[8 + g] = _mm512_shuffle_ps(t1, t3, 0x44);
    u[12 + g] = _mm512_shuffle_ps(t1, t3, 0xEE);
  }
  for (int j = 0; j < 4; ++j) {  // 4 x 4 transpose of the 128-bit lanes
    const __m512 x0 = _mm512_maskz_shuffle_f32x4(kAll, u[4 * j], u[4 * j + 1], 0x44);
    const __m512 x1 = _mm512_maskz_shuffle_f32x4(kAll, u[4 * j], u[4 * j + 1], 0xEE);
    const __m512 x2 = _mm512_maskz_shuffle_f32x4(kAll, u[4 * j + 2], u[4 * j + 3], 0x44);
    const __m512 x3 = _mm512_maskz_shuffle_f32x4(kAll, u[4 * j + 2], u[4 * j + 3], 0xEE);
    v[0 + j] = _mm512_maskz_shuffle_f32x4(kAll, x0, x2, 0x88);  // depth j
    v[4 + j] = _mm512_maskz_shuffle_f32x4(kAll, x0, x2, 0xDD);  // depth 4 + j
    v[8 + j] = _mm512_maskz_shuffle_f32x4(kAll, x1, x3, 0x88);
    v[12 + j] = _mm512_maskz_shuffle_f32x4(kAll, x1, x3, 0xDD);
  }
}

VIT_PGEMM_TARGET inline void pack_a_avx512(const float* a, Index lda, Index mc, Index kc, int mr,
                                           float* dst) {
  for (Index i0 = 0, r = 0; i0 < mc; i0 += r) {
    r = panel_rows(i0, mc, mr);
    const __mmask16 row_mask = lane_mask(0, static_cast<int>(r));
    float* panel = dst + i0 * kc;
    for (Index k0 = 0; k0 < kc; k0 += 16) {
      const int kn = static_cast<int>(std::min<Index>(16, kc - k0));
      const __mmask16 depth_mask = lane_mask(0, kn);
      __m512 v[16];
      for (int i = 0; i < 16; ++i)
        v[i] = i < r ? _mm512_maskz_loadu_ps(depth_mask, a + (i0 + i) * lda + k0)
                     : _mm512_setzero_ps();
      transpose16(v);
      for (int kk = 0; kk < kn; ++kk) _mm512_mask_storeu_ps(panel + (k0 + kk) * r, row_mask, v[kk]);
    }
  }
}

using TileFn = void (*)(Index, const float*, const float*, float*, Index, const TileArgs&);

template <int NV, bool Full, int... R>
constexpr std::array<TileFn, sizeof...(R)> make_tiles(std::integer_sequence<int, R...>) {
  return {{&tile_avx512<R + 1, NV, Full>...}};
}

// tiles<MR, NV>()[full][r - 1] runs an r-row tile.
template <int MR, int NV>
const std::array<std::array<TileFn, MR>, 2>& tiles() {
  static const std::array<std::array<TileFn, MR>, 2> table = {
      {make_tiles<NV, false>(std::make_integer_sequence<int, MR>()),
       make_tiles<NV, true>(std::make_integer_sequence<int, MR>())}};
  return table;
}

// gelu16 over an array (tests, and element-wise GELU of float tensors).
VIT_PGEMM_TARGET inline void gelu_avx512(const float* x, float* y, Index n) {
  for (Index i = 0; i < n; i += 16) {
    const __mmask16 m = lane_mask(0, static_cast<int>(std::min<Index>(16, n - i)));
    _mm512_mask_storeu_ps(y + i, m, gelu16(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

// y = gelu_erf(x) and d = gelu_erf'(x) = Phi(x) + x phi(x), for training.
VIT_PGEMM_TARGET inline void gelu_grad_avx512(const float* x, float* y, float* d, Index n) {
  const __m512 half = _mm512_set1_ps(0.5f), inv_sqrt2 = _mm512_set1_ps(0.70710678118654752440f);
  const __m512 inv_sqrt_2pi = _mm512_set1_ps(0.39894228040143267794f);
  for (Index i = 0; i < n; i += 16) {
    const __mmask16 m = lane_mask(0, static_cast<int>(std::min<Index>(16, n - i)));
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    const __m512 cdf = _mm512_mul_ps(half, erf1p16(_mm512_mul_ps(v, inv_sqrt2)));
    const __m512 pdf = _mm512_mul_ps(
        inv_sqrt_2pi, exp16(_mm512_mul_ps(_mm512_set1_ps(-0.5f), _mm512_mul_ps(v, v))));
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(v, cdf));
    _mm512_mask_storeu_ps(d + i, m, _mm512_fmadd_ps(v, pdf, cdf));
  }
}

VIT_PGEMM_TARGET inline void erf1p_avx512(const float* z, float* y, Index n) {
  for (Index i = 0; i < n; i += 16) {
    const __mmask16 m = lane_mask(0, static_cast<int>(std::min<Index>(16, n - i)));
    _mm512_mask_storeu_ps(y + i, m, erf1p16(_mm512_maskz_loadu_ps(m, z + i)));
  }
}

inline bool cpu_has_avx512() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("fma");
  }();
  return has;
}
#else
inline bool cpu_has_avx512() { return false; }
#endif  // VIT_PGEMM_X86

inline std::atomic<bool>& force_portable_flag() {
  static std::atomic<bool> flag{false};
  return flag;
}

inline bool use_avx512() {
  return cpu_has_avx512() && !force_portable_flag().load(std::memory_order_relaxed);
}

// Packs rows [0, n) x depth [0, k) of w (row-major, stride ldw) into panels of
// nr columns: panel p holds, for every depth index, columns p nr .. p nr + nr - 1
// (zero beyond n). dst: ceil(n / nr) * nr * k floats.
inline void pack_b(const float* w, Index ldw, Index n, Index k, Index nr, float* dst) {
  for (Index p = 0; p * nr < n; ++p) {
    float* panel = dst + p * nr * k;
    for (Index j = 0; j < nr; ++j) {
      const Index col = p * nr + j;
      if (col < n) {
        const float* src = w + col * ldw;
        for (Index kk = 0; kk < k; ++kk) panel[kk * nr + j] = src[kk];
      } else {
        for (Index kk = 0; kk < k; ++kk) panel[kk * nr + j] = 0.0f;
      }
    }
  }
}

// Packs rows [0, mc) x depth [0, kc) of a (stride lda) as micro-panels of mr
// rows (the last may be shorter): the panel at row i0 starts at dst + i0 kc and
// holds, for every depth index, its r rows.
inline void pack_a(const float* a, Index lda, Index mc, Index kc, int mr, float* dst) {
  for (Index i0 = 0, r = 0; i0 < mc; i0 += r) {
    r = panel_rows(i0, mc, mr);
    float* panel = dst + i0 * kc;
    for (Index i = 0; i < r; ++i) {
      const float* src = a + (i0 + i) * lda;
      for (Index kk = 0; kk < kc; ++kk) panel[kk * r + i] = src[kk];
    }
  }
}

inline Index ceil_div(Index x, Index y) { return (x + y - 1) / y; }
inline Index round_up(Index x, Index y) { return ceil_div(x, y) * y; }

// Floats of a-packing scratch run() needs.
inline std::size_t scratch_floats(Index m, Index k, Index mc_blk, Index kc_blk) {
  return static_cast<std::size_t>(std::min(m, mc_blk)) *
         static_cast<std::size_t>(std::min(k, kc_blk));
}

// c[:, n0:n1] (op)= a b^T + bias with b packed by pack_b(nr = 16 NV).
// mc_blk must be a multiple of MR. The blocking sizes are parameters so the
// benchmark can explore them; gemm_packed passes kMc and kKc.
template <int MR, int NV>
void run(Index m, Index k, const float* a, Index lda, const float* bp, float* c, Index ldc,
         const float* bias, Epilogue ep, float* scratch, Index n0, Index n1, Index mc_blk,
         Index kc_blk, bool avx512) {
  constexpr Index nr = 16 * NV;
  if (m == 0 || n0 >= n1) return;
  if (k == 0) {  // empty product: only the bias (and GELU) remain
    for (Index i = 0; i < m; ++i)
      for (Index j = n0; j < n1; ++j) {
        const float p = bias ? bias[j] : 0.0f;
        float& out = c[i * ldc + j];
        out = ep == Epilogue::accumulate ? out + p : ep == Epilogue::gelu ? gelu_scalar(p) : p;
      }
    return;
  }
  // Equal blocks no larger than the limits (k = 800 runs as 2 x 400, not
  // 768 + 32); a row block stays a whole number of micro-panels.
  const Index kc_step = std::min(kc_blk, round_up(ceil_div(k, ceil_div(k, kc_blk)), 16));
  const Index mc_step = std::min(mc_blk, round_up(ceil_div(m, ceil_div(m, mc_blk)), MR));
#if VIT_PGEMM_X86
  const auto& table = tiles<MR, NV>();
#endif
  for (Index pc = 0; pc < k; pc += kc_step) {
    const Index kc = std::min(kc_step, k - pc);
    TileArgs t{nullptr, ep, pc > 0 || ep == Epilogue::accumulate, pc + kc == k, 0, int(nr)};
    for (Index ic = 0; ic < m; ic += mc_step) {
      const Index mc = std::min(mc_step, m - ic);
#if VIT_PGEMM_X86
      if (avx512)
        pack_a_avx512(a + ic * lda + pc, lda, mc, kc, MR, scratch);
      else
#endif
        pack_a(a + ic * lda + pc, lda, mc, kc, MR, scratch);
      for (Index jp = n0 / nr; jp * nr < n1; ++jp) {
        const Index j0 = jp * nr;
        t.lo = static_cast<int>(std::max(n0, j0) - j0);
        t.hi = static_cast<int>(std::min(n1, j0 + nr) - j0);
        t.bias = bias ? bias + j0 : nullptr;
        const bool full = t.lo == 0 && t.hi == nr;
        const float* b = bp + jp * nr * k + pc * nr;
        for (Index ir = 0, r = 0; ir < mc; ir += r) {
          r = panel_rows(ir, mc, MR);
          const float* ap = scratch + ir * kc;
          float* ct = c + (ic + ir) * ldc + j0;
          // Prefetch the next tile: the rows below, else the next panel's top.
          if (ir + r < mc) {
            t.next_c = ct + r * ldc;
            t.next_rows = panel_rows(ir + r, mc, MR);
          } else if (j0 + nr < n1) {
            t.next_c = c + ic * ldc + j0 + nr;
            t.next_rows = panel_rows(0, mc, MR);
          } else {
            t.next_c = nullptr;
            t.next_rows = 0;
          }
#if VIT_PGEMM_X86
          if (avx512) {
            table[full][r - 1](kc, ap, b, ct, ldc, t);
            continue;
          }
#else
          (void)avx512;
          (void)full;
#endif
          tile_portable<NV>(static_cast<int>(r), kc, ap, b, ct, ldc, t);
        }
      }
    }
  }
}

}  // namespace detail::pgemm

/// Forces the portable kernel even where AVX-512 is available (tests,
/// comparisons); false restores the automatic choice. Affects every thread.
inline void gemm_packed_force_portable(bool on) {
  detail::pgemm::force_portable_flag().store(on, std::memory_order_relaxed);
}

/// True when gemm_packed runs the AVX-512 micro-kernel (CPU support, not forced off).
inline bool gemm_packed_uses_avx512() { return detail::pgemm::use_avx512(); }

/// A Linear weight [n, k] (PyTorch [out, in]) in gemm_packed's panel layout:
/// panels of panel_width() output rows, each k-major, zero-padded to a whole
/// panel; one 64-byte aligned allocation of padded_rows() * k floats.
class PackedWeight {
 public:
  static constexpr Index panel_width() { return detail::pgemm::kNr; }

  PackedWeight() = default;
  explicit PackedWeight(const MatrixCRef<float>& w) { pack(w); }
  PackedWeight(const PackedWeight& other) { *this = other; }
  PackedWeight(PackedWeight&& other) noexcept { swap(other); }
  PackedWeight& operator=(const PackedWeight& other) {
    if (this != &other) {
      allocate(other.n_, other.k_);
      if (size() != 0) std::memcpy(data_, other.data_, size() * sizeof(float));
    }
    return *this;
  }
  PackedWeight& operator=(PackedWeight&& other) noexcept {
    PackedWeight moved(std::move(other));
    swap(moved);
    return *this;
  }
  ~PackedWeight() { release(); }

  /// Packs w [n, k] (row-major, any outer stride); reuses the allocation when
  /// the size is unchanged.
  void pack(const MatrixCRef<float>& w) {
    allocate(w.rows(), w.cols());
    if (size() != 0) detail::pgemm::pack_b(w.data(), w.outerStride(), n_, k_, panel_width(), data_);
  }

  /// Packs the transpose of b [k, n] (row-major, any outer stride), i.e.
  /// the weight b^T, so that gemm_packed computes a b: for attention's
  /// probabilities times values, where b is a block of token rows.
  void pack_transposed(const MatrixCRef<float>& b) {
    shape_transposed(b);
    pack_transposed_panels(b, 0, panels());
  }

  /// Makes room to pack an [n, k] weight later without allocating; when the
  /// allocation has to grow, the packed contents are dropped (empty()).
  void reserve(Index n, Index k) {
    if (static_cast<std::size_t>((n + panel_width() - 1) / panel_width() * panel_width() * k) <=
        capacity_)
      return;
    allocate(n, k);
    n_ = k_ = 0;
  }

  /// pack_transposed in parts, e.g. on several threads: shape_transposed(b)
  /// sizes the weight for b [k, n] (n rows of depth k), then
  /// pack_transposed_panels(b, p0, p1) fills panels [p0, p1) of panels().
  void shape_transposed(const MatrixCRef<float>& b) { allocate(b.cols(), b.rows()); }
  Index panels() const { return padded_rows() / panel_width(); }
  void pack_transposed_panels(const MatrixCRef<float>& b, Index p0, Index p1) {
    const Index nr = panel_width();
    for (Index p = p0; p < p1; ++p) {
      float* panel = data_ + p * nr * k_;
      const Index cols = std::min(nr, n_ - p * nr);
      for (Index kk = 0; kk < k_; ++kk) {
        const float* src = b.data() + kk * b.outerStride() + p * nr;
        float* dst = panel + kk * nr;
        std::memcpy(dst, src, static_cast<std::size_t>(cols) * sizeof(float));
        for (Index j = cols; j < nr; ++j) dst[j] = 0.0f;
      }
    }
  }

  /// The weight back in its [n, k] layout (e.g. to save it, so that a layer
  /// need not also keep the unpacked copy).
  Matrix<float> unpack() const {
    Matrix<float> w(n_, k_);
    for (Index j = 0; j < n_; ++j)
      for (Index kk = 0; kk < k_; ++kk) w(j, kk) = (*this)(j, kk);
    return w;
  }

  /// Element (row j, column kk) of the original weight.
  float operator()(Index j, Index kk) const {
    const Index nr = panel_width();
    return data_[(j / nr) * nr * k_ + kk * nr + j % nr];
  }

  Index rows() const { return n_; }  ///< n: output features
  Index cols() const { return k_; }  ///< k: input features
  bool empty() const { return n_ == 0 || k_ == 0; }
  Index padded_rows() const { return (n_ + panel_width() - 1) / panel_width() * panel_width(); }
  /// Floats stored (padded_rows() * cols()).
  std::size_t size() const { return static_cast<std::size_t>(padded_rows() * k_); }
  std::size_t bytes() const { return size() * sizeof(float); }
  const float* data() const { return data_; }

  void swap(PackedWeight& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(capacity_, other.capacity_);
    std::swap(n_, other.n_);
    std::swap(k_, other.k_);
  }

 private:
  static constexpr std::align_val_t kAlign{64};

  void allocate(Index n, Index k) {
    if (n < 0 || k < 0) throw argument_error("PackedWeight: negative shape");
    const std::size_t need =
        static_cast<std::size_t>((n + panel_width() - 1) / panel_width() * panel_width() * k);
    if (need > capacity_) {
      release();
      data_ = static_cast<float*>(::operator new(need * sizeof(float), kAlign));
      capacity_ = need;
    }
    n_ = n;
    k_ = k;
  }
  void release() noexcept {
    if (data_) ::operator delete(data_, kAlign);
    data_ = nullptr;
    capacity_ = 0;
  }

  float* data_ = nullptr;
  std::size_t capacity_ = 0;  // floats allocated
  Index n_ = 0, k_ = 0;
};

/// Floats of a-packing scratch gemm_packed needs for an [m, k] input.
inline std::size_t gemm_packed_scratch_size(Index m, Index k) {
  return detail::pgemm::scratch_floats(m, k, detail::pgemm::kMc, detail::pgemm::kKc);
}

/// Floats of scratch enough for any shape.
inline std::size_t gemm_packed_scratch_size() {
  return static_cast<std::size_t>(detail::pgemm::kMc * detail::pgemm::kKc);
}

/// Columns [n0, n1) of c (op)= a b^T + bias, see Epilogue; other columns of c
/// are not touched (threads may share c, each with its own range and scratch).
///   a: [m, k]; b: packed [n, k]; bias: n floats or null;
///   c: [m, n]; its address span must not overlap a's (checked; interleaved
///      column blocks of one matrix count as overlapping);
///   scratch: gemm_packed_scratch_size(m, k) floats, any alignment.
/// Ranges split at multiples of PackedWeight::panel_width() share no panel;
/// other splits are correct but compute a shared panel twice.
inline void gemm_packed(const MatrixCRef<float>& a, const PackedWeight& b, MatrixRef<float> c,
                        const float* bias, Epilogue ep, float* scratch, Index n0, Index n1) {
  const Index m = a.rows(), k = a.cols(), n = b.rows();
  if (b.cols() != k)
    throw argument_error("gemm_packed: a has " + std::to_string(k) +
                         " columns, the packed weight " + std::to_string(b.cols()));
  vit::detail::check_shape(c, m, n, "gemm_packed: c");
  if (n0 < 0 || n0 > n1 || n1 > n)
    throw argument_error("gemm_packed: column range [" + std::to_string(n0) + ", " +
                         std::to_string(n1) + ") outside [0, " + std::to_string(n) + ")");
  if (!scratch && m > 0 && k > 0 && n0 < n1) throw argument_error("gemm_packed: scratch is null");
  if (m > 0 && k > 0 && n > 0) {  // c is written while a is still read
    const auto a_lo = reinterpret_cast<std::uintptr_t>(a.data());
    const auto a_hi = reinterpret_cast<std::uintptr_t>(a.data() + (m - 1) * a.outerStride() + k);
    const auto c_lo = reinterpret_cast<std::uintptr_t>(c.data());
    const auto c_hi = reinterpret_cast<std::uintptr_t>(c.data() + (m - 1) * c.outerStride() + n);
    if (a_lo < c_hi && c_lo < a_hi) throw argument_error("gemm_packed: c overlaps a");
  }
  detail::pgemm::run<detail::pgemm::kMr, detail::pgemm::kNv>(
      m, k, a.data(), a.outerStride(), b.data(), c.data(), c.outerStride(), bias, ep, scratch, n0,
      n1, detail::pgemm::kMc, detail::pgemm::kKc, detail::pgemm::use_avx512());
}

/// c (op)= a b^T + bias over all columns; see the column-range overload.
inline void gemm_packed(const MatrixCRef<float>& a, const PackedWeight& b, MatrixRef<float> c,
                        const float* bias, Epilogue ep, float* scratch) {
  gemm_packed(a, b, c, bias, ep, scratch, 0, b.rows());
}

}  // namespace vit::nn
