// vit/nn/activation.hpp - element-wise non-linearities of the MLP.
#pragma once

#include <cmath>

#include "vit/config.hpp"
#include "vit/tensor.hpp"

namespace vit::nn {

/// Exact GELU: 0.5 x (1 + erf(x / sqrt 2)).
template <class Scalar>
Scalar gelu_erf(Scalar x) {
  return Scalar(0.5) * x * (Scalar(1) + std::erf(x * Scalar(0.70710678118654752440)));
}

/// tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
template <class Scalar>
Scalar gelu_tanh(Scalar x) {
  const Scalar k = Scalar(0.79788456080286535588);  // sqrt(2/pi)
  return Scalar(0.5) * x * (Scalar(1) + std::tanh(k * (x + Scalar(0.044715) * x * x * x)));
}

/// x * sigmoid(1.702 x), the approximation CLIP-style checkpoints use.
template <class Scalar>
Scalar quick_gelu(Scalar x) {
  return x / (Scalar(1) + std::exp(Scalar(-1.702) * x));
}

/// Applies `act` to every element of x in place.
template <class Scalar>
void activate(Activation act, MatrixRef<Scalar> x) {
  switch (act) {
    case Activation::gelu_erf:
      x = x.unaryExpr([](Scalar v) { return gelu_erf(v); });
      break;
    case Activation::gelu_tanh:
      x = x.unaryExpr([](Scalar v) { return gelu_tanh(v); });
      break;
    case Activation::quick_gelu:
      x = x.unaryExpr([](Scalar v) { return quick_gelu(v); });
      break;
    case Activation::relu:
      x = x.cwiseMax(Scalar(0));
      break;
  }
}

}  // namespace vit::nn
