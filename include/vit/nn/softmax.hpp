// vit/nn/softmax.hpp - row-wise softmax.
#pragma once

#include "vit/tensor.hpp"

namespace vit::nn {

/// Replaces each row of x by softmax(row). The row maximum is subtracted
/// first, so scores of 1e4 give exp(0) = 1 at the top, never inf / inf.
template <class Scalar>
void softmax_rows(MatrixRef<Scalar> x) {
  for (Index r = 0; r < x.rows(); ++r) {
    const Scalar max = x.row(r).maxCoeff();
    x.row(r) = (x.row(r).array() - max).exp().matrix();
    x.row(r) /= x.row(r).sum();
  }
}

}  // namespace vit::nn
