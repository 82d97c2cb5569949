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

  /// Scalars of GemmScratch each thread needs for `rows` rows.
  std::size_t scratch_size(Index rows, int threads) const {
    return std::max(fc1.scratch_size(rows, threads), fc2.scratch_size(rows, threads));
  }

  /// residual += mlp(x).  x, residual: [rows, D]; hidden: workspace [rows, hidden].
  void forward_add(const MatrixCRef<Scalar>& x, MatrixRef<Scalar> hidden,
                   MatrixRef<Scalar> residual, const nn::GemmContext<Scalar>& ctx) const {
    // Exact GELU is fused into fc1's product; other activations run over
    // the finished rows.
    if (act == Activation::gelu_erf) {
      fc1.forward(x, hidden, ctx, nn::Epilogue::gelu);
    } else {
      fc1.forward(x, hidden, ctx);
      ctx.for_rows(hidden.rows(), [&](Index r0, Index count) {
        nn::activate<Scalar>(act, hidden.middleRows(r0, count));
      });
    }
    fc2.forward_add(hidden, residual, ctx);
  }
};

}  // namespace vit
