// vit/nn/gemm_bf16.hpp - GEMM against a weight stored as bfloat16, the
// activations rounded to bfloat16 on the fly, products summed in float.
//
//   c = bf16(a) bf16(b)^T + bias            (Epilogue::store)
//   c += bf16(a) bf16(b)^T + bias           (Epilogue::accumulate)
//   c = gelu_erf(bf16(a) bf16(b)^T + bias)  (Epilogue::gelu)
//
// a: [m, k] float, row-major (any outer stride); b: a Linear weight [n, k],
// packed once by PackedWeightBf16; c: [m, n] float (any outer stride); bias:
// n floats or null. bf16() rounds to nearest even (what VCVTNE2PS2BF16 does:
// float denormals become signed zeros, NaN stays NaN). The column-range
// overload computes only columns [n0, n1) of c, as gemm_packed does.
//
// Design: gemm_packed's (gemm_avx512.hpp) with bf16 pairs in place of floats.
// VDPBF16PS (AVX512-BF16) takes, in every 32-bit lane, a pair of bf16 values
// from each source and adds both products to a float accumulator (the odd
// product first, then the even one, each sum rounded to float; the products
// themselves are exact). So the weight is stored as panels of kNr = 32 output
// columns, for every pair of depth indices (2p, 2p + 1) the 32 columns' pairs
// side by side (128 bytes, two zmm loads), and a block of a is packed into
// scratch as micro-panels of kMr = 14 rows, for every depth pair the 14 rows'
// pairs (one 32-bit broadcast each); an odd depth is padded with a zero pair
// half on both sides. The 14 x 32 tile of c lives in 28 zmm registers, each
// depth pair costs 2 loads, 14 broadcasts and 28 VDPBF16PS, twice the flops
// of gemm_packed's FMAs on the same registers. a is rounded while it is
// packed (VCVTNE2PS2BF16, then the 16 x 16 word transpose of gemm_packed).
// Depth blocks, row blocks, edge tiles, masked loads and stores of c and the
// fused bias / accumulate / GELU are gemm_packed's; the blocks are 252 rows by
// 1536 depth indices (a packed block of 756 KB stays in a 1 MB L2; on a Zen 5
// core 252 to 1008 rows and 768 or 1536 deep all measured alike, within the
// noise of a shared machine).
//
// The AVX-512 kernel runs when the CPU reports AVX512-BF16 (plus F, BW, DQ,
// VL); otherwise, or after gemm_packed_bf16_force_portable(true), a portable
// kernel on the same layouts sums the same bf16 products in the same order.
// Both give bit-identical results for store and accumulate (GELU differs by
// the vectorised erf's 2e-7), except where a product underflows to a float
// denormal, which VDPBF16PS flushes to zero.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <utility>

#include "vit/error.hpp"
#include "vit/nn/gemm_avx512.hpp"
#include "vit/nn/gemm_lowp_common.hpp"
#include "vit/tensor.hpp"

#if VIT_PGEMM_X86
#define VIT_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,fma")))
#endif

namespace vit::nn {

namespace detail::bf16gemm {

inline constexpr int kMr = 14;      // rows per micro-tile
inline constexpr Index kNr = 32;    // columns per weight panel
inline constexpr Index kKc = 1536;  // depth block (a multiple of 32)
inline constexpr Index kMc = 252;   // row block (a multiple of kMr)
inline constexpr Index kPair = 64;  // bf16 values per depth pair of a panel (2 x kNr)

using pgemm::TileArgs;

// float -> bf16 bits, rounded to nearest even; float denormals become signed
// zeros and NaN a quiet NaN (as VCVTNE2PS2BF16; VDPBF16PS would treat a bf16
// denormal as zero anyway, so none is ever stored).
inline std::uint16_t to_bf16(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  if ((u & 0x7F800000u) == 0) return static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

inline float from_bf16(std::uint16_t h) {
  const std::uint32_t u = std::uint32_t(h) << 16;
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// Packs rows [0, n) x depth [0, k) of w (stride ldw): panel p holds, for every
// depth pair q, the pairs (w[col][2q], w[col][2q + 1]) of its 32 columns
// (zero beyond n and k). dst: ceil(n / 32) * 32 * 2 ceil(k / 2) values.
inline void pack_b(const float* w, Index ldw, Index n, Index k, std::uint16_t* dst) {
  const Index pairs = (k + 1) / 2;
  for (Index p = 0; p * kNr < n; ++p) {
    std::uint16_t* panel = dst + p * kNr * 2 * pairs;
    for (Index j = 0; j < kNr; ++j) {
      const Index col = p * kNr + j;
      for (Index kk = 0; kk < 2 * pairs; ++kk)
        panel[(kk / 2) * kPair + 2 * j + kk % 2] =
            col < n && kk < k ? to_bf16(w[col * ldw + kk]) : std::uint16_t(0);
    }
  }
}

// Packs rows [0, mc) x depth [0, kc) of a (stride lda) as micro-panels of mr
// rows (see pgemm::panel_rows), rounded to bf16: the panel at row i0 starts at
// byte 4 i0 ceil(kc / 2) of dst and holds, for every depth pair q, its r rows'
// 32-bit words bf16(a[i][2q]) | bf16(a[i][2q + 1]) << 16.
inline void pack_a(const float* a, Index lda, Index mc, Index kc, int mr, unsigned char* dst) {
  const Index pairs = (kc + 1) / 2;
  for (Index i0 = 0, r = 0; i0 < mc; i0 += r) {
    r = pgemm::panel_rows(i0, mc, mr);
    unsigned char* panel = dst + 4 * i0 * pairs;
    for (Index i = 0; i < r; ++i) {
      const float* src = a + (i0 + i) * lda;
      for (Index q = 0; q < pairs; ++q) {
        const std::uint32_t lo = to_bf16(src[2 * q]);
        const std::uint32_t hi = 2 * q + 1 < kc ? to_bf16(src[2 * q + 1]) : 0u;
        lowp::store_u32(panel + 4 * (q * r + i), lo | hi << 16);
      }
    }
  }
}

// ---------------------------------------------------------------- portable --

// RI rows x 8 columns [j0, j0 + 8) of an r x 32 tile over `pairs` depth pairs:
// per pair, acc += a_odd b_odd, then acc += a_even b_even, as VDPBF16PS (the
// products of two bf16 values are exact in float, so contraction into FMAs
// changes nothing).
template <int RI>
void tile_portable_block(int r, int i0, int j0, Index pairs, const unsigned char* a,
                         const std::uint16_t* b, float* c, Index ldc, const TileArgs& t) {
  float acc[RI][8] = {};
  const int lo = std::max(t.lo - j0, 0), hi = std::min(t.hi - j0, 8);
  if (lo >= hi) return;
  if (t.load_c)
    for (int i = 0; i < RI; ++i)
      for (int j = lo; j < hi; ++j) acc[i][j] = c[(i0 + i) * ldc + j0 + j];
  for (Index q = 0; q < pairs; ++q) {
    const std::uint16_t* bq = b + q * kPair + 2 * j0;
    float b0[8], b1[8];
    for (int j = 0; j < 8; ++j) {
      b0[j] = from_bf16(bq[2 * j]);
      b1[j] = from_bf16(bq[2 * j + 1]);
    }
    for (int i = 0; i < RI; ++i) {
      const std::uint32_t w = lowp::load_u32(a + 4 * (q * r + i0 + i));
      const float a0 = from_bf16(static_cast<std::uint16_t>(w & 0xFFFFu));
      const float a1 = from_bf16(static_cast<std::uint16_t>(w >> 16));
      for (int j = 0; j < 8; ++j) {
        acc[i][j] += a1 * b1[j];
        acc[i][j] += a0 * b0[j];
      }
    }
  }
  for (int i = 0; i < RI; ++i)
    for (int j = lo; j < hi; ++j) {
      float v = acc[i][j];
      if (t.last) {
        if (t.bias) v += t.bias[j0 + j];
        if (t.ep == Epilogue::gelu) v = pgemm::gelu_scalar(v);
      }
      c[(i0 + i) * ldc + j0 + j] = v;
    }
}

inline void tile_portable(int r, Index pairs, const unsigned char* a, const std::uint16_t* b,
                          float* c, Index ldc, const TileArgs& t) {
  for (int i0 = 0; i0 < r; i0 += 4)
    for (int j0 = 0; j0 < kNr; j0 += 8) switch (std::min(4, r - i0)) {
        case 4:
          tile_portable_block<4>(r, i0, j0, pairs, a, b, c, ldc, t);
          break;
        case 3:
          tile_portable_block<3>(r, i0, j0, pairs, a, b, c, ldc, t);
          break;
        case 2:
          tile_portable_block<2>(r, i0, j0, pairs, a, b, c, ldc, t);
          break;
        default:
          tile_portable_block<1>(r, i0, j0, pairs, a, b, c, ldc, t);
          break;
      }
}

// ----------------------------------------------------------------- AVX-512 --
#if VIT_PGEMM_X86

VIT_BF16_TARGET inline __m512bh as_bh(__m512i x) { return (__m512bh)x; }

// One R x 32 micro-tile over `pairs` depth pairs. a: pairs x R words, b: pairs
// x 64 bf16 (64-byte aligned), c: the tile's top-left element. Full: all 32
// columns in range.
template <int R, bool Full>
VIT_BF16_TARGET void tile_avx512(Index pairs, const unsigned char* a, const std::uint16_t* b,
                                 float* c, Index ldc, const TileArgs& t) {
  for (int i = 0; i < t.next_rows; ++i) {
    const char* row = reinterpret_cast<const char*>(t.next_c + i * ldc);
    _mm_prefetch(row, _MM_HINT_T0);
    _mm_prefetch(row + 64, _MM_HINT_T0);
  }
  __m512 acc[R][2];
  __mmask16 mask[2];
  VIT_PGEMM_UNROLL
  for (int v = 0; v < 2; ++v)
    mask[v] =
        Full ? static_cast<__mmask16>(0xFFFF) : pgemm::lane_mask(t.lo - 16 * v, t.hi - 16 * v);
  VIT_PGEMM_UNROLL
  for (int i = 0; i < R; ++i) {
    VIT_PGEMM_UNROLL
    for (int v = 0; v < 2; ++v) {
      if (!t.load_c)
        acc[i][v] = _mm512_setzero_ps();
      else if (Full)
        acc[i][v] = _mm512_loadu_ps(c + i * ldc + 16 * v);
      else
        acc[i][v] =
            mask[v] ? _mm512_maskz_loadu_ps(mask[v], c + i * ldc + 16 * v) : _mm512_setzero_ps();
    }
  }

  for (Index q = 0; q < pairs; ++q) {
    const __m512bh b0 = as_bh(_mm512_load_si512(b));
    const __m512bh b1 = as_bh(_mm512_load_si512(b + 32));
    VIT_PGEMM_UNROLL
    for (int i = 0; i < R; ++i) {
      const __m512bh av = as_bh(_mm512_set1_epi32(static_cast<int>(lowp::load_u32(a + 4 * i))));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], av, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], av, b1);
    }
    a += 4 * R;
    b += kPair;
  }

  if (t.last && (t.bias || t.ep == Epilogue::gelu)) {
    __m512 bias[2];
    VIT_PGEMM_UNROLL
    for (int v = 0; v < 2; ++v)
      bias[v] = (t.bias && mask[v]) ? _mm512_maskz_loadu_ps(mask[v], t.bias + 16 * v)
                                    : _mm512_setzero_ps();
    const bool gelu = t.ep == Epilogue::gelu;
    VIT_PGEMM_UNROLL
    for (int i = 0; i < R; ++i) {
      VIT_PGEMM_UNROLL
      for (int v = 0; v < 2; ++v) {
        acc[i][v] = _mm512_add_ps(acc[i][v], bias[v]);
        if (gelu) acc[i][v] = pgemm::gelu16(acc[i][v]);
      }
    }
  }

  VIT_PGEMM_UNROLL
  for (int i = 0; i < R; ++i) {
    VIT_PGEMM_UNROLL
    for (int v = 0; v < 2; ++v) {
      if (Full)
        _mm512_storeu_ps(c + i * ldc + 16 * v, acc[i][v]);
      else if (mask[v])
        _mm512_mask_storeu_ps(c + i * ldc + 16 * v, mask[v], acc[i][v]);
    }
  }
}

// pack_a with VCVTNE2PS2BF16: 32 depth indices of up to 16 rows become 16
// pair-words per row, transposed (pgemm::transpose16 moves 32-bit lanes
// without touching their bits) so that each depth pair's r words are stored
// contiguously.
VIT_BF16_TARGET inline void pack_a_avx512(const float* a, Index lda, Index mc, Index kc, int mr,
                                          unsigned char* dst) {
  const Index pairs = (kc + 1) / 2;
  for (Index i0 = 0, r = 0; i0 < mc; i0 += r) {
    r = pgemm::panel_rows(i0, mc, mr);
    const __mmask16 row_mask = pgemm::lane_mask(0, static_cast<int>(r));
    unsigned char* panel = dst + 4 * i0 * pairs;
    for (Index k0 = 0; k0 < kc; k0 += 32) {
      const int kn = static_cast<int>(std::min<Index>(32, kc - k0));
      const __mmask16 m0 = pgemm::lane_mask(0, kn), m1 = pgemm::lane_mask(0, kn - 16);
      __m512 v[16];
      for (int i = 0; i < 16; ++i) {
        if (i < r) {
          const float* src = a + (i0 + i) * lda + k0;
          const __m512 lo = _mm512_maskz_loadu_ps(m0, src);
          const __m512 hi = m1 ? _mm512_maskz_loadu_ps(m1, src + 16) : _mm512_setzero_ps();
          v[i] = _mm512_castsi512_ps((__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        } else {
          v[i] = _mm512_setzero_ps();
        }
      }
      pgemm::transpose16(v);
      const int pn = (kn + 1) / 2;
      for (int q = 0; q < pn; ++q)
        _mm512_mask_storeu_ps(reinterpret_cast<float*>(panel + 4 * (k0 / 2 + q) * r), row_mask,
                              v[q]);
    }
  }
}

using TileFn = void (*)(Index, const unsigned char*, const std::uint16_t*, float*, Index,
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

inline bool cpu_has_avx512bf16() {
  static const bool has = [] {
    __builtin_cpu_init();
    return pgemm::cpu_has_avx512() && __builtin_cpu_supports("avx512bf16");
  }();
  return has;
}
#else
inline bool cpu_has_avx512bf16() { return false; }
#endif  // VIT_PGEMM_X86

inline std::atomic<bool>& force_portable_flag() {
  static std::atomic<bool> flag{false};
  return flag;
}

inline bool use_avx512bf16() {
  return cpu_has_avx512bf16() && !force_portable_flag().load(std::memory_order_relaxed);
}

// Depth and row steps for [m, k]: equal blocks no larger than the limits, a
// depth step a multiple of 32 (whole pack_a chunks), a row step a whole
// number of micro-panels.
inline Index depth_step(Index k, Index kc_blk) {
  return std::min(kc_blk, pgemm::round_up(pgemm::ceil_div(k, pgemm::ceil_div(k, kc_blk)), 32));
}
inline Index row_step(Index m, Index mc_blk) {
  return std::min(mc_blk, pgemm::round_up(pgemm::ceil_div(m, pgemm::ceil_div(m, mc_blk)), kMr));
}

// Floats (32-bit words) of scratch run() needs: one packed row block.
inline std::size_t scratch_floats(Index m, Index k, Index mc_blk, Index kc_blk) {
  return static_cast<std::size_t>(std::min(m, mc_blk)) *
         static_cast<std::size_t>((std::min(k, kc_blk) + 1) / 2);
}

// c[:, n0:n1] (op)= bf16(a) b^T + bias with b packed by pack_b. mc_blk: a
// multiple of kMr; kc_blk: a multiple of 32 (parameters for the benchmark).
inline void run(Index m, Index k, const float* a, Index lda, const std::uint16_t* bp, float* c,
                Index ldc, const float* bias, Epilogue ep, float* scratch, Index n0, Index n1,
                Index mc_blk, Index kc_blk, bool simd) {
  if (m == 0 || n0 >= n1) return;
  if (k == 0) return lowp::bias_only(m, c, ldc, bias, ep, n0, n1);
  const Index kc_step = depth_step(k, kc_blk), mc_step = row_step(m, mc_blk);
  const Index panel_stride = kPair * ((k + 1) / 2);  // bf16 values per weight panel
  unsigned char* packed = reinterpret_cast<unsigned char*>(scratch);
#if VIT_PGEMM_X86
  const auto& table = tiles();
#endif
  for (Index pc = 0; pc < k; pc += kc_step) {
    const Index kc = std::min(kc_step, k - pc), pairs = (kc + 1) / 2;
    TileArgs t{nullptr, ep, pc > 0 || ep == Epilogue::accumulate, pc + kc == k, 0, int(kNr)};
    for (Index ic = 0; ic < m; ic += mc_step) {
      const Index mc = std::min(mc_step, m - ic);
#if VIT_PGEMM_X86
      if (simd)
        pack_a_avx512(a + ic * lda + pc, lda, mc, kc, kMr, packed);
      else
#endif
        pack_a(a + ic * lda + pc, lda, mc, kc, kMr, packed);
      for (Index jp = n0 / kNr; jp * kNr < n1; ++jp) {
        const Index j0 = jp * kNr;
        t.lo = static_cast<int>(std::max(n0, j0) - j0);
        t.hi = static_cast<int>(std::min(n1, j0 + kNr) - j0);
        t.bias = bias ? bias + j0 : nullptr;
        const bool full = t.lo == 0 && t.hi == kNr;
        const std::uint16_t* b = bp + jp * panel_stride + (pc / 2) * kPair;
        for (Index ir = 0, r = 0; ir < mc; ir += r) {
          r = pgemm::panel_rows(ir, mc, kMr);
          const unsigned char* ap = packed + 4 * ir * pairs;
          float* ct = c + (ic + ir) * ldc + j0;
          std::tie(t.next_c, t.next_rows) =
              lowp::next_tile(c, ldc, ic, ir, int(r), mc, j0, kNr, n1, kMr);
#if VIT_PGEMM_X86
          if (simd) {
            table[full][r - 1](pairs, ap, b, ct, ldc, t);
            continue;
          }
#else
          (void)simd;
          (void)full;
#endif
          tile_portable(static_cast<int>(r), pairs, ap, b, ct, ldc, t);
        }
      }
    }
  }
}

}  // namespace detail::bf16gemm

/// Forces gemm_packed_bf16's portable kernel even where AVX512-BF16 is
/// available (tests, comparisons); false restores the automatic choice.
/// Affects every thread.
inline void gemm_packed_bf16_force_portable(bool on) {
  detail::bf16gemm::force_portable_flag().store(on, std::memory_order_relaxed);
}

/// True when gemm_packed_bf16 runs the AVX512-BF16 kernel (CPU support, not
/// forced off).
inline bool gemm_packed_bf16_uses_avx512bf16() { return detail::bf16gemm::use_avx512bf16(); }

/// A Linear weight [n, k] (PyTorch [out, in]) rounded to bf16 (nearest even)
/// in gemm_packed_bf16's layout: panels of panel_width() output rows, for every
/// depth pair the rows' two values side by side, zero-padded to whole panels
/// and an even depth; one 64-byte aligned allocation of 2 bytes per value.
class PackedWeightBf16 {
 public:
  static constexpr Index panel_width() { return detail::bf16gemm::kNr; }

  PackedWeightBf16() = default;
  explicit PackedWeightBf16(const MatrixCRef<float>& w) { pack(w); }
  PackedWeightBf16(const PackedWeightBf16&) = default;
  PackedWeightBf16(PackedWeightBf16&& other) noexcept { swap(other); }
  PackedWeightBf16& operator=(const PackedWeightBf16&) = default;
  PackedWeightBf16& operator=(PackedWeightBf16&& other) noexcept {
    PackedWeightBf16 moved(std::move(other));
    swap(moved);
    return *this;
  }

  /// Packs w [n, k] (row-major, any outer stride); reuses the allocation when
  /// it is large enough.
  void pack(const MatrixCRef<float>& w) {
    if (w.rows() < 0 || w.cols() < 0) throw argument_error("PackedWeightBf16: negative shape");
    n_ = w.rows();
    k_ = w.cols();
    data_.resize(size() * sizeof(std::uint16_t));
    if (size() != 0) detail::bf16gemm::pack_b(w.data(), w.outerStride(), n_, k_, values());
  }

  /// The weight back in its [n, k] layout, as the bf16 values it holds.
  Matrix<float> unpack() const {
    Matrix<float> w(n_, k_);
    for (Index j = 0; j < n_; ++j)
      for (Index kk = 0; kk < k_; ++kk) w(j, kk) = (*this)(j, kk);
    return w;
  }

  /// Element (row j, column kk) of the weight, as rounded to bf16.
  float operator()(Index j, Index kk) const {
    const Index nr = panel_width();
    return detail::bf16gemm::from_bf16(
        data()[(j / nr) * nr * padded_cols() + (kk / 2) * detail::bf16gemm::kPair + 2 * (j % nr) +
               kk % 2]);
  }

  Index rows() const { return n_; }  ///< n: output features
  Index cols() const { return k_; }  ///< k: input features
  bool empty() const { return n_ == 0 || k_ == 0; }
  Index padded_rows() const { return (n_ + panel_width() - 1) / panel_width() * panel_width(); }
  Index padded_cols() const { return (k_ + 1) / 2 * 2; }  ///< k rounded up to even
  /// bf16 values stored (padded_rows() * padded_cols()).
  std::size_t size() const { return static_cast<std::size_t>(padded_rows() * padded_cols()); }
  std::size_t bytes() const { return size() * sizeof(std::uint16_t); }
  /// The packed bf16 bit patterns.
  const std::uint16_t* data() const { return reinterpret_cast<const std::uint16_t*>(data_.data()); }

  void swap(PackedWeightBf16& other) noexcept {
    data_.swap(other.data_);
    std::swap(n_, other.n_);
    std::swap(k_, other.k_);
  }

 private:
  std::uint16_t* values() { return reinterpret_cast<std::uint16_t*>(data_.data()); }

  detail::lowp::AlignedBytes data_;
  Index n_ = 0, k_ = 0;
};

/// Floats of scratch gemm_packed_bf16 needs for an [m, k] input (the packed
/// bf16 row block: min(m, 252) rows x ceil(min(k, 1536) / 2) 32-bit words).
inline std::size_t gemm_packed_bf16_scratch_size(Index m, Index k) {
  return detail::bf16gemm::scratch_floats(m, k, detail::bf16gemm::kMc, detail::bf16gemm::kKc);
}

/// Floats of scratch enough for any shape.
inline std::size_t gemm_packed_bf16_scratch_size() {
  return static_cast<std::size_t>(detail::bf16gemm::kMc * detail::bf16gemm::kKc / 2);
}

/// Columns [n0, n1) of c (op)= bf16(a) b^T + bias, see Epilogue; other columns
/// of c are not touched (threads may share c, each with its own range and
/// scratch). Shapes, the overlap check and the range rules as gemm_packed;
/// scratch: gemm_packed_bf16_scratch_size(m, k) floats, any alignment.
/// Allocates nothing.
inline void gemm_packed_bf16(const MatrixCRef<float>& a, const PackedWeightBf16& b,
                             MatrixRef<float> c, const float* bias, Epilogue ep, float* scratch,
                             Index n0, Index n1) {
  detail::lowp::check_args("gemm_packed_bf16", a, b.rows(), b.cols(), c, n0, n1, scratch);
  detail::bf16gemm::run(a.rows(), a.cols(), a.data(), a.outerStride(), b.data(), c.data(),
                        c.outerStride(), bias, ep, scratch, n0, n1, detail::bf16gemm::kMc,
                        detail::bf16gemm::kKc, detail::bf16gemm::use_avx512bf16());
}

/// c (op)= bf16(a) b^T + bias over all columns; see the column-range overload.
inline void gemm_packed_bf16(const MatrixCRef<float>& a, const PackedWeightBf16& b,
                             MatrixRef<float> c, const float* bias, Epilogue ep, float* scratch) {
  gemm_packed_bf16(a, b, c, bias, ep, scratch, 0, b.rows());
}

}  // namespace vit::nn
