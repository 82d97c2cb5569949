// vit/train/layer_grad.hpp - backward passes of the layers: linear,
// LayerNorm, the activations, and one attention head.
//
// Conventions: dy is d(loss)/d(output). Input gradients (dx) are written;
// parameter gradients are added onto the gradient layer (a layer of the same
// shape whose parameters hold the gradients), so that several batches can
// accumulate.
#pragma once

#include <cmath>

#include "vit/config.hpp"
#include "vit/nn/activation.hpp"
#include "vit/nn/gemm.hpp"
#include "vit/nn/layer_norm.hpp"
#include "vit/nn/linear.hpp"
#include "vit/tensor.hpp"

namespace vit::train {

/// grad.weight += dy^T x, grad.bias += column sums of dy.
///   x: [rows, in]; dy: [rows, out]; grad: a Linear [out, in] of gradients.
template <class Scalar>
void linear_param_grads(const MatrixCRef<Scalar>& x, const MatrixCRef<Scalar>& dy,
                        nn::Linear<Scalar>& grad, const nn::GemmContext<Scalar>& ctx) {
  nn::gemm_tn<Scalar>(dy, x, grad.weight, ctx, Scalar(1), true);
  if (grad.has_bias()) grad.bias.noalias() += dy.colwise().sum();
}

/// The backward pass of y = x W^T + b: dx = dy W, and the parameter
/// gradients as linear_param_grads. dx: [rows, in].
template <class Scalar>
void linear_backward(const nn::Linear<Scalar>& layer, const MatrixCRef<Scalar>& x,
                     const MatrixCRef<Scalar>& dy, MatrixRef<Scalar> dx, nn::Linear<Scalar>& grad,
                     const nn::GemmContext<Scalar>& ctx) {
  linear_param_grads<Scalar>(x, dy, grad, ctx);
  nn::gemm_nn<Scalar>(dy, layer.weight, dx, ctx);
}

/// LayerNorm forward that also keeps each row's mean and 1/std for the
/// backward pass. x, y: [rows, F]; stats: [rows, 2] (mean, 1/std).
template <class Scalar>
void layer_norm_forward(const nn::LayerNorm<Scalar>& ln, const MatrixCRef<Scalar>& x,
                        MatrixRef<Scalar> y, MatrixRef<Scalar> stats) {
  const Index f = x.cols();
  for (Index r = 0; r < x.rows(); ++r) {
    const Scalar mean = x.row(r).sum() / Scalar(f);
    const Scalar var = (x.row(r).array() - mean).square().sum() / Scalar(f);
    const Scalar inv = Scalar(1) / std::sqrt(var + Scalar(ln.eps));
    y.row(r) = ((x.row(r).array() - mean) * inv * ln.weight.array() + ln.bias.array()).matrix();
    stats(r, 0) = mean;
    stats(r, 1) = inv;
  }
}

/// dx of LayerNorm, row by row: with xhat = (x - mean) / std and
/// g = dy * weight, dx = (g - mean(g) - xhat * mean(g * xhat)) / std.
template <class Scalar>
void layer_norm_backward_rows(const nn::LayerNorm<Scalar>& ln, const MatrixCRef<Scalar>& x,
                              const MatrixCRef<Scalar>& stats, const MatrixCRef<Scalar>& dy,
                              MatrixRef<Scalar> dx) {
  const Index f = x.cols();
  for (Index r = 0; r < x.rows(); ++r) {
    const Scalar mean = stats(r, 0), inv = stats(r, 1);
    const auto xhat = (x.row(r).array() - mean) * inv;
    const auto g = dy.row(r).array() * ln.weight.array();
    const Scalar g_mean = g.sum() / Scalar(f);
    const Scalar gx_mean = (g * xhat).sum() / Scalar(f);
    dx.row(r) = ((g - g_mean - xhat * gx_mean) * inv).matrix();
  }
}

/// grad.weight += sum over rows of dy * xhat, grad.bias += sum of dy.
template <class Scalar>
void layer_norm_param_grads(const MatrixCRef<Scalar>& x, const MatrixCRef<Scalar>& stats,
                            const MatrixCRef<Scalar>& dy, nn::LayerNorm<Scalar>& grad) {
  for (Index r = 0; r < x.rows(); ++r) {
    grad.weight.array() += dy.row(r).array() * (x.row(r).array() - stats(r, 0)) * stats(r, 1);
    grad.bias += dy.row(r);
  }
}

/// d act(x) / dx for the three GELUs.
template <class Scalar>
Scalar activation_derivative(Activation act, Scalar x) {
  switch (act) {
    case Activation::gelu_tanh: {
      const Scalar c = Scalar(0.7978845608028654);  // sqrt(2 / pi)
      const Scalar u = c * (x + Scalar(0.044715) * x * x * x);
      const Scalar th = std::tanh(u);
      return Scalar(0.5) * (Scalar(1) + th) + Scalar(0.5) * x * (Scalar(1) - th * th) * c *
                                                  (Scalar(1) + Scalar(3 * 0.044715) * x * x);
    }
    case Activation::quick_gelu: {
      const Scalar s = Scalar(1) / (Scalar(1) + std::exp(Scalar(-1.702) * x));
      return s + Scalar(1.702) * x * s * (Scalar(1) - s);
    }
    case Activation::gelu_erf:
    default: {
      const Scalar cdf = Scalar(0.5) * (Scalar(1) + std::erf(x * Scalar(0.7071067811865476)));
      const Scalar pdf = std::exp(Scalar(-0.5) * x * x) * Scalar(0.3989422804014327);
      return cdf + x * pdf;
    }
  }
}

/// dh *= act'(pre), in place (dh: d(activation output) -> d(activation input)).
template <class Scalar>
void activation_backward(Activation act, const MatrixCRef<Scalar>& pre, MatrixRef<Scalar> dh) {
  for (Index r = 0; r < pre.rows(); ++r)
    for (Index c = 0; c < pre.cols(); ++c) dh(r, c) *= activation_derivative(act, pre(r, c));
}

/// Backward pass of one head: p = softmax(scale q k^T), out = p v.
///   q, k, v, dout, dq, dk, dv: [T, hd]; p: [T, T] the forward's probabilities;
///   dp: a [T, T] (or larger) work matrix; dq, dk, dv are written.
/// With dS = p * (dp - rowsum(dp * p)) for dp = dout v^T:
///   dv = p^T dout, dq = scale dS k, dk = scale dS^T q.
template <class Scalar>
void attention_head_backward(const MatrixCRef<Scalar>& q, const MatrixCRef<Scalar>& k,
                             const MatrixCRef<Scalar>& v, const MatrixCRef<Scalar>& p,
                             const MatrixCRef<Scalar>& dout, Scalar scale, MatrixRef<Scalar> dq,
                             MatrixRef<Scalar> dk, MatrixRef<Scalar> dv, Matrix<Scalar>& dp_work,
                             nn::GemmScratch<Scalar>& scratch) {
  const Index t = p.rows();
  MatrixRef<Scalar> dp = dp_work.topLeftCorner(t, t);
  nn::gemm_nt<Scalar>(dout, v, dp, scratch);
  nn::gemm_tn<Scalar>(p, dout, dv, scratch);
  for (Index r = 0; r < t; ++r) {
    const Scalar dot = (dp.row(r).array() * p.row(r).array()).sum();
    dp.row(r) = (p.row(r).array() * (dp.row(r).array() - dot)).matrix();
  }
  nn::gemm_nn<Scalar>(dp, k, dq, scratch, scale);
  nn::gemm_tn<Scalar>(dp, q, dk, scratch, scale);
}

}  // namespace vit::train
