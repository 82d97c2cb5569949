// vit/nn/layer_norm.hpp - LayerNorm over the feature axis of token rows.
#pragma once

#include <cmath>
#include <utility>

#include "vit/tensor.hpp"

namespace vit::nn {

/// y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias, per row, with the
/// biased variance as PyTorch computes it. weight, bias: [features].
template <class Scalar>
struct LayerNorm {
  RowVector<Scalar> weight;  // (features)
  RowVector<Scalar> bias;    // (features)
  double eps = 1e-6;

  LayerNorm() = default;
  LayerNorm(Index features, double epsilon)
      : weight(RowVector<Scalar>::Ones(features)),
        bias(RowVector<Scalar>::Zero(features)),
        eps(epsilon) {}

  Index features() const { return weight.size(); }

  /// Mean of row r of x, taken of the offsets from the row's first value: a
  /// constant row then has exactly its value as mean (variance 0, output =
  /// bias), where summing the values themselves rounds (1e20 in float) or
  /// overflows (1e38).
  static Scalar row_mean(const MatrixCRef<Scalar>& x, Index r) {
    const Index n = x.cols();
    const Scalar first = n > 0 ? x(r, 0) : Scalar(0);
    return first + (x.row(r).array() - first).sum() / Scalar(n);
  }

  /// x, y: [rows, features]; y may be x itself (in place).
  void forward(const MatrixCRef<Scalar>& x, MatrixRef<Scalar> y) const {
    for (Index r = 0; r < x.rows(); ++r) forward_row(x, r, y);
  }

  /// Same, and keeps each row's mean and 1/std for the backward pass in
  /// stats: [rows, 2].
  void forward(const MatrixCRef<Scalar>& x, MatrixRef<Scalar> y, MatrixRef<Scalar> stats) const {
    for (Index r = 0; r < x.rows(); ++r) {
      const auto [mean, inv] = forward_row(x, r, y);
      stats(r, 0) = mean;
      stats(r, 1) = inv;
    }
  }

 private:
  /// Normalises row r of x into row r of y; returns its mean and 1/std.
  std::pair<Scalar, Scalar> forward_row(const MatrixCRef<Scalar>& x, Index r,
                                        MatrixRef<Scalar>& y) const {
    // Two passes (mean, then centred squares): stable when |mean| >> std.
    const Scalar mean = row_mean(x, r);
    const Scalar var = (x.row(r).array() - mean).square().sum() / Scalar(x.cols());
    const Scalar inv = Scalar(1) / std::sqrt(var + Scalar(eps));
    y.row(r) = ((x.row(r).array() - mean) * inv * weight.array() + bias.array()).matrix();
    return {mean, inv};
  }
};

}  // namespace vit::nn
