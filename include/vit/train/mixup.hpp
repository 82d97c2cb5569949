// vit/train/mixup.hpp - Mixup and CutMix of a training batch (timm's Mixup,
// mode "batch": one mixing factor for the whole batch, each image mixed with
// the image at the mirrored position of the batch).
//
//   vit::train::MixOptions mo;          // mixup_alpha 0.8, cutmix_alpha 1.0
//   vit::Matrix<float> targets = vit::train::mix_batch(b.images, 32, b.labels, 10, mo, rng);
//   double loss = vit::train::cross_entropy<float>(logits, targets, &dlogits);
#pragma once

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "vit/error.hpp"
#include "vit/random.hpp"
#include "vit/tensor.hpp"

namespace vit::train {

struct MixOptions {
  double mixup_alpha = 0.8;   // Beta(a, a) for Mixup; 0 turns Mixup off
  double cutmix_alpha = 1.0;  // Beta(a, a) for CutMix; 0 turns CutMix off
  double prob = 1.0;          // probability that a batch is mixed at all
  double switch_prob = 0.5;   // with both on: probability of CutMix for a batch
  double smoothing = 0.1;     // label smoothing of the one-hot targets
  bool enabled() const { return prob > 0.0 && (mixup_alpha > 0.0 || cutmix_alpha > 0.0); }
  void validate() const {
    auto bad = [](double v, double lo, double hi) { return !(v >= lo && v <= hi); };
    if (bad(mixup_alpha, 0.0, 1e6) || bad(cutmix_alpha, 0.0, 1e6))
      throw argument_error("MixOptions: alphas must be in [0, 1e6], got mixup " +
                           std::to_string(mixup_alpha) + ", cutmix " +
                           std::to_string(cutmix_alpha));
    if (bad(prob, 0.0, 1.0) || bad(switch_prob, 0.0, 1.0))
      throw argument_error("MixOptions: prob and switch_prob must be in [0, 1]");
    if (!(smoothing >= 0.0 && smoothing < 1.0))
      throw argument_error("MixOptions: smoothing must be in [0, 1), got " +
                           std::to_string(smoothing));
  }
};

/// Smoothed one-hot targets: row i is smoothing / C everywhere plus
/// 1 - smoothing on labels[i].  [N, C]
inline Matrix<float> one_hot(const std::vector<int>& labels, int classes, double smoothing) {
  if (classes < 1) throw argument_error("one_hot: classes must be at least 1");
  const double off = smoothing / double(classes), on = 1.0 - smoothing + off;
  Matrix<float> t = Matrix<float>::Constant(Index(labels.size()), classes, float(off));
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= classes)
      throw argument_error("one_hot: label " + std::to_string(labels[i]) + " of row " +
                           std::to_string(i) + " is not a class in [0, " + std::to_string(classes) +
                           ")");
    t(Index(i), labels[i]) = float(on);
  }
  return t;
}

/// Mixes `images` in place and returns the mixed soft targets [N, C].
///   images: [N, 3 * S * S], rows of CHW floats (make_batch's layout).
/// With probability 1 - prob (one draw) nothing is mixed and the targets are
/// one_hot(labels). Otherwise CutMix is chosen with probability switch_prob when
/// both are on (one draw), the factor lam ~ Beta(alpha, alpha), and with
/// j = N - 1 - i:
/// - Mixup: x_i = lam x_i + (1 - lam) x_j;
/// - CutMix: a box of side S * sqrt(1 - lam) centred at a uniform pixel
///   (cy, then cx, each random_below(S)), clipped to the image, is copied
///   from x_j into x_i, and lam becomes 1 - box area / S^2.
/// Targets: lam one_hot(y_i) + (1 - lam) one_hot(y_j).
inline Matrix<float> mix_batch(MatrixRef<float> images, int image_size,
                               const std::vector<int>& labels, int classes, const MixOptions& opt,
                               std::mt19937_64& rng) {
  opt.validate();
  const Index n = images.rows();
  if (Index(labels.size()) != n)
    throw argument_error("mix_batch: " + std::to_string(labels.size()) + " labels for " +
                         std::to_string(n) + " images");
  if (image_size < 1 || images.cols() != Index(3) * image_size * image_size)
    throw argument_error("mix_batch: rows of " + std::to_string(images.cols()) +
                         " values are not 3 x " + std::to_string(image_size) + " x " +
                         std::to_string(image_size) + " images");
  Matrix<float> targets = one_hot(labels, classes, opt.smoothing);
  if (!opt.enabled() || n == 0) return targets;
  if (!(random_unit(rng) < opt.prob)) return targets;
  const bool cutmix =
      opt.cutmix_alpha > 0.0 && (opt.mixup_alpha <= 0.0 || random_unit(rng) < opt.switch_prob);
  const double alpha = cutmix ? opt.cutmix_alpha : opt.mixup_alpha;
  double lam = random_beta(rng, alpha, alpha);
  const Matrix<float> mirrored = images.colwise().reverse();  // row i = x_{N-1-i}
  if (cutmix) {
    const int s = image_size;
    const double cut = std::sqrt(1.0 - lam);
    const int half_h = int(double(s) * cut) / 2, half_w = int(double(s) * cut) / 2;
    const int cy = int(random_below(rng, std::uint64_t(s)));
    const int cx = int(random_below(rng, std::uint64_t(s)));
    const int y0 = std::clamp(cy - half_h, 0, s), y1 = std::clamp(cy + half_h, 0, s);
    const int x0 = std::clamp(cx - half_w, 0, s), x1 = std::clamp(cx + half_w, 0, s);
    for (Index i = 0; i < n; ++i)
      for (int c = 0; c < 3; ++c)
        for (int y = y0; y < y1; ++y) {
          const Index at = (Index(c) * s + y) * s + x0;
          images.row(i).segment(at, x1 - x0) = mirrored.row(i).segment(at, x1 - x0);
        }
    lam = 1.0 - double(y1 - y0) * double(x1 - x0) / (double(s) * double(s));
  } else {
    images = float(lam) * images + float(1.0 - lam) * mirrored;
  }
  const Matrix<float> mirrored_targets = targets.colwise().reverse();
  targets = float(lam) * targets + float(1.0 - lam) * mirrored_targets;
  return targets;
}

}  // namespace vit::train
