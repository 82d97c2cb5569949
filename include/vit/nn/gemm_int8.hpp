// vit/nn/gemm_int8.hpp - GEMM against an int8 weight, the activations
// quantised to u8 per row on the fly, products summed exactly in int32.
//
//   c = deq(a) deq(b)^T + bias            (Epilogue::store)
//   c += deq(a) deq(b)^T + bias           (Epilogue::accumulate)
//   c = gelu_erf(deq(a) deq(b)^T + bias)  (Epilogue::gelu)
//
// a: [m, k] float, row-major (any outer stride); b: a Linear weight [n, k],
// packed once by PackedWeightInt8; c: [m, n] float (any outer stride); bias:
// n floats or null. The column-range overload computes only columns [n0, n1)
// of c, as gemm_packed does (gemm_avx512.hpp).
//
// Quantisation.
//   Weight, symmetric per output channel: s_j = max_k |w[j][k]| / 127,
//     q[j][k] = round(w[j][k] / s_j) in [-127, 127]; deq(b)[j][k] = s_j q[j][k].
//   Activations, asymmetric per row (token), with a zero point: the row's
//     range [lo, hi] (widened to hold 0) maps onto 0..255, s_i = (hi - lo) /
//     255, z_i = round(-lo / s_i), u[i][k] = clamp(round(a[i][k] / s_i) + z_i,
//     0, 255); deq(a)[i][k] = s_i (u[i][k] - z_i). Rounding is to nearest even
//     (activations: in the current rounding mode, nearest even by default).
//   Why asymmetric: the inputs of fc2 are GELU outputs, in [-0.17, max]; a
//   symmetric s8 grid would leave almost half of its 255 steps unused there,
//   an asymmetric one uses all of them, at the same cost: the zero point
//   enters the result through z_i colsum_j, like the +128 shift of the
//   symmetric scheme.
//   c[i][j] = (s_i s_j) (sum_k u[i][k] q[j][k] - z_i colsum_j) (+ bias_j), with
//   colsum_j = sum_k q[j][k] stored with the weight. The integer part is exact
//   in int32 for k <= kMaxDepth (65536: |sum| <= 255 * 127 * k < 2^31), and the
//   same on every path; it becomes float once per element, is multiplied by
//   the float s_i s_j, then the bias is added (accumulate: c + that; GELU: of
//   that).
//   A row holding NaN or inf gives NaN in its whole output row; a row whose
//   range is below about 7e-37 (1 / s_i would overflow) counts as zero.
//
// Design: gemm_packed's with 4-byte groups in place of floats. VPDPBUSD
// (AVX512-VNNI) multiplies, in every 32-bit lane, 4 unsigned bytes of one
// source by 4 signed bytes of the other and adds the 4 products to an int32
// accumulator, without the 16-bit saturation of VPMADDUBSW. The weight is
// stored as panels of kNr = 32 output columns, for every group of 4 depth
// indices the 32 columns' 4 bytes side by side (128 bytes, two zmm loads);
// the activations of a row block are quantised into scratch as micro-panels
// of kMr = 14 rows, for every group of 4 depth indices the rows' 4 bytes (a
// 32-bit broadcast each); the depth is padded to a multiple of 4 with zero
// weights. The 14 x 32 tile of int32 sums lives in 28 zmm registers; each
// group costs 2 loads, 14 broadcasts and 28 VPDPBUSD (4 times the
// multiply-adds of gemm_packed's FMAs). The whole depth is one block, so a
// tile's sums are complete when it is written (the row block is sized so
// that its quantised copy stays in L2: kABytes); the epilogue corrects for the
// zero points, dequantises, adds the bias and applies accumulate / GELU in
// registers, with masked loads and stores of c at the edges.
//
// The AVX-512 kernel runs when the CPU reports AVX512-VNNI (plus F, BW, DQ,
// VL); otherwise, or after gemm_packed_int8_force_portable(true), a portable
// kernel runs on the same layouts. Both quantise identically and compute the
// same integers and the same dequantisation (one FMA: sum times scale plus
// bias); the results then differ at most where a compiler contracts the
// residual add of the portable code, and by the vectorised GELU (2e-7). A
// row's result does not depend on the other rows of the call. The portable
// kernel is slow (about a quarter of gemm_packed's portable speed): without
// VNNI, int8 does not pay.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "vit/error.hpp"
#include "vit/nn/gemm_avx512.hpp"
#include "vit/nn/gemm_lowp_common.hpp"
#include "vit/tensor.hpp"

#if VIT_PGEMM_X86
#define VIT_INT8_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,fma")))
#endif

namespace vit::nn {

namespace detail::i8gemm {

inline constexpr int kMr = 14;                 // rows per micro-tile
inline constexpr Index kNr = 32;               // columns per weight panel
inline constexpr Index kGroup = 4 * kNr;       // bytes per depth group of a panel
inline constexpr Index kMc = 36 * Index(kMr);  // largest row block (504)
inline constexpr Index kABytes = 512 * 1024;   // quantised row block budget (L2)
inline constexpr Index kMaxDepth = 65536;      // int32 sums cannot overflow

// A micro-tile's epilogue: the panel's weight scales and column sums, the
// micro-panel's row scales and zero points, and gemm_packed's bias, columns
// and prefetch target.
struct TileArgs {
  const float* bias;  // bias at the panel's first column, or null
  Epilogue ep;
  int lo, hi;                   // tile columns to read/write, [lo, hi) within [0, 32)
  const float* col_scale;       // 32 weight scales s_j
  const std::int32_t* col_sum;  // 32 column sums of q
  const float* row_scale;       // r row scales s_i
  const float* row_zero;        // r zero points z_i (integers held as floats)
  const float* next_c = nullptr;
  int next_rows = 0;
};

// ------------------------------------------------------------ quantisation --

// A row's quantisation: scale s, its inverse (quantising multiplies by it) and
// the zero point z (an integer in [0, 255]). lo <= 0 <= hi: the row's range;
// finite: no NaN / inf in the row. Scalar, shared by every path, so all of
// them quantise identically.
struct RowQuant {
  float scale, inv, zero;
};

inline RowQuant row_quant(float lo, float hi, bool finite) {
  if (!finite) return {std::numeric_limits<float>::quiet_NaN(), 0.0f, 0.0f};
  const float scale = hi / 255.0f - lo / 255.0f;  // no overflow for any finite range
  const float inv = 1.0f / scale;
  if (scale == 0.0f || !std::isfinite(inv)) return {0.0f, 0.0f, 0.0f};
  const float zero = std::min(255.0f, std::max(0.0f, std::nearbyint(-lo * inv)));
  return {scale, inv, zero};
}

// u = clamp(round(x inv) + z, 0, 255), rounding to nearest even (the current
// rounding mode, as the vector conversion); |x inv| <~ 2^23 by construction.
inline std::uint8_t quantize(float x, const RowQuant& q) {
  const int v = static_cast<int>(std::nearbyint(x * q.inv)) + static_cast<int>(q.zero);
  return static_cast<std::uint8_t>(std::min(255, std::max(0, v)));
}

inline RowQuant row_quant(const float* x, Index k) {
  float lo = 0.0f, hi = 0.0f;
  bool finite = true;
  for (Index kk = 0; kk < k; ++kk) {
    finite = finite && std::isfinite(x[kk]);
    lo = std::min(lo, x[kk]);
    hi = std::max(hi, x[kk]);
  }
  return row_quant(lo, hi, finite);
}

// Quantises rows [0, mc) of a (stride lda, depth k) into micro-panels of mr
// rows: the panel at row i0 starts at byte i0 kpad of dst (kpad: k rounded up
// to 4) and holds, for every depth group g, its r rows' 4 bytes u[i][4g..4g+3]
// (past k: the quantised 0, i.e. z_i). scale[i], zero[i]: the rows' s_i, z_i.
inline void quantize_a(const float* a, Index lda, Index mc, Index k, int mr, unsigned char* dst,
                       float* scale, float* zero) {
  const Index kpad = (k + 3) / 4 * 4;
  for (Index i0 = 0, r = 0; i0 < mc; i0 += r) {
    r = pgemm::panel_rows(i0, mc, mr);
    unsigned char* panel = dst + i0 * kpad;
    for (Index i = 0; i < r; ++i) {
      const float* src = a + (i0 + i) * lda;
      const RowQuant q = row_quant(src, k);
      scale[i0 + i] = q.scale;
      zero[i0 + i] = q.zero;
      const bool bad = std::isnan(q.scale);
      for (Index kk = 0; kk < kpad; ++kk)
        panel[(kk / 4) * 4 * r + 4 * i + kk % 4] = bad ? 0 : quantize(kk < k ? src[kk] : 0.0f, q);
    }
  }
}

// Weight: q[j][k] = round(w[j][k] / s_j), s_j = max |w[j]| / 127 (a zero row:
// s_j = 0, q = 0). Packs rows [0, n) of w (stride ldw) into panels of 32
// columns, for every depth group g the columns' 4 bytes q[j][4g..4g+3] (zero
// past n and k); scale, sum: padded to whole panels with zeros.
inline void pack_b(const float* w, Index ldw, Index n, Index k, std::int8_t* dst, float* scale,
                   std::int32_t* sum) {
  const Index kpad = (k + 3) / 4 * 4;
  for (Index p = 0; p * kNr < n; ++p) {
    std::int8_t* panel = dst + p * kNr * kpad;
    for (Index j = 0; j < kNr; ++j) {
      const Index col = p * kNr + j;
      float s = 0.0f;
      if (col < n)
        for (Index kk = 0; kk < k; ++kk) {
          const float x = w[col * ldw + kk];
          if (!std::isfinite(x))
            throw argument_error("PackedWeightInt8: weight row " + std::to_string(col) +
                                 " holds a NaN or inf");
          s = std::max(s, std::abs(x));
        }
      s /= 127.0f;
      std::int32_t total = 0;
      for (Index kk = 0; kk < kpad; ++kk) {
        int q = 0;
        if (col < n && kk < k && s > 0.0f) {
          const float v = std::nearbyint(w[col * ldw + kk] / s);
          q = static_cast<int>(std::min(127.0f, std::max(-127.0f, v)));
        }
        panel[(kk / 4) * kGroup + 4 * j + kk % 4] = static_cast<std::int8_t>(q);
        total += q;
      }
      scale[col] = s;
      sum[col] = total;
    }
  }
}

// Rows per row block for depth k: whole micro-panels, quantised block within
// kABytes, at most kMc; then, for m rows, equal blocks no larger than that.
inline Index row_step(Index m, Index k) {
  const Index kpad = (k + 3) / 4 * 4;
  const Index limit =
      std::min(kMc, std::max<Index>(kMr, kABytes / std::max<Index>(kpad, 1) / kMr * kMr));
  if (m <= 0) return limit;
  return std::min(limit, pgemm::round_up(pgemm::ceil_div(m, pgemm::ceil_div(m, limit)), kMr));
}

// Floats of scratch run() needs: the quantised row block (rows x kpad bytes)
// followed by its row scales and zero points (rows floats each).
inline std::size_t scratch_floats(Index m, Index k) {
  const Index rows = std::min(m, row_step(m, k)), kpad = (k + 3) / 4 * 4;
  return static_cast<std::size_t>(rows) * static_cast<std::size_t>(kpad / 4 + 2);
}

// ---------------------------------------------------------------- portable --

// The tile's epilogue for one element: dequantise the exact sum, add the bias,
// then accumulate / GELU. The vector kernel does the same operations.
inline float finish(std::int32_t acc, int i, int j, const TileArgs& t, const float* cij) {
  // Wrapping arithmetic: the true value fits (k <= kMaxDepth), the steps may not.
  const auto x = static_cast<std::int32_t>(static_cast<std::uint32_t>(acc) -
                                           static_cast<std::uint32_t>(t.row_zero[i]) *
                                               static_cast<std::uint32_t>(t.col_sum[j]));
  // One fused multiply-add, as the vector kernel (see there).
  float v =
      std::fma(static_cast<float>(x), t.row_scale[i] * t.col_scale[j], t.bias ? t.bias[j] : 0.0f);
  if (t.ep == Epilogue::accumulate) v = *cij + v;
  if (t.ep == Epilogue::gelu) v = pgemm::gelu_scalar(v);
  return v;
}

// RI rows x 8 columns [j0, j0 + 8) of an r x 32 tile over `groups` depth groups.
template <int RI>
void tile_portable_block(int r, int i0, int j0, Index groups, const unsigned char* a,
                         const std::int8_t* b, float* c, Index ldc, const TileArgs& t) {
  const int lo = std::max(t.lo - j0, 0), hi = std::min(t.hi - j0, 8);
  if (lo >= hi) return;
  std::int32_t acc[RI][8] = {};
  for (Index g = 0; g < groups; ++g) {
    // The group's 8 x 4 weights transposed to 4 rows of 8, so that the
    // innermost loop runs over contiguous columns (vectorisable).
    std::int16_t bt[4][8];
    const std::int8_t* bg = b + g * kGroup + 4 * j0;
    for (int j = 0; j < 8; ++j)
      for (int u = 0; u < 4; ++u) bt[u][j] = bg[4 * j + u];
    const unsigned char* ag = a + 4 * (g * r + i0);
    for (int i = 0; i < RI; ++i)
      for (int u = 0; u < 4; ++u) {
        const std::int32_t x = ag[4 * i + u];
        for (int j = 0; j < 8; ++j) acc[i][j] += x * bt[u][j];
      }
  }
  for (int i = 0; i < RI; ++i)
    for (int j = lo; j < hi; ++j) {
      float* cij = c + (i0 + i) * ldc + j0 + j;
      *cij = finish(acc[i][j], i0 + i, j0 + j, t, cij);
    }
}

inline void tile_portable(int r, Index groups, const unsigned char* a, const std::int8_t* b,
                          float* c, Index ldc, const TileArgs& t) {
  for (int i0 = 0; i0 < r; i0 += 4)
    for (int j0 = 0; j0 < kNr; j0 += 8) switch (std::min(4, r - i0)) {
        case 4:
          tile_portable_block<4>(r, i0, j0, groups, a, b, c, ldc, t);
          break;
        case 3:
          tile_portable_block<3>(r, i0, j0, groups, a, b, c, ldc, t);
          break;
        case 2:
          tile_portable_block<2>(r, i0, j0, groups, a, b, c, ldc, t);
          break;
        default:
          tile_portable_block<1>(r, i0, j0, groups, a, b, c, ldc, t);
          break;
      }
}

// ----------------------------------------------------------------- AVX-512 --
#if VIT_PGEMM_X86

// One R x 32 micro-tile over `groups` depth groups. a: groups x R words of 4
// u8, b: groups x 128 s8 (64-byte aligned), c: the tile's top-left element.
// Full: all 32 columns in range.
template <int R, bool Full>
VIT_INT8_TARGET void tile_avx512(Index groups, const unsigned char* a, const std::int8_t* b,
                                 float* c, Index ldc, const TileArgs& t) {
  for (int i = 0; i < t.next_rows; ++i) {
    const char* row = reinterpret_cast<const char*>(t.next_c + i * ldc);
    _mm_prefetch(row, _MM_HINT_T0);
    _mm_prefetch(row + 64, _MM_HINT_T0);
  }
  // The sums are held as 16 x int32 vectors (__v16si, VPDPBUSD's own type):
  // as __m512i (8 x int64) GCC 12 keeps the array in memory and stores all 28
  // registers back on every depth step.
  __v16si acc[R][2];
  VIT_PGEMM_UNROLL
  for (int i = 0; i < R; ++i) {
    acc[i][0] = (__v16si)_mm512_setzero_si512();
    acc[i][1] = (__v16si)_mm512_setzero_si512();
  }
  for (Index g = 0; g < groups; ++g) {
    const __m512i b0 = _mm512_load_si512(b);
    const __m512i b1 = _mm512_load_si512(b + 64);
    VIT_PGEMM_UNROLL
    for (int i = 0; i < R; ++i) {
      const __m512i av = _mm512_set1_epi32(static_cast<int>(lowp::load_u32(a + 4 * i)));
      acc[i][0] = (__v16si)_mm512_dpbusd_epi32((__m512i)acc[i][0], av, b0);
      acc[i][1] = (__v16si)_mm512_dpbusd_epi32((__m512i)acc[i][1], av, b1);
    }
    a += 4 * R;
    b += kGroup;
  }

  __mmask16 mask[2];
  __m512 cscale[2], bias[2];
  __m512i csum[2];
  VIT_PGEMM_UNROLL
  for (int v = 0; v < 2; ++v) {
    mask[v] =
        Full ? static_cast<__mmask16>(0xFFFF) : pgemm::lane_mask(t.lo - 16 * v, t.hi - 16 * v);
    cscale[v] = _mm512_loadu_ps(t.col_scale + 16 * v);  // padded to whole panels
    csum[v] = _mm512_loadu_si512(t.col_sum + 16 * v);
    bias[v] =
        (t.bias && mask[v]) ? _mm512_maskz_loadu_ps(mask[v], t.bias + 16 * v) : _mm512_setzero_ps();
  }
  // Dequantise: (acc - z_i colsum_j) as float, times s_i s_j, plus the bias
  // (zero without one), in one explicit FMA: left to the compiler, the
  // multiply and add were fused in some tile heights and not in others, so a
  // row's result changed in the last bit with its position in the batch.
  __m512 y[R][2];
  VIT_PGEMM_UNROLL
  for (int i = 0; i < R; ++i) {
    const __m512i zi = _mm512_set1_epi32(static_cast<int>(t.row_zero[i]));
    const __m512 si = _mm512_set1_ps(t.row_scale[i]);
    VIT_PGEMM_UNROLL
    for (int v = 0; v < 2; ++v) {
      const __m512i x = _mm512_sub_epi32((__m512i)acc[i][v], _mm512_mullo_epi32(zi, csum[v]));
      y[i][v] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(pgemm::kAll, x),
                                _mm512_mul_ps(si, cscale[v]), bias[v]);
    }
  }
  VIT_PGEMM_UNROLL
  for (int i = 0; i < R; ++i) {
    VIT_PGEMM_UNROLL
    for (int v = 0; v < 2; ++v) {
      if (!Full && !mask[v]) continue;  // (the address may lie past the view)
      float* cv = c + i * ldc + 16 * v;
      if (t.ep == Epilogue::accumulate)
        y[i][v] =
            _mm512_add_ps(Full ? _mm512_loadu_ps(cv) : _mm512_maskz_loadu_ps(mask[v], cv), y[i][v]);
      else if (t.ep == Epilogue::gelu)
        y[i][v] = pgemm::gelu16(y[i][v]);
      if (Full)
        _mm512_storeu_ps(cv, y[i][v]);
      else
        _mm512_mask_storeu_ps(cv, mask[v], y[i][v]);
    }
  }
}

// Smallest / largest of 16 lanes (through memory: GCC 12's reduce intrinsics
// trip -Wuninitialized).
VIT_INT8_TARGET inline float hmin(__m512 x) {
  alignas(64) float v[16];
  _mm512_store_ps(v, x);
  return *std::min_element(v, v + 16);
}
VIT_INT8_TARGET inline float hmax(__m512 x) {
  alignas(64) float v[16];
  _mm512_store_ps(v, x);
  return *std::max_element(v, v + 16);
}

// row_quant(x, k), vectorised (min and max are exact, so the result is the
// same). The row usually comes from memory (the previous layer's output of a
// large batch): two independent chains per 32 floats and a prefetch 1 KiB
// ahead (through an integer address: it may lie past the row) keep the loads
// in flight instead of waiting on each line.
VIT_INT8_TARGET inline RowQuant row_quant_avx512(const float* x, Index k) {
  __m512 lo0 = _mm512_setzero_ps(), hi0 = lo0, lo1 = lo0, hi1 = lo0;
  __mmask16 bad0 = 0, bad1 = 0;
  for (Index kk = 0; kk < k; kk += 32) {
    _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<std::uintptr_t>(x + kk) + 1024),
                 _MM_HINT_T0);
    // Zeros past the row's end: the range holds 0 anyway.
    const int left = static_cast<int>(std::min<Index>(32, k - kk));
    const __mmask16 m1 = pgemm::lane_mask(0, left - 16);
    const __m512 v0 = _mm512_maskz_loadu_ps(pgemm::lane_mask(0, left), x + kk);
    const __m512 v1 = m1 ? _mm512_maskz_loadu_ps(m1, x + kk + 16) : _mm512_setzero_ps();
    lo0 = pgemm::min16(lo0, v0);
    hi0 = pgemm::max16(hi0, v0);
    lo1 = pgemm::min16(lo1, v1);
    hi1 = pgemm::max16(hi1, v1);
    bad0 |= _mm512_fpclass_ps_mask(v0, 0x99);  // QNaN, SNaN, +inf, -inf
    bad1 |= _mm512_fpclass_ps_mask(v1, 0x99);
  }
  return row_quant(hmin(pgemm::min16(lo0, lo1)), hmax(pgemm::max16(hi0, hi1)), (bad0 | bad1) == 0);
}

// quantize_a, vectorised: per micro-panel, each row's range, then 64 depth
// indices of up to 16 rows at a time: x inv rounded to int32 (VCVTPS2DQ,
// nearest even), + z, narrowed to bytes with saturation (VPACKSSDW then
// VPACKUSWB: the clamp to 0..255), and the 32-bit groups transposed so that
// each group's r words are stored contiguously. The packs interleave 128-bit
// lanes: word 4 L + d of a row's vector holds group 4 d + L of the 64.
VIT_INT8_TARGET inline void quantize_a_avx512(const float* a, Index lda, Index mc, Index k, int mr,
                                              unsigned char* dst, float* scale, float* zero) {
  const Index kpad = (k + 3) / 4 * 4;
  for (Index i0 = 0, r = 0; i0 < mc; i0 += r) {
    r = pgemm::panel_rows(i0, mc, mr);
    const __mmask16 row_mask = pgemm::lane_mask(0, static_cast<int>(r));
    unsigned char* panel = dst + i0 * kpad;
    __m512 inv[16];
    __m512i zp[16];
    bool bad[16];
    for (Index i = 0; i < r; ++i) {
      const RowQuant q = row_quant_avx512(a + (i0 + i) * lda, k);
      scale[i0 + i] = q.scale;
      zero[i0 + i] = q.zero;
      inv[i] = _mm512_set1_ps(q.inv);
      zp[i] = _mm512_set1_epi32(static_cast<int>(q.zero));
      bad[i] = std::isnan(q.scale);
    }
    for (Index k0 = 0; k0 < kpad; k0 += 64) {
      const int kn = static_cast<int>(std::min<Index>(64, k - k0));  // real depth indices
      __m512 v[16];
      for (int i = 0; i < 16; ++i) {
        if (i >= r || bad[i]) {
          v[i] = _mm512_setzero_ps();
          continue;
        }
        const float* src = a + (i0 + i) * lda + k0;
        __m512i d[4];
        for (int s = 0; s < 4; ++s) {
          const __mmask16 m = pgemm::lane_mask(0, kn - 16 * s);
          const __m512 x = m ? _mm512_maskz_loadu_ps(m, src + 16 * s) : _mm512_setzero_ps();
          d[s] = _mm512_add_epi32(_mm512_maskz_cvtps_epi32(pgemm::kAll, _mm512_mul_ps(x, inv[i])),
                                  zp[i]);
        }
        v[i] = _mm512_castsi512_ps(
            _mm512_packus_epi16(_mm512_packs_epi32(d[0], d[1]), _mm512_packs_epi32(d[2], d[3])));
      }
      pgemm::transpose16(v);
      const Index groups = std::min<Index>(16, (kpad - k0) / 4);
      for (int w = 0; w < 16; ++w) {
        const Index g = 4 * (w % 4) + w / 4;
        if (g < groups)
          _mm512_mask_storeu_ps(reinterpret_cast<float*>(panel + (k0 + 4 * g) * r), row_mask, v[w]);
      }
    }
  }
}

using TileFn = void (*)(Index, const unsigned char*, const std::int8_t*, float*, Index,
                        const TileArgs&);

template <bool Full, int... R>
constexpr std::array<TileFn, sizeof...(R)> make_tiles(std::integer_sequence<int, R...>) {
  return {{&tile_avx512<R + 1, Full>...}};
}

// tiles()[full][r - 1] runs an r-row tile.
inline const std::array<std::array<TileFn, kMr>, 2>& tiles() {
  static const std::array<std::array<TileFn, kMr>, 2> table = {
      {make_tiles<false>(std::make_integer_sequence<int, kMr>()),
       make_tiles<true>(std::make_integer_sequence<int, kMr>())}};
  return table;
}

inline bool cpu_has_avx512vnni() {
  static const bool has = [] {
    __builtin_cpu_init();
    return pgemm::cpu_has_avx512() && __builtin_cpu_supports("avx512vnni");
  }();
  return has;
}
#else
inline bool cpu_has_avx512vnni() { return false; }
#endif  // VIT_PGEMM_X86

inline std::atomic<bool>& force_portable_flag() {
  static std::atomic<bool> flag{false};
  return flag;
}

inline bool use_avx512vnni() {
  return cpu_has_avx512vnni() && !force_portable_flag().load(std::memory_order_relaxed);
}

// c[:, n0:n1] (op)= deq(a) deq(b)^T + bias with b packed by pack_b (scales
// bscale, column sums bsum).
inline void run(Index m, Index k, const float* a, Index lda, const std::int8_t* bp,
                const float* bscale, const std::int32_t* bsum, float* c, Index ldc,
                const float* bias, Epilogue ep, float* scratch, Index n0, Index n1, bool simd) {
  if (m == 0 || n0 >= n1) return;
  if (k == 0) return lowp::bias_only(m, c, ldc, bias, ep, n0, n1);
  const Index mc_step = row_step(m, k), rows = std::min(m, mc_step);
  const Index kpad = (k + 3) / 4 * 4, groups = kpad / 4;
  // Scratch: [rows x kpad bytes of u8][rows scales][rows zero points].
  unsigned char* packed = reinterpret_cast<unsigned char*>(scratch);
  float* row_scale = scratch + rows * groups;
  float* row_zero = row_scale + rows;
#if VIT_PGEMM_X86
  const auto& table = tiles();
#endif
  TileArgs t{nullptr, ep, 0, int(kNr), nullptr, nullptr, nullptr, nullptr};
  for (Index ic = 0; ic < m; ic += mc_step) {
    const Index mc = std::min(mc_step, m - ic);
#if VIT_PGEMM_X86
    if (simd)
      quantize_a_avx512(a + ic * lda, lda, mc, k, kMr, packed, row_scale, row_zero);
    else
#endif
      quantize_a(a + ic * lda, lda, mc, k, kMr, packed, row_scale, row_zero);
    for (Index jp = n0 / kNr; jp * kNr < n1; ++jp) {
      const Index j0 = jp * kNr;
      t.lo = static_cast<int>(std::max(n0, j0) - j0);
      t.hi = static_cast<int>(std::min(n1, j0 + kNr) - j0);
      t.bias = bias ? bias + j0 : nullptr;
      t.col_scale = bscale + j0;
      t.col_sum = bsum + j0;
      const bool full = t.lo == 0 && t.hi == kNr;
      const std::int8_t* b = bp + jp * kNr * kpad;
      for (Index ir = 0, r = 0; ir < mc; ir += r) {
        r = pgemm::panel_rows(ir, mc, kMr);
        const unsigned char* ap = packed + ir * kpad;
        float* ct = c + (ic + ir) * ldc + j0;
        t.row_scale = row_scale + ir;
        t.row_zero = row_zero + ir;
        std::tie(t.next_c, t.next_rows) =
            lowp::next_tile(c, ldc, ic, ir, int(r), mc, j0, kNr, n1, kMr);
#if VIT_PGEMM_X86
        if (simd) {
          table[full][r - 1](groups, ap, b, ct, ldc, t);
          continue;
        }
#else
        (void)simd;
        (void)full;
#endif
        tile_portable(static_cast<int>(r), groups, ap, b, ct, ldc, t);
      }
    }
  }
}

}  // namespace detail::i8gemm

/// Forces gemm_packed_int8's portable kernel even where AVX512-VNNI is
/// available (tests, comparisons); false restores the automatic choice.
/// Affects every thread.
inline void gemm_packed_int8_force_portable(bool on) {
  detail::i8gemm::force_portable_flag().store(on, std::memory_order_relaxed);
}

/// True when gemm_packed_int8 runs the AVX512-VNNI kernel (CPU support, not
/// forced off).
inline bool gemm_packed_int8_uses_avx512vnni() { return detail::i8gemm::use_avx512vnni(); }

/// A Linear weight [n, k] (PyTorch [out, in]) quantised to int8 with one scale
/// per output row (symmetric: s_j = max |w_j| / 127, q = round(w / s_j)), in
/// gemm_packed_int8's layout: panels of panel_width() output rows, for every 4
/// depth indices the rows' 4 bytes side by side, zero-padded to whole panels
/// and a depth multiple of 4; plus the scales and the column sums sum_k q[j][k]
/// (the zero-point correction), both padded with zeros to whole panels.
class PackedWeightInt8 {
 public:
  static constexpr Index panel_width() { return detail::i8gemm::kNr; }

  PackedWeightInt8() = default;
  explicit PackedWeightInt8(const MatrixCRef<float>& w) { pack(w); }
  PackedWeightInt8(const PackedWeightInt8&) = default;
  PackedWeightInt8(PackedWeightInt8&& other) noexcept { swap(other); }
  PackedWeightInt8& operator=(const PackedWeightInt8&) = default;
  PackedWeightInt8& operator=(PackedWeightInt8&& other) noexcept {
    PackedWeightInt8 moved(std::move(other));
    swap(moved);
    return *this;
  }

  /// Quantises and packs w [n, k] (row-major, any outer stride); argument_error
  /// if w holds NaN or inf. Reuses the allocations when large enough.
  void pack(const MatrixCRef<float>& w) {
    if (w.rows() < 0 || w.cols() < 0) throw argument_error("PackedWeightInt8: negative shape");
    n_ = w.rows();
    k_ = w.cols();
    data_.resize(size());
    scale_.assign(static_cast<std::size_t>(padded_rows()), 0.0f);
    sum_.assign(static_cast<std::size_t>(padded_rows()), 0);
    try {
      detail::i8gemm::pack_b(w.data(), w.outerStride(), n_, k_,
                             reinterpret_cast<std::int8_t*>(data_.data()), scale_.data(),
                             sum_.data());
    } catch (...) {
      n_ = k_ = 0;
      data_.resize(0);
      scale_.clear();
      sum_.clear();
      throw;
    }
  }

  /// The dequantised weight [n, k]: s_j q[j][k].
  Matrix<float> unpack() const {
    Matrix<float> w(n_, k_);
    for (Index j = 0; j < n_; ++j)
      for (Index kk = 0; kk < k_; ++kk) w(j, kk) = (*this)(j, kk);
    return w;
  }

  /// The int8 value q[j][kk].
  std::int8_t value(Index j, Index kk) const {
    const Index nr = panel_width();
    return data()[(j / nr) * nr * padded_cols() + (kk / 4) * detail::i8gemm::kGroup + 4 * (j % nr) +
                  kk % 4];
  }
  /// The dequantised element s_j q[j][kk].
  float operator()(Index j, Index kk) const { return scale(j) * float(value(j, kk)); }
  float scale(Index j) const { return scale_[static_cast<std::size_t>(j)]; }
  std::int32_t column_sum(Index j) const { return sum_[static_cast<std::size_t>(j)]; }

  Index rows() const { return n_; }  ///< n: output features
  Index cols() const { return k_; }  ///< k: input features
  bool empty() const { return n_ == 0 || k_ == 0; }
  Index padded_rows() const { return (n_ + panel_width() - 1) / panel_width() * panel_width(); }
  Index padded_cols() const { return (k_ + 3) / 4 * 4; }  ///< k rounded up to a multiple of 4
  /// int8 values stored (padded_rows() * padded_cols()).
  std::size_t size() const { return static_cast<std::size_t>(padded_rows() * padded_cols()); }
  /// Bytes held: values, scales and column sums.
  std::size_t bytes() const {
    return size() +
           static_cast<std::size_t>(padded_rows()) * (sizeof(float) + sizeof(std::int32_t));
  }
  const std::int8_t* data() const { return reinterpret_cast<const std::int8_t*>(data_.data()); }
  const float* scales() const { return scale_.data(); }            ///< padded_rows() scales
  const std::int32_t* column_sums() const { return sum_.data(); }  ///< padded_rows() sums

  void swap(PackedWeightInt8& other) noexcept {
    data_.swap(other.data_);
    scale_.swap(other.scale_);
    sum_.swap(other.sum_);
    std::swap(n_, other.n_);
    std::swap(k_, other.k_);
  }

 private:
  detail::lowp::AlignedBytes data_;
  std::vector<float> scale_;
  std::vector<std::int32_t> sum_;
  Index n_ = 0, k_ = 0;
};

/// Floats of scratch gemm_packed_int8 needs for an [m, k] input: one row block
/// of r = min(m, rows per block) rows, r * ceil(k / 4) words of quantised
/// activations, then r row scales and r zero points. Rows per block: as many
/// whole 14-row micro-panels as keep r * k bytes within 512 KiB, at most 504,
/// at least 14, split evenly over m. Not a bound for larger m: size scratch
/// with the m (and k) it will see.
inline std::size_t gemm_packed_int8_scratch_size(Index m, Index k) {
  return detail::i8gemm::scratch_floats(m, k);
}

/// Columns [n0, n1) of c (op)= deq(a) deq(b)^T + bias, see Epilogue and the
/// header comment; other columns of c are not touched (threads may share c,
/// each with its own range and scratch). Shapes, the overlap check and the
/// range rules as gemm_packed; k at most 65536 (argument_error otherwise);
/// scratch: gemm_packed_int8_scratch_size(m, k) floats, any alignment.
/// Allocates nothing.
inline void gemm_packed_int8(const MatrixCRef<float>& a, const PackedWeightInt8& b,
                             MatrixRef<float> c, const float* bias, Epilogue ep, float* scratch,
                             Index n0, Index n1) {
  detail::lowp::check_args("gemm_packed_int8", a, b.rows(), b.cols(), c, n0, n1, scratch);
  if (b.cols() > detail::i8gemm::kMaxDepth)
    throw argument_error("gemm_packed_int8: depth " + std::to_string(b.cols()) +
                         " above 65536 could overflow the int32 sums");
  detail::i8gemm::run(a.rows(), a.cols(), a.data(), a.outerStride(), b.data(), b.scales(),
                      b.column_sums(), c.data(), c.outerStride(), bias, ep, scratch, n0, n1,
                      detail::i8gemm::use_avx512vnni());
}

/// c (op)= deq(a) deq(b)^T + bias over all columns; see the column-range
/// overload.
inline void gemm_packed_int8(const MatrixCRef<float>& a, const PackedWeightInt8& b,
                             MatrixRef<float> c, const float* bias, Epilogue ep, float* scratch) {
  gemm_packed_int8(a, b, c, bias, ep, scratch, 0, b.rows());
}

}  // namespace vit::nn
