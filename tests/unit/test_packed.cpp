// Unit tests of the packed-weight path of the layers: a packed Linear gives
// the plain layer's results (every epilogue, odd shapes, several threads bit
// for bit), packing keeps one copy of the weight and round-trips exactly, a
// packed model matches the plain model, attention's packed products and the
// vectorised softmax match a double reference.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "vit/vit.hpp"

using vit::Index;
using vit::Matrix;

namespace {

Index numel(const vit::ParameterRef<float>& p) {
  Index n = 1;
  for (auto d : p.shape) n *= Index(d);
  return n;
}

template <class S>
Matrix<S> random_matrix(Index rows, Index cols, unsigned seed, double scale = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, scale);
  Matrix<S> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = S(normal(rng));
  return m;
}

double gelu(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

// The layer's output in double, from the same float weights.
Matrix<double> reference(const Matrix<float>& x, const Matrix<float>& w, const Matrix<float>& b,
                         const Matrix<float>& y0, vit::nn::Epilogue ep) {
  Matrix<double> p = x.cast<double>() * w.cast<double>().transpose();
  if (b.size()) p.rowwise() += b.cast<double>().row(0);
  if (ep == vit::nn::Epilogue::accumulate) p += y0.cast<double>();
  if (ep == vit::nn::Epilogue::gelu) p = p.unaryExpr([](double v) { return gelu(v); });
  return p;
}

// max |a - b| relative to the scale of the products (sum over k of |x||w|).
double scaled_error(const Matrix<float>& got, const Matrix<double>& want, const Matrix<float>& x,
                    const Matrix<float>& w) {
  const Matrix<double> mag = x.cast<double>().cwiseAbs() * w.cast<double>().cwiseAbs().transpose();
  double worst = 0;
  for (Index i = 0; i < got.rows(); ++i)
    for (Index j = 0; j < got.cols(); ++j)
      worst = std::max(worst, std::abs(double(got(i, j)) - want(i, j)) / (mag(i, j) + 1.0));
  return worst;
}

}  // namespace

TEST_CASE("a packed Linear computes what the plain one does, every epilogue, 1-3 threads") {
  struct Shape {
    Index m, n, k;
  };
  using vit::nn::Epilogue;
  unsigned seed = 1;
  for (Shape s : {Shape{1, 1000, 192}, Shape{197, 768, 768}, Shape{5, 33, 20}, Shape{600, 300, 1},
                  Shape{250, 70, 800}, Shape{197, 2304, 96}}) {
    for (bool bias : {true, false}) {
      for (Epilogue ep : {Epilogue::store, Epilogue::accumulate, Epilogue::gelu}) {
        CAPTURE(s.m);
        CAPTURE(s.n);
        CAPTURE(s.k);
        CAPTURE(bias);
        CAPTURE(int(ep));
        vit::nn::Linear<float> plain(s.n, s.k, bias);
        plain.weight = random_matrix<float>(s.n, s.k, ++seed, 0.05);
        if (bias) plain.bias = random_matrix<float>(1, s.n, ++seed);
        const Matrix<float> w = plain.weight,
                            b = bias ? Matrix<float>(plain.bias) : Matrix<float>();
        vit::nn::Linear<float> packed = plain;
        packed.pack();
        CHECK(packed.packed());
        CHECK(packed.weight.size() == 0);  // one copy of the weight
        CHECK(packed.in_features() == s.k);
        CHECK(packed.out_features() == s.n);

        const Matrix<float> x = random_matrix<float>(s.m, s.k, ++seed);
        const Matrix<float> y0 = random_matrix<float>(s.m, s.n, ++seed);
        const Matrix<double> want = reference(x, w, b, y0, ep);
        Matrix<float> yp = y0, yq = y0;
        vit::nn::GemmScratch<float> one;
        plain.forward(x, yp, one, ep);
        packed.forward(x, yq, one, ep);
        CHECK(scaled_error(yp, want, x, w) < 1e-6);
        CHECK(scaled_error(yq, want, x, w) < 1e-6);
        for (int threads = 2; threads <= 3; ++threads) {
          vit::ThreadPool pool(threads);
          std::vector<vit::nn::GemmScratch<float>> scratch(static_cast<std::size_t>(threads));
          Matrix<float> yt = y0;
          packed.forward(x, yt, vit::nn::GemmContext<float>(&pool, scratch.data()), ep);
          CHECK(yt == yq);
        }
      }
    }
  }
}

TEST_CASE("pack / unpack round-trips the weight exactly, double layers refuse to pack") {
  vit::nn::Linear<float> l(45, 19, true);
  l.weight = random_matrix<float>(45, 19, 3);
  const Matrix<float> w = l.weight;
  l.pack();
  CHECK(l.precision() == vit::Precision::fp32);
  l.pack();  // packing twice is harmless
  l.unpack();
  CHECK_FALSE(l.packed());
  CHECK(l.weight == w);
  vit::nn::Linear<double> d(4, 4, false);
  CHECK_THROWS_AS(d.pack(), vit::argument_error);
  // Shapes are checked on both paths.
  Matrix<float> x(3, 18), y(3, 45);
  vit::nn::GemmScratch<float> s;
  CHECK_THROWS_AS(l.forward(x, y, s), vit::argument_error);
  l.pack();
  CHECK_THROWS_AS(l.forward(x, y, s), vit::argument_error);
}

TEST_CASE("bf16 and int8 layers: rounded weights, forward close to fp32, threads bit-identical") {
  using vit::Precision;
  const Index m = 150, n = 300, k = 260;
  vit::nn::Linear<float> plain(n, k, true);
  plain.weight = random_matrix<float>(n, k, 5, 0.05);
  plain.bias = random_matrix<float>(1, n, 6);
  const Matrix<float> x = random_matrix<float>(m, k, 7);
  Matrix<float> want(m, n);
  vit::nn::GemmScratch<float> one;
  plain.forward(x, want, one, vit::nn::Epilogue::gelu);
  const float scale = want.cwiseAbs().maxCoeff();
  // bf16 keeps 8 significant bits (relative rounding 2^-9 per operand); int8
  // 255 levels per weight row and per activation row.
  for (auto [p, tol, wtol] :
       {std::tuple{Precision::bf16, 0.01f, 0.004f}, std::tuple{Precision::int8, 0.02f, 0.005f}}) {
    const std::string name = vit::precision_name(p);
    CAPTURE(name);
    vit::nn::Linear<float> l = plain;
    l.pack(p);
    CHECK(l.precision() == p);
    CHECK(l.weight_bytes() < plain.weight_bytes() / (p == Precision::bf16 ? 1.8 : 3.4));
    Matrix<float> y(m, n);
    l.forward(x, y, one, vit::nn::Epilogue::gelu);
    CHECK((y - want).cwiseAbs().maxCoeff() <= tol * scale);
    CHECK((y - want).cwiseAbs().maxCoeff() > 0.0f);  // it did run at lower precision
    vit::ThreadPool pool(2);
    std::vector<vit::nn::GemmScratch<float>> scratch(2);
    Matrix<float> y2(m, n);
    l.forward(x, y2, vit::nn::GemmContext<float>(&pool, scratch.data()), vit::nn::Epilogue::gelu);
    CHECK(y2 == y);
    l.unpack();
    CHECK_FALSE(l.packed());
    const float wmax = plain.weight.cwiseAbs().maxCoeff();
    CHECK((l.weight - plain.weight).cwiseAbs().maxCoeff() <= wtol * wmax);
  }
}

TEST_CASE("a packed model gives the plain model's outputs, named_parameters unpacks") {
  vit::Architecture a = vit::preset_architecture("deit_tiny_distilled_patch16_224");
  a.depth = 2;
  a.image_size = 64;
  vit::VisionTransformer<vit::DynamicConfig<float>> model(a);
  unsigned seed = 100;
  for (auto& p : model.named_parameters()) {
    const Matrix<float> v = random_matrix<float>(1, numel(p), ++seed, 0.05);
    std::copy(v.data(), v.data() + v.size(), p.data);
  }
  model.update_position_table();
  const Matrix<float> images = random_matrix<float>(3, 3 * 64 * 64, 7);
  vit::ForwardOptions opt;
  opt.attention = opt.hidden_states = true;
  vit::Output<float> plain, packed, packed2;
  model.forward(images, plain, opt);
  std::vector<Matrix<float>> before;
  for (auto& p : model.named_parameters())
    before.push_back(Eigen::Map<Matrix<float>>(p.data, 1, numel(p)));

  model.pack_weights();
  CHECK(model.weights_packed());
  CHECK(model.blocks[1].mlp.fc2.packed());
  CHECK(model.head_dist.packed());
  model.forward(images, packed, opt);
  const float scale = plain.logits.cwiseAbs().maxCoeff();
  CHECK((packed.logits - plain.logits).cwiseAbs().maxCoeff() <= 1e-5f * scale);
  CHECK((packed.tokens - plain.tokens).cwiseAbs().maxCoeff() <= 1e-4f);
  for (std::size_t b = 0; b < plain.attention.size(); ++b)
    CHECK((packed.attention[b] - plain.attention[b]).cwiseAbs().maxCoeff() <= 1e-5f);
  opt.threads = 2;
  model.forward(images, packed2, opt);
  CHECK(packed2.logits == packed.logits);
  CHECK(packed2.attention.back() == packed.attention.back());

  // Access to the parameters brings the plain tensors back, unchanged.
  std::size_t i = 0;
  for (auto& p : model.named_parameters())
    CHECK(Eigen::Map<Matrix<float>>(p.data, 1, numel(p)) == before[i++]);
  CHECK_FALSE(model.weights_packed());
  vit::VisionTransformer<vit::DynamicConfig<double>> d(a);
  CHECK_THROWS_AS(d.pack_weights(), vit::argument_error);
}

TEST_CASE("softmax: huge and -inf scores, a scale, vectorised and portable paths agree") {
  Matrix<float> x = random_matrix<float>(5, 37, 11, 3.0);
  x(0, 3) = 1e4f;  // dominates its row
  x(1, 0) = -std::numeric_limits<float>::infinity();
  x(2, 5) = -1e30f;
  for (bool portable : {false, true}) {
    CAPTURE(portable);
    vit::nn::gemm_packed_force_portable(portable);
    Matrix<float> y = x;
    vit::nn::softmax_rows<float>(y, 0.125f);
    vit::nn::gemm_packed_force_portable(false);
    for (Index r = 0; r < x.rows(); ++r) {
      const Matrix<double> row = x.row(r).cast<double>();
      const double mx = row.maxCoeff();
      Matrix<double> e = ((row.array() - mx) * 0.125).exp().matrix();
      e /= e.sum();
      CHECK(y.row(r).allFinite());
      CHECK((y.row(r).cast<double>() - e).cwiseAbs().maxCoeff() < 1e-6);
      CHECK(std::abs(y.row(r).cast<double>().sum() - 1.0) < 1e-5);
    }
    CHECK(y(0, 3) == doctest::Approx(1.0f));
    CHECK(y(1, 0) == 0.0f);
  }
}
