// vit/nn/gemm.hpp - the one matrix-product interface every layer goes through.
//
// c (+)= alpha * a * b      (b row-major [k, n])
// c (+)= alpha * a * b^T    (b row-major [n, k], e.g. a Linear weight [out, in])
//
// Keeping every product behind these two functions lets faster kernels
// replace the implementation without touching the model code. The current
// implementation runs Eigen's blocked GEMM kernel with packing buffers that
// live in a GemmScratch the caller owns, so a product never allocates once
// the scratch has grown to the largest shape (Eigen's own operator* would
// allocate its packing buffers on the heap for large shapes).
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cstddef>

#include "vit/tensor.hpp"

namespace vit::nn {

/// Packing memory for gemm(); grows to the largest product seen, then is reused.
template <class Scalar>
class GemmScratch {
 public:
  /// Makes room for `count` scalars; allocates only when it grows.
  Scalar* reserve(std::size_t count) {
    if (count > size_) {
      Eigen::internal::aligned_free(data_);
      data_ = nullptr;
      size_ = 0;
      data_ = static_cast<Scalar*>(Eigen::internal::aligned_malloc(count * sizeof(Scalar)));
      size_ = count;
    }
    return data_;
  }
  GemmScratch() = default;
  GemmScratch(const GemmScratch&) : GemmScratch() {}  // scratch is never shared
  GemmScratch& operator=(const GemmScratch&) { return *this; }
  ~GemmScratch() { Eigen::internal::aligned_free(data_); }
  std::size_t capacity() const { return size_; }

 private:
  Scalar* data_ = nullptr;
  std::size_t size_ = 0;
};

namespace detail {

// Eigen's blocking descriptor pointed at caller-owned packing buffers.
template <class Scalar>
class ScratchBlocking : public Eigen::internal::level3_blocking<Scalar, Scalar> {
  using Base = Eigen::internal::level3_blocking<Scalar, Scalar>;

 public:
  // rows/cols/depth of the column-major product Eigen runs internally.
  ScratchBlocking(Index rows, Index cols, Index depth, GemmScratch<Scalar>& scratch) {
    Index kc = depth, mc = rows, nc = cols;
    Eigen::internal::computeProductBlockingSizes<Scalar, Scalar, 1, Index>(kc, mc, nc, Index(1));
    // Round each block to a whole number of SIMD-aligned packets.
    const Index align = EIGEN_MAX_ALIGN_BYTES / Index(sizeof(Scalar));
    const Index size_a = (kc * mc + align - 1) / align * align;
    const Index size_b = (kc * nc + align - 1) / align * align;
    Scalar* base = scratch.reserve(static_cast<std::size_t>(size_a + size_b));
    this->m_kc = kc;
    this->m_mc = mc;
    this->m_nc = nc;
    this->m_blockA = base;
    this->m_blockB = base + size_a;
  }
};

template <int LhsOrder, int RhsOrder, class Scalar>
void run_gemm(Index m, Index n, Index k, const Scalar* a, Index lda, const Scalar* b, Index ldb,
              Scalar* c, Index ldc, Scalar alpha, GemmScratch<Scalar>& scratch) {
  if (m == 0 || n == 0 || k == 0) return;
  // A row-major destination is computed by Eigen as the transposed
  // column-major product, so its blocking sees (n, m) as (rows, cols).
  ScratchBlocking<Scalar> blocking(n, m, k, scratch);
  Eigen::internal::general_matrix_matrix_product<Index, Scalar, LhsOrder, false, Scalar, RhsOrder,
                                                 false, Eigen::RowMajor, 1>::run(m, n, k, a, lda, b,
                                                                                 ldb, c, 1, ldc,
                                                                                 alpha, blocking);
}

}  // namespace detail

/// c = alpha * a * b^T, or c += alpha * a * b^T when accumulate.
/// a: [m, k], b: [n, k], c: [m, n]; all row-major with unit inner stride.
template <class Scalar>
void gemm_nt(const MatrixCRef<Scalar>& a, const MatrixCRef<Scalar>& b, MatrixRef<Scalar> c,
             GemmScratch<Scalar>& scratch, Scalar alpha = Scalar(1), bool accumulate = false) {
  eigen_assert(a.cols() == b.cols() && c.rows() == a.rows() && c.cols() == b.rows());
  if (!accumulate) c.setZero();
  detail::run_gemm<Eigen::RowMajor, Eigen::ColMajor>(a.rows(), b.rows(), a.cols(), a.data(),
                                                     a.outerStride(), b.data(), b.outerStride(),
                                                     c.data(), c.outerStride(), alpha, scratch);
}

/// c = alpha * a * b, or c += alpha * a * b when accumulate.
/// a: [m, k], b: [k, n], c: [m, n]; all row-major with unit inner stride.
template <class Scalar>
void gemm_nn(const MatrixCRef<Scalar>& a, const MatrixCRef<Scalar>& b, MatrixRef<Scalar> c,
             GemmScratch<Scalar>& scratch, Scalar alpha = Scalar(1), bool accumulate = false) {
  eigen_assert(a.cols() == b.rows() && c.rows() == a.rows() && c.cols() == b.cols());
  if (!accumulate) c.setZero();
  detail::run_gemm<Eigen::RowMajor, Eigen::RowMajor>(a.rows(), b.cols(), a.cols(), a.data(),
                                                     a.outerStride(), b.data(), b.outerStride(),
                                                     c.data(), c.outerStride(), alpha, scratch);
}

}  // namespace vit::nn
