// vit/train/loss.hpp - cross-entropy over logits, with label smoothing.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "vit/error.hpp"
#include "vit/tensor.hpp"

namespace vit::train {

/// Mean cross-entropy of a batch, as PyTorch's CrossEntropyLoss with
/// label_smoothing = smoothing: the target of row i is (1 - smoothing) on
/// labels[i] plus smoothing / C spread over all C classes.
///   logits: [N, C]; labels: N class indices in [0, C);
///   dlogits: null, or [N, C] to receive d(loss)/d(logits).
/// Returns the loss; argument_error for a label out of range or a bad size.
template <class Scalar>
double cross_entropy(const MatrixCRef<Scalar>& logits, const std::vector<int>& labels,
                     double smoothing = 0.0, MatrixRef<Scalar>* dlogits = nullptr) {
  const Index n = logits.rows(), c = logits.cols();
  if (Index(labels.size()) != n)
    throw argument_error("cross_entropy: " + std::to_string(labels.size()) + " labels for " +
                         std::to_string(n) + " rows of logits");
  if (!(smoothing >= 0.0 && smoothing < 1.0))
    throw argument_error("cross_entropy: label smoothing must be in [0, 1), got " +
                         std::to_string(smoothing));
  if (dlogits && (dlogits->rows() != n || dlogits->cols() != c))
    throw argument_error("cross_entropy: dlogits must be [N, C] like the logits");
  if (n == 0) return 0.0;
  double total = 0.0;
  const double off = smoothing / double(c), on = 1.0 - smoothing + off;
  for (Index i = 0; i < n; ++i) {
    const int y = labels[std::size_t(i)];
    if (y < 0 || y >= c)
      throw argument_error("cross_entropy: label " + std::to_string(y) + " of row " +
                           std::to_string(i) + " is not a class in [0, " + std::to_string(c) + ")");
    // log-softmax in double, from the row's maximum (no overflow).
    const double top = double(logits.row(i).maxCoeff());
    double sum = 0.0;
    for (Index j = 0; j < c; ++j) sum += std::exp(double(logits(i, j)) - top);
    const double log_z = top + std::log(sum);
    double row = 0.0;  // - sum_j target_j log p_j
    for (Index j = 0; j < c; ++j) {
      const double log_p = double(logits(i, j)) - log_z;
      const double target = j == y ? on : off;
      row -= target * log_p;
      if (dlogits) (*dlogits)(i, j) = Scalar((std::exp(log_p) - target) / double(n));
    }
    total += row;
  }
  return total / double(n);
}

/// Mean cross-entropy against soft targets (rows of class probabilities,
/// e.g. from mix_batch): - mean_i sum_j targets(i, j) log softmax(logits)_ij.
///   logits, targets: [N, C]; dlogits: null, or [N, C] for d(loss)/d(logits).
template <class Scalar>
double cross_entropy(const MatrixCRef<Scalar>& logits, const MatrixCRef<float>& targets,
                     MatrixRef<Scalar>* dlogits = nullptr) {
  const Index n = logits.rows(), c = logits.cols();
  if (targets.rows() != n || targets.cols() != c)
    throw argument_error("cross_entropy: targets are " + std::to_string(targets.rows()) + "x" +
                         std::to_string(targets.cols()) + ", the logits " + std::to_string(n) +
                         "x" + std::to_string(c));
  if (dlogits && (dlogits->rows() != n || dlogits->cols() != c))
    throw argument_error("cross_entropy: dlogits must be [N, C] like the logits");
  if (n == 0) return 0.0;
  double total = 0.0;
  for (Index i = 0; i < n; ++i) {
    const double top = double(logits.row(i).maxCoeff());
    double sum = 0.0, mass = 0.0;
    for (Index j = 0; j < c; ++j) sum += std::exp(double(logits(i, j)) - top);
    const double log_z = top + std::log(sum);
    for (Index j = 0; j < c; ++j) {
      const double log_p = double(logits(i, j)) - log_z, t = double(targets(i, j));
      total -= t * log_p;
      mass += t;
    }
    // d/dz_j = mass * p_j - t_j (mass = 1 for a distribution).
    if (dlogits)
      for (Index j = 0; j < c; ++j)
        (*dlogits)(i, j) = Scalar(
            (mass * std::exp(double(logits(i, j)) - log_z) - double(targets(i, j))) / double(n));
  }
  return total / double(n);
}

/// Index of the largest logit of each row (the predicted class).
template <class Scalar>
std::vector<int> argmax_rows(const MatrixCRef<Scalar>& logits) {
  std::vector<int> best(std::size_t(logits.rows()), 0);
  for (Index i = 0; i < logits.rows(); ++i) {
    Index j = 0;
    logits.row(i).maxCoeff(&j);
    best[std::size_t(i)] = int(j);
  }
  return best;
}

}  // namespace vit::train
