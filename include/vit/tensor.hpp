// vit/tensor.hpp - the matrix types every component works on.
//
// Tokens are row-major matrices, one row per token and one column per
// feature; a batch of N images stacks its N * T token rows, so every linear
// layer is a single GEMM. Linear weights keep PyTorch's [out, in] layout.
#pragma once

#include <Eigen/Core>

#include <string>

#include "vit/error.hpp"

namespace vit {

using Index = Eigen::Index;

/// Dynamic-size row-major matrix (tokens x features, or [out, in] weights).
template <class Scalar>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Dynamic-size row vector (a bias, a LayerNorm gain, one token).
template <class Scalar>
using RowVector = Eigen::Matrix<Scalar, 1, Eigen::Dynamic>;

/// Read-only view of a row-major matrix (any outer stride).
template <class Scalar>
using MatrixCRef = Eigen::Ref<const Matrix<Scalar>>;

/// Writable view of a row-major matrix.
template <class Scalar>
using MatrixRef = Eigen::Ref<Matrix<Scalar>>;

/// Read-only view of a row vector.
template <class Scalar>
using RowVectorCRef = Eigen::Ref<const RowVector<Scalar>>;

namespace detail {

inline std::string shape_string(Index rows, Index cols) {
  return "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
}

/// Throws argument_error unless m is rows x cols; `what` names the argument.
template <class Derived>
void check_shape(const Eigen::DenseBase<Derived>& m, Index rows, Index cols, const char* what) {
  if (m.rows() != rows || m.cols() != cols)
    throw argument_error(std::string(what) + ": expected shape " + shape_string(rows, cols) +
                         ", got " + shape_string(m.rows(), m.cols()));
}

}  // namespace detail
}  // namespace vit
