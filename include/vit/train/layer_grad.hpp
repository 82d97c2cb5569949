// vit/train/layer_grad.hpp - backward passes of the layers: linear,
// LayerNorm, the activations, and one attention head.
//
// Conventions: dy is d(loss)/d(output). Input gradients (dx) are written;
// parameter gradients are added onto the gradient layer (a layer of the same
// shape whose parameters hold the gradients), so that several batches can
// accumulate.
#pragma once

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "vit/config.hpp"
#include "vit/nn/activation.hpp"
#include "vit/nn/gemm.hpp"
#include "vit/nn/layer_norm.hpp"
#include "vit/nn/linear.hpp"
#include "vit/nn/softmax.hpp"
#include "vit/tensor.hpp"

namespace vit::train {

/// Packed copies of a float Linear's weight for the fast kernels, refreshed
/// from the layer before each step: w for y = x W^T and wt (W^T) for dx = dy W.
struct PackedLinear {
  nn::PackedWeight w, wt;
  void refresh(const nn::Linear<float>& layer) {
    w.pack(layer.weight);
    wt.pack_transposed(layer.weight);
  }
};

/// Work memory of the fast weight gradient, reused from layer to layer
/// (grown to the largest layer, never shrunk).
struct GradWork {
  Matrix<float> t;        // the transposed smaller operand
  nn::PackedWeight p;     // the larger one, packed
  std::vector<float> gt;  // dW^T when that is what the product gives
};

/// b packed as the weight b^T (see PackedWeight::pack_transposed), the
/// panels shared out over ctx's threads.
inline void pack_transposed(nn::PackedWeight& w, const MatrixCRef<float>& b,
                            const nn::GemmContext<float>& ctx) {
  w.shape_transposed(b);
  const Index panels = w.panels(), per_task = 4;
  ctx.run((panels + per_task - 1) / per_task, [&](Index task, int) {
    w.pack_transposed_panels(b, task * per_task, std::min(panels, (task + 1) * per_task));
  });
}

/// y = epilogue(x W^T + b); on the packed kernels when `packed` is given.
template <class Scalar>
void linear_forward(const nn::Linear<Scalar>& layer, const PackedLinear* packed,
                    const MatrixCRef<Scalar>& x, MatrixRef<Scalar> y,
                    const nn::GemmContext<Scalar>& ctx, nn::Epilogue ep = nn::Epilogue::store) {
  if constexpr (std::is_same_v<Scalar, float>) {
    if (packed) {
      nn::gemm_packed(x, packed->w, y, layer.has_bias() ? layer.bias.data() : nullptr, ep, ctx);
      return;
    }
  }
  layer.forward(x, y, ctx, ep);
}

/// grad.weight += dy^T x, grad.bias += column sums of dy.
///   x: [rows, in]; dy: [rows, out]; grad: a Linear [out, in] of gradients.
/// With `work` (float), on the packed kernels: the smaller of x and dy is
/// transposed, the larger packed as the "weight" of the product.
template <class Scalar>
void linear_param_grads(const MatrixCRef<Scalar>& x, const MatrixCRef<Scalar>& dy,
                        nn::Linear<Scalar>& grad, const nn::GemmContext<Scalar>& ctx,
                        GradWork* work = nullptr) {
  if (grad.has_bias()) grad.bias.noalias() += dy.colwise().sum();
  if constexpr (std::is_same_v<Scalar, float>) {
    if (work) {
      const Index m = x.rows(), in = x.cols(), out = dy.cols();
      // t = a^T for a [m, cols], by blocks of t's rows on ctx's threads.
      auto transpose = [&](const MatrixCRef<float>& a) {
        if (work->t.rows() < a.cols() || work->t.cols() != m) work->t.resize(a.cols(), m);
        ctx.for_rows(a.cols(), [&](Index r0, Index count) {
          work->t.middleRows(r0, count) = a.middleCols(r0, count).transpose();
        });
        return MatrixCRef<float>(work->t.topRows(a.cols()));
      };
      if (out >= in) {  // dW^T [in, out] = x^T dy
        pack_transposed(work->p, dy, ctx);
        if (work->gt.size() < std::size_t(in * out)) work->gt.resize(std::size_t(in * out));
        Eigen::Map<Matrix<float>> gt(work->gt.data(), in, out);
        nn::gemm_packed(transpose(x), work->p, gt, nullptr, nn::Epilogue::store, ctx);
        grad.weight += gt.transpose();
      } else {  // dW [out, in] = dy^T x
        pack_transposed(work->p, x, ctx);
        nn::gemm_packed(transpose(dy), work->p, grad.weight, nullptr, nn::Epilogue::accumulate,
                        ctx);
      }
      return;
    }
  }
  nn::gemm_tn<Scalar>(dy, x, grad.weight, ctx, Scalar(1), true);
}

/// dx = dy W for y = x W^T + b. dx: [rows, in].
template <class Scalar>
void linear_input_grad(const nn::Linear<Scalar>& layer, const PackedLinear* packed,
                       const MatrixCRef<Scalar>& dy, MatrixRef<Scalar> dx,
                       const nn::GemmContext<Scalar>& ctx) {
  if constexpr (std::is_same_v<Scalar, float>) {
    if (packed) {
      nn::gemm_packed(dy, packed->wt, dx, nullptr, nn::Epilogue::store, ctx);
      return;
    }
  }
  nn::gemm_nn<Scalar>(dy, layer.weight, dx, ctx);
}

/// The backward pass of y = x W^T + b: dx = dy W, and the parameter
/// gradients as linear_param_grads. dx: [rows, in].
template <class Scalar>
void linear_backward(const nn::Linear<Scalar>& layer, const MatrixCRef<Scalar>& x,
                     const MatrixCRef<Scalar>& dy, MatrixRef<Scalar> dx, nn::Linear<Scalar>& grad,
                     const nn::GemmContext<Scalar>& ctx, const PackedLinear* packed = nullptr,
                     GradWork* work = nullptr) {
  linear_param_grads<Scalar>(x, dy, grad, ctx, work);
  linear_input_grad<Scalar>(layer, packed, dy, dx, ctx);
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

/// x <- act'(x) and y = act(x), row by row: the activation and, for the
/// backward pass, its derivative at the same input. x, y: [rows, F].
template <class Scalar>
void activation_with_derivative(Activation act, MatrixRef<Scalar> x, MatrixRef<Scalar> y) {
  if constexpr (std::is_same_v<Scalar, float>) {
#if VIT_PGEMM_X86
    if (act == Activation::gelu_erf && nn::gemm_packed_uses_avx512()) {
      for (Index r = 0; r < x.rows(); ++r)
        nn::detail::pgemm::gelu_grad_avx512(x.row(r).data(), y.row(r).data(), x.row(r).data(),
                                            x.cols());
      return;
    }
#endif
  }
  y = x;
  nn::activate<Scalar>(act, y);
  for (Index r = 0; r < x.rows(); ++r)
    for (Index c = 0; c < x.cols(); ++c) x(r, c) = activation_derivative(act, x(r, c));
}

/// Per-thread work memory of the packed attention-head products (float).
struct HeadWork {
  nn::PackedWeight a, b;  // the right-hand operands, packed
  Matrix<float> tm;       // a transposed left-hand operand, (T, T)
};

/// One head's forward pass: p = softmax(scale q k^T), out = p v.
///   q, k, v, out: [T, hd]; p: [T, T]. With `hw` (float), on the packed kernels.
template <class Scalar>
void attention_head_forward(const MatrixCRef<Scalar>& q, const MatrixCRef<Scalar>& k,
                            const MatrixCRef<Scalar>& v, Scalar scale, MatrixRef<Scalar> p,
                            MatrixRef<Scalar> out, nn::GemmScratch<Scalar>& scratch,
                            HeadWork* hw = nullptr) {
  if constexpr (std::is_same_v<Scalar, float>) {
    if (hw) {
      const Index t = q.rows(), hd = q.cols();
      float* sc = scratch.reserve(
          std::max(nn::gemm_packed_scratch_size(t, hd), nn::gemm_packed_scratch_size(t, t)));
      hw->a.pack(k);
      nn::gemm_packed(q, hw->a, p, nullptr, nn::Epilogue::store, sc);
      nn::softmax_rows<float>(p, scale);
      hw->b.pack_transposed(v);
      nn::gemm_packed(p, hw->b, out, nullptr, nn::Epilogue::store, sc);
      return;
    }
  }
  nn::gemm_nt<Scalar>(q, k, p, scratch, scale);
  nn::softmax_rows<Scalar>(p);
  nn::gemm_nn<Scalar>(p, v, out, scratch);
}

/// Backward pass of one head: p = softmax(scale q k^T), out = p v.
///   q, k, v, dout, dq, dk, dv: [T, hd]; p: [T, T] the forward's probabilities;
///   dp_work: a [T, T] (or larger) work matrix; dq, dk, dv are written.
/// With dS = scale p * (dp - rowsum(dp * p)) for dp = dout v^T:
///   dv = p^T dout, dq = dS k, dk = dS^T q.
/// With `hw` (float), on the packed kernels.
template <class Scalar>
void attention_head_backward(const MatrixCRef<Scalar>& q, const MatrixCRef<Scalar>& k,
                             const MatrixCRef<Scalar>& v, const MatrixCRef<Scalar>& p,
                             const MatrixCRef<Scalar>& dout, Scalar scale, MatrixRef<Scalar> dq,
                             MatrixRef<Scalar> dk, MatrixRef<Scalar> dv, Matrix<Scalar>& dp_work,
                             nn::GemmScratch<Scalar>& scratch, HeadWork* hw = nullptr) {
  const Index t = p.rows();
  MatrixRef<Scalar> dp = dp_work.topLeftCorner(t, t);
  // dp -> dS in place.
  auto softmax_backward = [&] {
    for (Index r = 0; r < t; ++r) {
      const Scalar dot = (dp.row(r).array() * p.row(r).array()).sum();
      dp.row(r) = (scale * p.row(r).array() * (dp.row(r).array() - dot)).matrix();
    }
  };
  if constexpr (std::is_same_v<Scalar, float>) {
    if (hw) {
      const Index hd = q.cols();
      float* sc = scratch.reserve(
          std::max(nn::gemm_packed_scratch_size(t, hd), nn::gemm_packed_scratch_size(t, t)));
      if (hw->tm.rows() < t || hw->tm.cols() < t) hw->tm.resize(t, t);
      MatrixRef<float> tm = hw->tm.topLeftCorner(t, t);
      hw->a.pack(v);
      nn::gemm_packed(dout, hw->a, dp, nullptr, nn::Epilogue::store, sc);  // dout v^T
      tm = p.transpose();
      hw->b.pack_transposed(dout);
      nn::gemm_packed(tm, hw->b, dv, nullptr, nn::Epilogue::store, sc);  // p^T dout
      softmax_backward();
      hw->a.pack_transposed(k);
      nn::gemm_packed(dp, hw->a, dq, nullptr, nn::Epilogue::store, sc);  // dS k
      tm = dp.transpose();
      hw->b.pack_transposed(q);
      nn::gemm_packed(tm, hw->b, dk, nullptr, nn::Epilogue::store, sc);  // dS^T q
      return;
    }
  }
  nn::gemm_nt<Scalar>(dout, v, dp, scratch);
  nn::gemm_tn<Scalar>(p, dout, dv, scratch);
  softmax_backward();
  nn::gemm_nn<Scalar>(dp, k, dq, scratch);
  nn::gemm_tn<Scalar>(dp, q, dk, scratch);
}

}  // namespace vit::train
