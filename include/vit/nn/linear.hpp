// vit/nn/linear.hpp - fully connected layer, y = x W^T + b.
#pragma once

#include <string>

#include "vit/nn/gemm.hpp"
#include "vit/tensor.hpp"

namespace vit::nn {

/// A Linear layer in PyTorch's layout.
///   weight: [out, in]   bias: [out] (size 0 when the layer has no bias)
/// Inputs are token rows [rows, in]; outputs [rows, out].
template <class Scalar>
struct Linear {
  Matrix<Scalar> weight;   // (out, in)
  RowVector<Scalar> bias;  // (out) or empty

  Linear() = default;
  Linear(Index out, Index in, bool has_bias)
      : weight(Matrix<Scalar>::Zero(out, in)),
        bias(has_bias ? RowVector<Scalar>::Zero(out) : RowVector<Scalar>()) {}

  Index in_features() const { return weight.cols(); }
  Index out_features() const { return weight.rows(); }
  bool has_bias() const { return bias.size() != 0; }

  /// y = x W^T + b.  x: [rows, in], y: [rows, out] (must not alias x).
  void forward(const MatrixCRef<Scalar>& x, MatrixRef<Scalar> y,
               GemmScratch<Scalar>& scratch) const {
    // Start from the bias so the product accumulates onto it: one pass over y.
    if (has_bias())
      y.rowwise() = bias;
    else
      y.setZero();
    gemm_nt<Scalar>(x, weight, y, scratch, Scalar(1), true);
  }

  /// y += x W^T + b, the residual form used after attention and the MLP.
  void forward_add(const MatrixCRef<Scalar>& x, MatrixRef<Scalar> y,
                   GemmScratch<Scalar>& scratch) const {
    if (has_bias()) y.rowwise() += bias;
    gemm_nt<Scalar>(x, weight, y, scratch, Scalar(1), true);
  }
};

}  // namespace vit::nn
