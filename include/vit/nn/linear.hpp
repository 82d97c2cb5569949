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
               const GemmContext<Scalar>& ctx) const {
    forward(x, y, ctx, detail::NoOp{});
  }

  /// y = finish(x W^T + b): finish(tile, col0) runs on each output tile (a
  /// block of y starting at column col0) right after it is computed, on the
  /// same thread, e.g. the MLP's activation.
  template <class Finish>
  void forward(const MatrixCRef<Scalar>& x, MatrixRef<Scalar> y, const GemmContext<Scalar>& ctx,
               Finish&& finish) const {
    // Each tile starts from the bias, so the product accumulates onto it.
    gemm_nt_fused<Scalar>(
        x, weight, y, ctx, Scalar(1),
        [this](MatrixRef<Scalar> tile, Index col0) {
          if (has_bias())
            tile.rowwise() = bias.segment(col0, tile.cols());
          else
            tile.setZero();
        },
        finish);
  }

  /// y += x W^T + b, the residual form used after attention and the MLP.
  void forward_add(const MatrixCRef<Scalar>& x, MatrixRef<Scalar> y,
                   const GemmContext<Scalar>& ctx) const {
    gemm_nt_fused<Scalar>(
        x, weight, y, ctx, Scalar(1),
        [this](MatrixRef<Scalar> tile, Index col0) {
          if (has_bias()) tile.rowwise() += bias.segment(col0, tile.cols());
        },
        detail::NoOp{});
  }
};

}  // namespace vit::nn
