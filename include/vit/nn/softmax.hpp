// vit/nn/softmax.hpp - row-wise softmax.
#pragma once

#include <algorithm>
#include <limits>
#include <type_traits>

#include "vit/nn/gemm_avx512.hpp"
#include "vit/tensor.hpp"

namespace vit::nn {

namespace detail {
#if VIT_PGEMM_X86
// One row of floats: x = softmax(scale * x), with the AVX-512 exp of the GEMM
// epilogues (relative error ~1e-7). Exponents below -100 give exactly zero
// (the clamp also keeps -inf scores from turning into NaN).
VIT_PGEMM_TARGET inline void softmax_row_avx512(float* x, Index n, float scale) {
  namespace pg = vit::nn::detail::pgemm;
  __m512 mx = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (Index i = 0; i < n; i += 16) {
    const __mmask16 m = pg::lane_mask(0, static_cast<int>(std::min<Index>(16, n - i)));
    mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, x + i));
  }
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, mx);
  const float row_max = *std::max_element(lanes, lanes + 16);
  const __m512 shift = _mm512_set1_ps(row_max), s = _mm512_set1_ps(scale);
  const __m512 floor = _mm512_set1_ps(-100.0f);
  __m512 sum = _mm512_setzero_ps();
  for (Index i = 0; i < n; i += 16) {
    const __mmask16 m = pg::lane_mask(0, static_cast<int>(std::min<Index>(16, n - i)));
    const __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), shift), s);
    const __mmask16 keep = m & _mm512_cmp_ps_mask(v, floor, _CMP_GT_OQ);
    const __m512 e = _mm512_maskz_mov_ps(keep, pg::exp16(pg::max16(v, floor)));
    sum = _mm512_add_ps(sum, e);
    _mm512_mask_storeu_ps(x + i, m, e);
  }
  _mm512_store_ps(lanes, sum);
  float total = 0.0f;
  for (float v : lanes) total += v;
  const __m512 inv = _mm512_set1_ps(1.0f / total);
  for (Index i = 0; i < n; i += 16) {
    const __mmask16 m = pg::lane_mask(0, static_cast<int>(std::min<Index>(16, n - i)));
    _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
  }
}
#endif
}  // namespace detail

/// Replaces each row of x by softmax(scale * row). The row maximum is
/// subtracted first, so scores of 1e4 give exp(0) = 1 at the top, never
/// inf / inf. scale must be positive. Float rows use AVX-512 where the CPU
/// has it.
template <class Scalar>
void softmax_rows(MatrixRef<Scalar> x, Scalar scale = Scalar(1)) {
#if VIT_PGEMM_X86
  if constexpr (std::is_same_v<Scalar, float>) {
    if (gemm_packed_uses_avx512()) {
      for (Index r = 0; r < x.rows(); ++r)
        detail::softmax_row_avx512(x.row(r).data(), x.cols(), scale);
      return;
    }
  }
#endif
  for (Index r = 0; r < x.rows(); ++r) {
    const Scalar max = x.row(r).maxCoeff();
    x.row(r) = ((x.row(r).array() - max) * scale).exp().matrix();
    x.row(r) /= x.row(r).sum();
  }
}

}  // namespace vit::nn
