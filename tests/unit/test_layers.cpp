// Unit tests of the building blocks: GEMM interface, Linear, LayerNorm,
// activations, softmax, patch embedding, position tables, attention, MLP.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>

#include "vit/vit.hpp"

using vit::Index;
using vit::Matrix;
using vit::RowVector;

namespace {

template <class Scalar>
Matrix<Scalar> random_matrix(Index rows, Index cols, unsigned seed, double scale = 1.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(0.0, scale);
  Matrix<Scalar> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = Scalar(dist(gen));
  return m;
}

// Plain triple loop, the definition of a matrix product.
Matrix<double> naive_product(const Matrix<double>& a, const Matrix<double>& b) {
  Matrix<double> c = Matrix<double>::Zero(a.rows(), b.cols());
  for (Index i = 0; i < a.rows(); ++i)
    for (Index j = 0; j < b.cols(); ++j)
      for (Index k = 0; k < a.cols(); ++k) c(i, j) += a(i, k) * b(k, j);
  return c;
}

}  // namespace

TEST_CASE("gemm_nt and gemm_nn equal the naive product, also on strided views") {
  vit::nn::GemmScratch<double> scratch;
  for (Index m : {1, 7, 197}) {
    const Matrix<double> a = random_matrix<double>(m, 70, 1);
    const Matrix<double> b = random_matrix<double>(45, 70, 2);  // [n, k]
    Matrix<double> c(m, 45);
    vit::nn::gemm_nt<double>(a, b, c, scratch);
    CHECK((c - naive_product(a, b.transpose())).cwiseAbs().maxCoeff() < 1e-12);

    // Accumulate with alpha onto what is there.
    Matrix<double> acc = Matrix<double>::Ones(m, 45);
    vit::nn::gemm_nt<double>(a, b, acc, scratch, 0.5, true);
    CHECK((acc - (Matrix<double>::Ones(m, 45) + 0.5 * naive_product(a, b.transpose())))
              .cwiseAbs()
              .maxCoeff() < 1e-12);

    // gemm_nn on column blocks of a wider matrix (outer stride != cols).
    const Matrix<double> wide = random_matrix<double>(70, 100, 3);
    Matrix<double> out = Matrix<double>::Zero(m, 60);
    vit::nn::gemm_nn<double>(a, wide.middleCols(10, 30), out.middleCols(5, 30), scratch);
    CHECK(
        (out.middleCols(5, 30) - naive_product(a, wide.middleCols(10, 30))).cwiseAbs().maxCoeff() <
        1e-12);
    CHECK(out.leftCols(5).cwiseAbs().maxCoeff() == 0.0);  // untouched outside the view
  }
}

TEST_CASE("gemm scratch stops growing once it has seen the largest shape") {
  vit::nn::GemmScratch<float> scratch;
  const Matrix<float> a = random_matrix<float>(300, 256, 4), b = random_matrix<float>(512, 256, 5);
  Matrix<float> c(300, 512);
  vit::nn::gemm_nt<float>(a, b, c, scratch);
  const std::size_t cap = scratch.capacity();
  CHECK(cap > 0);
  vit::nn::gemm_nt<float>(a.topRows(100), b, c.topRows(100), scratch);
  CHECK(scratch.capacity() == cap);
}

TEST_CASE("Linear computes x W^T + b, and forward_add adds it") {
  vit::nn::Linear<double> fc(2, 3, true);
  fc.weight << 1, 2, 3, 4, 5, 6;
  fc.bias << 10, 20;
  Matrix<double> x(1, 3);
  x << 1, 0, -1;
  Matrix<double> y(1, 2);
  vit::nn::GemmScratch<double> s;
  fc.forward(x, y, s);
  CHECK(y(0, 0) == 1 - 3 + 10);
  CHECK(y(0, 1) == 4 - 6 + 20);
  fc.forward_add(x, y, s);
  CHECK(y(0, 0) == 2 * (1 - 3 + 10));
  vit::nn::Linear<double> nobias(2, 3, false);
  nobias.weight = fc.weight;
  nobias.forward(x, y, s);
  CHECK(y(0, 0) == -2);
}

TEST_CASE("LayerNorm output has mean 0 and variance 1 per row before the affine part") {
  vit::nn::LayerNorm<double> ln(64, 1e-12);
  Matrix<double> x = random_matrix<double>(5, 64, 6, 3.0);
  x.array() += 100.0;  // a large mean must not hurt the variance
  Matrix<double> y(5, 64);
  ln.forward(x, y);
  for (Index r = 0; r < 5; ++r) {
    CHECK(std::abs(y.row(r).mean()) < 1e-12);
    CHECK(std::abs(y.row(r).array().square().mean() - 1.0) < 1e-9);
  }
  // gain and bias are applied per feature
  ln.weight.setConstant(2.0);
  ln.bias.setConstant(-1.0);
  Matrix<double> z(5, 64);
  ln.forward(x, z);
  CHECK(((z.array() - (2.0 * y.array() - 1.0)).abs().maxCoeff()) < 1e-12);
  // in place gives the same
  ln.forward(x, x);
  CHECK((x - z).cwiseAbs().maxCoeff() == 0.0);
}

TEST_CASE("LayerNorm eps matters for tiny-variance rows (timm 1e-6 vs HF 1e-12)") {
  Matrix<float> x(1, 4);
  x << 1e-4f, -1e-4f, 1e-4f, -1e-4f;  // variance 1e-8
  Matrix<float> a(1, 4), b(1, 4);
  vit::nn::LayerNorm<float>(4, 1e-6).forward(x, a);
  vit::nn::LayerNorm<float>(4, 1e-12).forward(x, b);
  CHECK(a(0, 0) == doctest::Approx(1e-4 / std::sqrt(1e-8 + 1e-6)).epsilon(1e-5));
  CHECK(b(0, 0) == doctest::Approx(1.0).epsilon(1e-3));
}

TEST_CASE("softmax rows sum to 1 and stay finite with scores of 1e4") {
  Matrix<float> s(3, 4);
  s << 1e4f, 0, -1e4f, 1e4f,  //
      1, 2, 3, 4,             //
      -1e4f, -1e4f, -1e4f, -1e4f;
  vit::nn::softmax_rows<float>(s);
  CHECK(s.allFinite());
  for (Index r = 0; r < 3; ++r) CHECK(s.row(r).sum() == doctest::Approx(1.0f));
  CHECK(s(0, 0) == doctest::Approx(0.5f));
  CHECK(s(0, 1) < 1e-30f);  // exp(-1e4) underflows
  CHECK(s(1, 3) ==
        doctest::Approx(std::exp(3.0) / (1 + std::exp(1.0) + std::exp(2.0) + std::exp(3.0))));
  CHECK(s(2, 2) == doctest::Approx(0.25f));
}

TEST_CASE("GELU variants at hand-checked points") {
  CHECK(vit::nn::gelu_erf(0.0) == 0.0);
  CHECK(vit::nn::gelu_erf(1.0) == doctest::Approx(0.8413447460685429));  // Phi(1)
  CHECK(vit::nn::gelu_erf(-1.0) == doctest::Approx(-0.15865525393145707));
  CHECK(vit::nn::gelu_tanh(1.0) == doctest::Approx(0.8411919906082768));
  CHECK(vit::nn::quick_gelu(1.0) == doctest::Approx(1.0 / (1.0 + std::exp(-1.702))));
  Matrix<double> x(1, 2);
  x << -2, 3;
  vit::nn::activate<double>(vit::Activation::relu, x);
  CHECK(x(0, 0) == 0.0);
  CHECK(x(0, 1) == 3.0);
}

TEST_CASE("patch embedding as one GEMM equals the direct strided convolution") {
  const int c = 3, s = 12, p = 4, d = 5, n = 2, grid = s / p;
  vit::PatchEmbedding<double> pe(p, c, d);
  pe.proj.weight = random_matrix<double>(d, c * p * p, 7);
  pe.proj.bias = random_matrix<double>(1, d, 8);
  const Matrix<double> images = random_matrix<double>(n, c * s * s, 9);
  Matrix<double> patches(n * grid * grid, c * p * p), tokens(n * grid * grid, d);
  vit::nn::GemmScratch<double> scratch;
  pe.forward(images, s, patches, tokens, scratch);
  // conv: out[o, gy, gx] = b[o] + sum_{ch,ky,kx} W[o, ch, ky, kx] * img[ch, gy*p+ky, gx*p+kx]
  double max_err = 0;
  for (int img = 0; img < n; ++img)
    for (int gy = 0; gy < grid; ++gy)
      for (int gx = 0; gx < grid; ++gx)
        for (int o = 0; o < d; ++o) {
          double acc = pe.proj.bias(o);
          for (int ch = 0; ch < c; ++ch)
            for (int ky = 0; ky < p; ++ky)
              for (int kx = 0; kx < p; ++kx)
                acc += pe.proj.weight(o, (ch * p + ky) * p + kx) *
                       images(img, ch * s * s + (gy * p + ky) * s + gx * p + kx);
          const Index row = (Index(img) * grid + gy) * grid + gx;  // row-major patch order
          max_err = std::max(max_err, std::abs(tokens(row, o) - acc));
        }
  CHECK(max_err < 1e-12);
}

TEST_CASE("antialiased bicubic weights: rows sum to 1, identity at the same size") {
  for (auto [in, out] : {std::pair<Index, Index>{4, 6}, {6, 3}, {14, 24}, {24, 14}, {7, 7}}) {
    const Matrix<double> w = vit::detail::bicubic_antialias_weights(in, out);
    for (Index i = 0; i < out; ++i) CHECK(w.row(i).sum() == doctest::Approx(1.0).epsilon(1e-12));
    if (in == out) CHECK((w - Matrix<double>::Identity(in, in)).cwiseAbs().maxCoeff() < 1e-12);
  }
  // A constant table stays constant; a same-size resample is the identity.
  const Matrix<float> table = Matrix<float>::Constant(16, 3, 0.25f);
  const Matrix<float> up = vit::resample_grid<float>(table, 4, 7);
  CHECK(up.rows() == 49);
  CHECK((up.array() - 0.25f).abs().maxCoeff() < 1e-6f);
  const Matrix<float> r = random_matrix<float>(16, 3, 10);
  CHECK(vit::resample_grid<float>(r, 4, 4) == r);
  CHECK_THROWS_AS(vit::resample_grid<float>(r, 5, 4), vit::argument_error);
}

TEST_CASE("Keys cubic kernel values") {
  CHECK(vit::detail::keys_cubic(0.0) == 1.0);
  CHECK(vit::detail::keys_cubic(1.0) == doctest::Approx(0.0));
  CHECK(vit::detail::keys_cubic(2.0) == 0.0);
  CHECK(vit::detail::keys_cubic(0.5) == doctest::Approx(0.5625));  // (a+2)/8 - (a+3)/4 + 1
  CHECK(vit::detail::keys_cubic(1.5) == doctest::Approx(-0.0625));
}

TEST_CASE("sin-cos table: patch (0,0) is [0..0, 1..1, 0..0, 1..1], x and y halves") {
  const Matrix<double> t = vit::sincos_table<double>(3, 8);
  CHECK(t.rows() == 9);
  for (int i = 0; i < 2; ++i) {
    CHECK(t(0, i) == 0.0);
    CHECK(t(0, 2 + i) == 1.0);
    CHECK(t(0, 4 + i) == 0.0);
    CHECK(t(0, 6 + i) == 1.0);
  }
  // patch at x = 2, y = 1 (row 1*3 + 2): omega_0 = 1, omega_1 = 1/100.
  CHECK(t(5, 0) == doctest::Approx(std::sin(2.0)));
  CHECK(t(5, 1) == doctest::Approx(std::sin(0.02)));
  CHECK(t(5, 4) == doctest::Approx(std::sin(1.0)));
  CHECK(t(5, 7) == doctest::Approx(std::cos(0.01)));
  CHECK_THROWS_AS(vit::sincos_table<double>(3, 6), vit::argument_error);
}

TEST_CASE("attention: heads read the packed qkv as [3, heads, head_dim]") {
  // One image, 4 tokens, D = 4, 2 heads. Build q/k/v by hand and compare with
  // softmax(q k^T / sqrt(2)) v per head.
  const Index t = 4, d = 4;
  vit::MultiHeadSelfAttention<double> attn(d, 2, true);
  attn.qkv.weight = random_matrix<double>(3 * d, d, 11);
  attn.qkv.bias = random_matrix<double>(1, 3 * d, 12);
  attn.proj.weight = Matrix<double>::Identity(d, d);
  attn.proj.bias.setZero();
  const Matrix<double> x = random_matrix<double>(t, d, 13);
  typename vit::MultiHeadSelfAttention<double>::Buffers buf{
      Matrix<double>(t, 3 * d), {Matrix<double>(t, t)}, Matrix<double>(t, d), {}, {}};
  Matrix<double> out = Matrix<double>::Zero(t, d), probs(2 * t, t);
  vit::nn::GemmScratch<double> s;
  attn.forward_add(x, t, buf, out, s, &probs);

  const Matrix<double> qkv = (x * attn.qkv.weight.transpose()).rowwise() + attn.qkv.bias;
  for (Index h = 0; h < 2; ++h) {
    const Matrix<double> q = qkv.middleCols(h * 2, 2), k = qkv.middleCols(d + h * 2, 2),
                         v = qkv.middleCols(2 * d + h * 2, 2);
    Matrix<double> sc = q * k.transpose() / std::sqrt(2.0);
    for (Index r = 0; r < t; ++r) {
      sc.row(r) = (sc.row(r).array() - sc.row(r).maxCoeff()).exp().matrix();
      sc.row(r) /= sc.row(r).sum();
    }
    CHECK((probs.middleRows(h * t, t) - sc).cwiseAbs().maxCoeff() < 1e-12);
    CHECK((out.middleCols(h * 2, 2) - sc * v).cwiseAbs().maxCoeff() < 1e-12);
  }
}

TEST_CASE("float and double layers agree") {
  const Matrix<double> xd = random_matrix<double>(6, 32, 14);
  const Matrix<float> xf = xd.cast<float>();
  vit::nn::LayerNorm<double> lnd(32, 1e-6);
  vit::nn::LayerNorm<float> lnf(32, 1e-6);
  lnd.weight = random_matrix<double>(1, 32, 15);
  lnf.weight = lnd.weight.cast<float>();
  Matrix<double> yd(6, 32);
  Matrix<float> yf(6, 32);
  lnd.forward(xd, yd);
  lnf.forward(xf, yf);
  CHECK((yd - yf.cast<double>()).cwiseAbs().maxCoeff() < 1e-5);

  Matrix<double> sd = xd;
  Matrix<float> sf = xf;
  vit::nn::softmax_rows<double>(sd);
  vit::nn::softmax_rows<float>(sf);
  CHECK((sd - sf.cast<double>()).cwiseAbs().maxCoeff() < 1e-6);
}

// --- numerical hazards: scores at the type's limit, constant rows, huge queries and keys ---

namespace {

// Runs `f` once on the AVX-512 kernels (where the CPU has them) and once on
// the portable ones, restoring the automatic choice afterwards.
template <class F>
void on_every_kernel(F&& f) {
  for (bool portable : {false, true}) {
    if (!portable && !vit::nn::gemm_packed_uses_avx512()) continue;
    CAPTURE(portable);
    vit::nn::gemm_packed_force_portable(portable);
    f();
  }
  vit::nn::gemm_packed_force_portable(false);
}

template <class Scalar>
void check_distribution(const Matrix<Scalar>& p, Index row, Index argmax) {
  CAPTURE(row);
  CHECK(p.row(row).allFinite());
  CHECK(p.row(row).minCoeff() >= Scalar(0));
  CHECK(double(p.row(row).sum()) == doctest::Approx(1.0).epsilon(1e-6));
  Index best = -1;
  p.row(row).maxCoeff(&best);
  if (argmax >= 0) CHECK(best == argmax);
}

}  // namespace

TEST_CASE_TEMPLATE("softmax of scores near the type's limit: finite, sums to 1, right argmax",
                   Scalar, float, double) {
  // Differences of such scores overflow to -inf (e.g. -3e38 - 3e38 in
  // float); exp must turn them into 0, never NaN.
  const Scalar big = std::numeric_limits<Scalar>::max();
  const Scalar huge = Scalar(1e30);
  on_every_kernel([&] {
    for (Index cols : {Index(5), Index(37)}) {  // one lane block, and several with a tail
      for (Scalar scale : {Scalar(1), Scalar(0.125)}) {
        CAPTURE(cols);
        CAPTURE(scale);
        Matrix<Scalar> s(5, cols);
        for (Index j = 0; j < cols; ++j) {
          s(0, j) = j % 3 == 0 ? huge : j % 3 == 1 ? -big : Scalar(0);
          s(1, j) = big;  // all equal at the limit: uniform
          s(2, j) = j % 2 ? -big : Scalar(1);
          s(3, j) = -big;
          s(4, j) = Scalar(-1e30);
        }
        s(0, 3) = big;  // the one winner, among +-max and 1e30
        s(2, 4) = big;
        vit::nn::softmax_rows<Scalar>(s, scale);
        check_distribution(s, 0, 3);
        CHECK(s(0, 3) == Scalar(1));
        check_distribution(s, 1, -1);
        CHECK((s.row(1).array() - Scalar(1) / Scalar(cols)).abs().maxCoeff() < Scalar(1e-6));
        check_distribution(s, 2, 4);
        check_distribution(s, 3, -1);
        CHECK((s.row(3).array() - Scalar(1) / Scalar(cols)).abs().maxCoeff() < Scalar(1e-6));
        check_distribution(s, 4, -1);
      }
    }
  });
}

TEST_CASE_TEMPLATE("LayerNorm of a constant row is exactly the bias, also for huge values", Scalar,
                   float, double) {
  // var = 0 must come out exactly: a mean off by one ulp would make the
  // centred values +-ulp and scale them up to +-1 (or, squared, overflow).
  for (Index n : {Index(1), Index(3), Index(7), Index(64), Index(192), Index(768)}) {
    for (double value : {5.0, 1e20, -3e30, 1e38, 1e300}) {
      if (value > double(std::numeric_limits<Scalar>::max())) continue;
      CAPTURE(n);
      CAPTURE(value);
      vit::nn::LayerNorm<Scalar> ln(n, 1e-6);
      ln.weight = random_matrix<Scalar>(1, n, 20);
      ln.bias = random_matrix<Scalar>(1, n, 21);
      Matrix<Scalar> x = Matrix<Scalar>::Constant(3, n, Scalar(value));
      x.row(1).setConstant(Scalar(-value));
      Matrix<Scalar> y(3, n);
      ln.forward(x, y);
      CHECK(y.allFinite());
      for (Index r = 0; r < 3; ++r) {
        CAPTURE(r);
        CHECK((y.row(r).array() == ln.bias.array()).all());
      }
    }
  }
}

TEST_CASE_TEMPLATE("attention with huge queries and keys: finite, one-hot probabilities", Scalar,
                   float, double) {
  // |q|, |k| ~ 1e17: the scores (~1e35) are finite in float but far apart,
  // so every query attends to exactly one key and gets its value.
  const Index t = 6, d = 8, heads = 2, hd = d / heads;
  vit::MultiHeadSelfAttention<Scalar> attn(d, int(heads), true);
  attn.qkv.weight = random_matrix<Scalar>(3 * d, d, 22);
  attn.qkv.weight.topRows(2 * d) *= Scalar(1e17);
  attn.qkv.bias.setZero();
  attn.proj.weight = Matrix<Scalar>::Identity(d, d);
  attn.proj.bias.setZero();
  const Matrix<Scalar> x = random_matrix<Scalar>(t, d, 23);
  const Matrix<double> qkv =
      x.template cast<double>() * attn.qkv.weight.template cast<double>().transpose();
  on_every_kernel([&] {
    typename vit::MultiHeadSelfAttention<Scalar>::Buffers buf{
        Matrix<Scalar>(t, 3 * d), {Matrix<Scalar>(t, t)}, Matrix<Scalar>(t, d), {}, {}};
    Matrix<Scalar> out = Matrix<Scalar>::Zero(t, d), probs(heads * t, t);
    vit::nn::GemmScratch<Scalar> s;
    attn.forward_add(x, t, buf, out, s, &probs);
    CHECK(out.allFinite());
    CHECK(probs.allFinite());
    for (Index h = 0; h < heads; ++h) {
      const Matrix<double> q = qkv.middleCols(h * hd, hd), k = qkv.middleCols(d + h * hd, hd),
                           v = qkv.middleCols(2 * d + h * hd, hd);
      const Matrix<double> scores = q * k.transpose();
      for (Index r = 0; r < t; ++r) {
        Index best = -1;
        scores.row(r).maxCoeff(&best);
        check_distribution(probs, h * t + r, best);
        CHECK(double(probs(h * t + r, best)) == doctest::Approx(1.0));
        CHECK((out.block(r, h * hd, 1, hd).template cast<double>() - v.row(best))
                  .cwiseAbs()
                  .maxCoeff() < 1e-5);
      }
    }
  });
}
