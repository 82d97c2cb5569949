// vit/train/evaluate.hpp - accuracy of a classifier over a data set.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "vit/data/dataset.hpp"
#include "vit/error.hpp"
#include "vit/train/loss.hpp"
#include "vit/vision_transformer.hpp"

namespace vit::train {

/// What evaluate() measured.
struct Evaluation {
  int n = 0;        ///< images evaluated
  int skipped = 0;  ///< images that could not be read
  double top1 = 0;  ///< fraction with the label as the best class
  double top5 = 0;  ///< ... among the best five (all, with fewer classes)
  double loss = 0;  ///< mean cross-entropy (no smoothing)
  int classes = 0;
  std::vector<std::int64_t> confusion;  ///< classes x classes, row = label, column = prediction

  std::int64_t count(int label, int predicted) const {
    return confusion[std::size_t(label) * std::size_t(classes) + std::size_t(predicted)];
  }
};

/// Runs the model over every image of `ds` (through `transform`, e.g. the
/// eval transform, and opt's normalisation) in batches of `batch`, on
/// `threads` threads. progress(done, total) is called after each batch.
/// Throws argument_error when the data set's classes do not fit the head.
template <class Config>
Evaluation evaluate(const VisionTransformer<Config>& model, const data::Dataset& ds,
                    const data::Transform& transform, const data::BatchOptions& opt, int batch = 64,
                    int threads = 1, const std::function<void(int, int)>& progress = {}) {
  using Scalar = typename Config::Scalar;
  const int classes = model.architecture().num_classes;
  if (ds.num_classes() > classes)
    throw argument_error(ds.source() + ": " + std::to_string(ds.num_classes()) +
                         " classes, but the model's head has " + std::to_string(classes));
  if (batch < 1) throw argument_error("evaluate: batch must be >= 1");
  Evaluation e;
  e.classes = classes;
  e.confusion.assign(std::size_t(classes) * std::size_t(classes), 0);
  ForwardOptions fo;
  fo.threads = threads;
  Output<Scalar> out;
  std::mt19937_64 rng(0);  // eval transforms draw nothing
  double loss_sum = 0;
  std::int64_t hit1 = 0, hit5 = 0;
  const int total = ds.size();
  for (int begin = 0; begin < total; begin += batch) {
    std::vector<int> idx(std::size_t(std::min(batch, total - begin)));
    std::iota(idx.begin(), idx.end(), begin);
    const data::Batch b = data::make_batch(ds, idx, transform, rng, opt);
    e.skipped += b.skipped;
    if (b.images.rows() == 0) continue;
    if constexpr (std::is_same_v<Scalar, float>)
      model.forward(b.images, out, fo);
    else
      model.forward(b.images.template cast<Scalar>(), out, fo);
    loss_sum += cross_entropy<Scalar>(out.logits, b.labels) * double(b.labels.size());
    for (Index i = 0; i < out.logits.rows(); ++i) {
      const int y = b.labels[std::size_t(i)];
      const Scalar mine = out.logits(i, y);
      int above = 0;  // classes scored above the label (ties count for the label)
      for (Index j = 0; j < classes; ++j) above += out.logits(i, j) > mine;
      hit1 += above == 0;
      hit5 += above < 5;
      Index best = 0;
      out.logits.row(i).maxCoeff(&best);
      ++e.confusion[std::size_t(y) * std::size_t(classes) + std::size_t(best)];
    }
    e.n += int(out.logits.rows());
    if (progress) progress(std::min(total, begin + batch), total);
  }
  if (e.n > 0) {
    e.top1 = double(hit1) / e.n;
    e.top5 = double(hit5) / e.n;
    e.loss = loss_sum / e.n;
  }
  return e;
}

}  // namespace vit::train
