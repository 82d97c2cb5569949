// Mixup / CutMix (vit/train/mixup.hpp), the soft-target cross-entropy
// (vit/train/loss.hpp) and the gamma / beta draws they use (vit/random.hpp).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "vit/error.hpp"
#include "vit/random.hpp"
#include "vit/tensor.hpp"
#include "vit/train/loss.hpp"
#include "vit/train/mixup.hpp"

namespace {

// n images of 3 x s x s, every value distinct so a pixel's origin is known.
vit::Matrix<float> distinct_images(int n, int s) {
  vit::Matrix<float> m(n, 3 * s * s);
  for (vit::Index i = 0; i < m.rows(); ++i)
    for (vit::Index j = 0; j < m.cols(); ++j) m(i, j) = float(i * 100000 + j);
  return m;
}

}  // namespace

TEST_CASE("random: gamma and beta draws have the right means and stay in range") {
  std::mt19937_64 rng(3);
  for (const double shape : {0.3, 1.0, 2.5}) {
    double sum = 0;
    const int n = 40000;
    for (int i = 0; i < n; ++i) {
      const double g = vit::random_gamma(rng, shape);
      REQUIRE(g >= 0.0);
      sum += g;
    }
    // Mean = shape, std of the sample mean = sqrt(shape / n).
    CHECK(std::abs(sum / n - shape) < 5 * std::sqrt(shape / n));
  }
  double sum = 0, sum_sq = 0;
  const int n = 40000;
  for (int i = 0; i < n; ++i) {
    const double b = vit::random_beta(rng, 0.8, 0.8);
    REQUIRE(b >= 0.0);
    REQUIRE(b <= 1.0);
    sum += b;
    sum_sq += b * b;
  }
  // Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)).
  CHECK(std::abs(sum / n - 0.5) < 0.01);
  CHECK(std::abs(sum_sq / n - 0.25 - 1.0 / (4 * 2.6)) < 0.01);
  CHECK_THROWS_AS(vit::random_gamma(rng, 0.0), vit::argument_error);
  CHECK_THROWS_AS(vit::random_gamma(rng, -1.0), vit::argument_error);
}

TEST_CASE("mixup: one_hot, and no mixing when off or with probability 0") {
  const vit::Matrix<float> t = vit::train::one_hot({2, 0}, 4, 0.2);
  CHECK(t(0, 2) == doctest::Approx(0.85));
  CHECK(t(0, 0) == doctest::Approx(0.05));
  CHECK(t.row(1).sum() == doctest::Approx(1.0));
  CHECK_THROWS_AS(vit::train::one_hot({4}, 4, 0.0), vit::argument_error);

  vit::Matrix<float> im = distinct_images(4, 3);
  const vit::Matrix<float> before = im;
  std::mt19937_64 rng(1);
  vit::train::MixOptions off;
  off.mixup_alpha = off.cutmix_alpha = 0;
  vit::Matrix<float> tg = vit::train::mix_batch(im, 3, {0, 1, 2, 3}, 5, off, rng);
  CHECK(im == before);
  CHECK(tg == vit::train::one_hot({0, 1, 2, 3}, 5, off.smoothing));
  vit::train::MixOptions never;
  never.prob = 0;
  tg = vit::train::mix_batch(im, 3, {0, 1, 2, 3}, 5, never, rng);
  CHECK(im == before);

  vit::train::MixOptions bad;
  bad.switch_prob = 2;
  CHECK_THROWS_AS(vit::train::mix_batch(im, 3, {0, 1, 2, 3}, 5, bad, rng), vit::argument_error);
  CHECK_THROWS_AS(vit::train::mix_batch(im, 4, {0, 1, 2, 3}, 5, {}, rng), vit::argument_error);
  CHECK_THROWS_AS(vit::train::mix_batch(im, 3, {0, 1, 2}, 5, {}, rng), vit::argument_error);
}

TEST_CASE("mixup: images and targets are mixed with the mirrored batch by the same factor") {
  const int n = 5, s = 4;
  const std::vector<int> labels = {0, 1, 2, 3, 4};
  vit::train::MixOptions mo;
  mo.cutmix_alpha = 0;
  mo.smoothing = 0;
  for (std::uint64_t seed = 0; seed < 10; ++seed) {
    vit::Matrix<float> im = distinct_images(n, s);
    const vit::Matrix<float> x = im;
    std::mt19937_64 rng(seed), again(seed);
    const vit::Matrix<float> t = vit::train::mix_batch(im, s, labels, n, mo, rng);
    vit::Matrix<float> im2 = x;
    CHECK(vit::train::mix_batch(im2, s, labels, n, mo, again) == t);  // reproducible
    CHECK(im2 == im);
    const double lam = t(0, 0);  // row 0 (label 0) mixed with row 4 (label 4)
    CHECK(lam > 0.0);
    CHECK(lam < 1.0);
    for (int i = 0; i < n; ++i) {
      const int j = n - 1 - i;
      CHECK(t.row(i).sum() == doctest::Approx(1.0));
      if (i != j) {
        CHECK(t(i, labels[std::size_t(i)]) == doctest::Approx(lam));
        CHECK(t(i, labels[std::size_t(j)]) == doctest::Approx(1 - lam));
      }
      for (vit::Index c = 0; c < im.cols(); ++c)
        REQUIRE(im(i, c) == doctest::Approx(lam * x(i, c) + (1 - lam) * x(j, c)).epsilon(1e-6));
    }
  }
}

TEST_CASE("cutmix: one box copied from the mirrored image, targets weighted by its area") {
  const int n = 4, s = 8;
  const std::vector<int> labels = {0, 1, 2, 3};
  vit::train::MixOptions mo;
  mo.mixup_alpha = 0;
  mo.smoothing = 0.1;
  int boxes = 0;
  for (std::uint64_t seed = 0; seed < 20; ++seed) {
    vit::Matrix<float> im = distinct_images(n, s);
    const vit::Matrix<float> x = im;
    std::mt19937_64 rng(seed);
    const vit::Matrix<float> t = vit::train::mix_batch(im, s, labels, n, mo, rng);
    // Every value is either the image's own or the mirrored image's at the same place;
    // the copied pixels are the same box in each channel and each image.
    int copied = 0;
    for (int i = 0; i < n; ++i) {
      const int j = n - 1 - i;
      int copied_i = 0;
      for (vit::Index c = 0; c < im.cols(); ++c) {
        const bool own = im(i, c) == x(i, c), other = im(i, c) == x(j, c);
        REQUIRE((own || other));
        copied_i += !own;
        if (i == 0 && !own) {
          // Same place in the other two channels and in the other images.
          const vit::Index p = c % (s * s);
          for (int ch = 0; ch < 3; ++ch) CHECK(im(0, ch * s * s + p) == x(3, ch * s * s + p));
          CHECK(im(1, c) == x(2, c));
        }
      }
      if (i == 0) copied = copied_i;
      CHECK(copied_i == copied);
    }
    if (copied > 0) ++boxes;
    const double lam = 1.0 - double(copied / 3) / double(s * s);
    const double off = 0.1 / 4, on = 0.9 + off;
    CHECK(t(0, 0) == doctest::Approx(lam * on + (1 - lam) * off));
    CHECK(t(0, 3) == doctest::Approx(lam * off + (1 - lam) * on));
    CHECK(t.row(0).sum() == doctest::Approx(1.0));
  }
  CHECK(boxes > 10);
}

TEST_CASE("loss: soft-target cross-entropy matches the label form and finite differences") {
  std::mt19937_64 rng(9);
  vit::Matrix<double> logits(3, 5);
  for (vit::Index i = 0; i < logits.size(); ++i) logits.data()[i] = 3 * vit::random_normal(rng);
  const std::vector<int> labels = {4, 0, 2};
  const vit::Matrix<float> hard = vit::train::one_hot(labels, 5, 0.1);
  vit::Matrix<double> d1(3, 5), d2(3, 5);
  vit::MatrixRef<double> r1 = d1, r2 = d2;
  const double a = vit::train::cross_entropy<double>(logits, labels, 0.1, &r1);
  const double b = vit::train::cross_entropy<double>(logits, hard, &r2);
  CHECK(b == doctest::Approx(a).epsilon(1e-7));
  CHECK((d1 - d2).cwiseAbs().maxCoeff() < 1e-7);

  // A genuinely soft target: central differences of the loss.
  vit::Matrix<float> soft(3, 5);
  for (vit::Index i = 0; i < soft.size(); ++i) soft.data()[i] = float(vit::random_unit(rng));
  for (vit::Index i = 0; i < 3; ++i) soft.row(i) /= soft.row(i).sum();
  vit::Matrix<double> g(3, 5);
  vit::MatrixRef<double> gr = g;
  vit::train::cross_entropy<double>(logits, soft, &gr);
  const double h = 1e-6;
  for (vit::Index k = 0; k < logits.size(); ++k) {
    vit::Matrix<double> up = logits, down = logits;
    up.data()[k] += h;
    down.data()[k] -= h;
    const double fd = (vit::train::cross_entropy<double>(up, soft) -
                       vit::train::cross_entropy<double>(down, soft)) /
                      (2 * h);
    CHECK(g.data()[k] == doctest::Approx(fd).epsilon(1e-6));
  }
  CHECK_THROWS_AS(vit::train::cross_entropy<double>(logits, vit::Matrix<float>(2, 5)),
                  vit::argument_error);
}
