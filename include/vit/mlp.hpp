// vit/mlp.hpp - the transformer block's feed-forward network.
#pragma once

#include "vit/config.hpp"
#include "vit/nn/activation.hpp"
#include "vit/nn/linear.hpp"

namespace vit {

/// fc2(act(fc1(x))), added onto the residual stream.
///   fc1: [hidden, D] + [hidden]     fc2: [D, hidden] + [D]
template <class Scalar>
struct Mlp {
  nn::Linear<Scalar> fc1;
  nn::Linear<Scalar> fc2;
  Activation act = Activation::gelu_erf;

  Mlp() = default;
  Mlp(Index dim, Index hidden, Activation activation)
      : fc1(hidden, dim, true), fc2(dim, hidden, true), act(activation) {}

  /// residual += mlp(x).  x, residual: [rows, D]; hidden: workspace [rows, hidden].
  void forward_add(const MatrixCRef<Scalar>& x, MatrixRef<Scalar> hidden,
                   MatrixRef<Scalar> residual, const nn::GemmContext<Scalar>& ctx) const {
    // The activation runs on each tile of fc1's output as soon as it is computed.
    fc1.forward(x, hidden, ctx,
                [this](MatrixRef<Scalar> tile, Index) { nn::activate<Scalar>(act, tile); });
    fc2.forward_add(hidden, residual, ctx);
  }
};

}  // namespace vit
