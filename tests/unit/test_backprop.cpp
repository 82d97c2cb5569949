// Gradient checks: the analytic gradients of every layer and of whole small
// models (double precision) against central finite differences of the loss.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "vit/train/backprop.hpp"
#include "vit/train/loss.hpp"
#include "vit/vit.hpp"

namespace {

using vit::Index;
using M = vit::Matrix<double>;
using Model = vit::VisionTransformer<vit::DynamicConfig<double>>;

// ||analytic - numeric|| / ||numeric|| for one tensor, the numeric gradient
// from central differences of loss() while values[i] moves by +-h.
double fd_error(double* values, Index count, const double* analytic,
                const std::function<double()>& loss, double h = 1e-5) {
  double diff = 0, ref = 0;
  for (Index i = 0; i < count; ++i) {
    const double keep = values[i];
    values[i] = keep + h;
    const double up = loss();
    values[i] = keep - h;
    const double down = loss();
    values[i] = keep;
    const double numeric = (up - down) / (2 * h);
    diff += (analytic[i] - numeric) * (analytic[i] - numeric);
    ref += numeric * numeric;
  }
  return ref == 0 ? std::sqrt(diff) : std::sqrt(diff / ref);
}

M random(Index rows, Index cols, std::mt19937_64& rng, double scale = 1.0) {
  std::normal_distribution<double> normal(0.0, scale);
  M m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = normal(rng);
  return m;
}

// A fixed random linear functional of y: the "loss" <w, y>, so d loss / dy = w.
double dot(const M& w, const vit::MatrixCRef<double>& y) { return (w.array() * y.array()).sum(); }

void randomize(Model& model, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(0.0, 0.3);
  for (const auto& p : model.named_parameters()) {
    std::size_t count = 1;
    for (auto d : p.shape) count *= std::size_t(d);
    const bool norm_weight = p.name.find("norm") != std::string::npos && p.name.size() > 7 &&
                             p.name.substr(p.name.size() - 7) == ".weight";
    for (std::size_t i = 0; i < count; ++i) p.data[i] = (norm_weight ? 1.0 : 0.0) + normal(rng);
  }
  model.update_position_table();
}

vit::Architecture small_architecture() {
  vit::Architecture a;
  a.image_size = 8;
  a.patch_size = 4;
  a.in_chans = 3;
  a.embed_dim = 8;
  a.depth = 2;
  a.num_heads = 2;
  a.mlp_hidden = 12;
  a.num_classes = 3;
  return a;
}

// Checks every parameter of a model built from `a` (and so the whole
// backward pass) on a batch of 2 images, label smoothing 0.1.
void check_model(const vit::Architecture& a, int threads = 1) {
  std::mt19937_64 rng(7);
  Model model(a);
  randomize(model, rng);
  const M images = random(2, 3 * a.image_size * a.image_size, rng);
  const std::vector<int> labels = {1, 2};
  vit::train::Backprop<vit::DynamicConfig<double>> bp(model, threads);
  const M logits = bp.forward(model, images);
  M dlogits(logits.rows(), logits.cols());
  vit::MatrixRef<double> dref(dlogits);
  vit::train::cross_entropy<double>(logits, labels, 0.1, &dref);
  bp.backward(model, dlogits);
  // The training forward gives the inference forward's logits.
  CHECK((logits - model(images)).cwiseAbs().maxCoeff() < 1e-12);

  auto loss = [&] {
    model.update_position_table();
    return vit::train::cross_entropy<double>(model(images), labels, 0.1);
  };
  auto params = model.named_parameters();
  auto grads = bp.grads().named_parameters();
  REQUIRE(params.size() == grads.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    REQUIRE(params[i].name == grads[i].name);
    Index count = 1;
    for (auto d : params[i].shape) count *= Index(d);
    const double err = fd_error(params[i].data, count, grads[i].data, loss);
    INFO(params[i].name << " relative error " << err);
    CHECK(err < 1e-6);
  }
}

}  // namespace

TEST_CASE("linear: dx, dW, db against finite differences") {
  std::mt19937_64 rng(1);
  vit::nn::Linear<double> layer(5, 4, true), grad(5, 4, true);
  layer.weight = random(5, 4, rng);
  layer.bias = random(1, 5, rng);
  grad.weight.setZero();
  grad.bias.setZero();
  M x = random(3, 4, rng);
  const M w = random(3, 5, rng);
  vit::nn::GemmScratch<double> scratch;
  auto loss = [&] {
    M y(3, 5);
    layer.forward(x, y, scratch);
    return dot(w, y);
  };
  M dx(3, 4);
  vit::train::linear_backward<double>(layer, x, w, dx, grad, scratch);
  CHECK(fd_error(x.data(), x.size(), dx.data(), loss) < 1e-8);
  CHECK(fd_error(layer.weight.data(), layer.weight.size(), grad.weight.data(), loss) < 1e-8);
  CHECK(fd_error(layer.bias.data(), layer.bias.size(), grad.bias.data(), loss) < 1e-8);
  // Parameter gradients accumulate.
  const M once = grad.weight;
  vit::train::linear_backward<double>(layer, x, w, dx, grad, scratch);
  CHECK((grad.weight - 2 * once).cwiseAbs().maxCoeff() < 1e-12);
}

TEST_CASE("layer norm: dx, dweight, dbias, stats match the inference layer") {
  std::mt19937_64 rng(2);
  vit::nn::LayerNorm<double> ln(6, 1e-6), grad(6, 1e-6);
  ln.weight = random(1, 6, rng);
  ln.bias = random(1, 6, rng);
  grad.weight.setZero();
  grad.bias.setZero();
  M x = random(4, 6, rng, 3.0);
  x.row(2).setConstant(0.5);  // a constant row: std = sqrt(eps)
  const M w = random(4, 6, rng);
  M y(4, 6), stats(4, 2), y_ref(4, 6);
  ln.forward(x, y, stats);
  ln.forward(x, y_ref);
  CHECK((y - y_ref).cwiseAbs().maxCoeff() == 0.0);  // the stats do not change the output
  for (Eigen::Index r = 0; r < 4; ++r) {
    const double mean = x.row(r).mean();
    const double var = (x.row(r).array() - mean).square().mean();
    CHECK(std::abs(stats(r, 0) - mean) < 1e-14);
    CHECK(std::abs(stats(r, 1) - 1.0 / std::sqrt(var + 1e-6)) < 1e-9);
  }
  auto loss = [&] {
    M out(4, 6);
    ln.forward(x, out);
    return dot(w, out);
  };
  M dx(4, 6);
  vit::train::layer_norm_backward_rows<double>(ln, x, stats, w, dx);
  vit::train::layer_norm_param_grads<double>(x, stats, w, grad);
  // The constant row is ill-conditioned for differences (1/std = 1000):
  // smaller steps.
  CHECK(fd_error(x.data(), x.size(), dx.data(), loss, 1e-8) < 1e-6);
  CHECK(fd_error(ln.weight.data(), 6, grad.weight.data(), loss) < 1e-8);
  CHECK(fd_error(ln.bias.data(), 6, grad.bias.data(), loss) < 1e-8);
}

TEST_CASE("activations: exact GELU, tanh GELU, quick GELU derivatives") {
  std::mt19937_64 rng(3);
  for (vit::Activation act :
       {vit::Activation::gelu_erf, vit::Activation::gelu_tanh, vit::Activation::quick_gelu}) {
    M x = random(3, 7, rng, 2.0);
    const M w = random(3, 7, rng);
    auto loss = [&] {
      M y = x;
      vit::nn::activate<double>(act, y);
      return dot(w, y);
    };
    M dh = w;
    vit::train::activation_backward<double>(act, x, dh);
    CHECK(fd_error(x.data(), x.size(), dh.data(), loss) < 1e-8);
  }
}

TEST_CASE("activation and derivative in one pass (vectorised for float exact GELU)") {
  const Index n = 301;
  for (vit::Activation act :
       {vit::Activation::gelu_erf, vit::Activation::gelu_tanh, vit::Activation::quick_gelu}) {
    vit::Matrix<float> x(1, n), y(1, n);
    for (Index i = 0; i < n; ++i) x(0, i) = -12.0f + 24.0f * float(i) / float(n - 1);
    const vit::Matrix<float> x0 = x;
    vit::train::activation_with_derivative<float>(act, x, y);
    for (Index i = 0; i < n; ++i) {
      const double v = x0(0, i);
      M ref(1, 1);
      ref(0, 0) = v;
      vit::nn::activate<double>(act, ref);
      INFO("x = " << v);
      CHECK(std::abs(y(0, i) - ref(0, 0)) <= 1e-6 * (1 + std::abs(ref(0, 0))));
      CHECK(std::abs(x(0, i) - vit::train::activation_derivative(act, v)) <= 2e-6);
    }
  }
}

TEST_CASE("one attention head: dq, dk, dv") {
  std::mt19937_64 rng(4);
  const Index t = 5, hd = 3;
  const double scale = 1 / std::sqrt(double(hd));
  M q = random(t, hd, rng), k = random(t, hd, rng), v = random(t, hd, rng);
  const M w = random(t, hd, rng);
  vit::nn::GemmScratch<double> scratch;
  auto head = [&](M& p) {
    p.resize(t, t);
    vit::nn::gemm_nt<double>(q, k, p, scratch, scale);
    vit::nn::softmax_rows<double>(p);
    return M(p * v);
  };
  auto loss = [&] {
    M p;
    return dot(w, head(p));
  };
  M p;
  head(p);
  M dq(t, hd), dk(t, hd), dv(t, hd), work(t + 2, t + 2);
  vit::train::attention_head_backward<double>(q, k, v, p, w, scale, dq, dk, dv, work, scratch);
  CHECK(fd_error(q.data(), q.size(), dq.data(), loss) < 1e-8);
  CHECK(fd_error(k.data(), k.size(), dk.data(), loss) < 1e-8);
  CHECK(fd_error(v.data(), v.size(), dv.data(), loss) < 1e-8);
}

TEST_CASE("cross-entropy with label smoothing: value and gradient") {
  std::mt19937_64 rng(5);
  M logits = random(3, 4, rng, 2.0);
  const std::vector<int> labels = {0, 3, 1};
  // Hand formula for row 0 without smoothing: -log softmax(row)[label].
  const double z = logits.row(1).array().exp().sum();
  const M one = logits.row(1);
  CHECK(vit::train::cross_entropy<double>(one, {3}) == doctest::Approx(std::log(z) - one(0, 3)));
  M d(3, 4);
  vit::MatrixRef<double> dref(d);
  vit::train::cross_entropy<double>(logits, labels, 0.2, &dref);
  auto loss = [&] { return vit::train::cross_entropy<double>(logits, labels, 0.2); };
  CHECK(fd_error(logits.data(), logits.size(), d.data(), loss) < 1e-8);
  CHECK_THROWS_AS(vit::train::cross_entropy<double>(logits, {0, 4, 1}), vit::argument_error);
  CHECK_THROWS_AS(vit::train::cross_entropy<double>(logits, {0, 1}), vit::argument_error);
  CHECK_THROWS_AS(vit::train::cross_entropy<double>(logits, labels, 1.0), vit::argument_error);
}

TEST_CASE("whole 2-block model, class token, final norm: every parameter") {
  check_model(small_architecture());
}

TEST_CASE("whole model variants: average pooling + fc_norm, tanh GELU, no qkv bias, 2 threads") {
  vit::Architecture a = small_architecture();
  a.pooling = vit::Pooling::avg;
  a.final_norm = false;
  a.fc_norm = true;
  a.activation = vit::Activation::gelu_tanh;
  a.qkv_bias = false;
  check_model(a, 2);
  a.class_token = false;  // no prefix token at all
  a.pos_embed_prefix = false;
  check_model(a);
  vit::Architecture b = small_architecture();
  b.pos_embed = vit::PosEmbedKind::sincos;
  b.activation = vit::Activation::quick_gelu;
  check_model(b, 3);
}

TEST_CASE("float gradients (packed kernels and Eigen's) agree with double") {
  vit::Architecture a = small_architecture();
  a.image_size = 32;  // 64 patches: products big enough to be split over threads
  a.embed_dim = 32;
  a.mlp_hidden = 64;
  std::mt19937_64 rng(11);
  Model md(a);
  randomize(md, rng);
  vit::VisionTransformer<vit::DynamicConfig<float>> mf(a);
  auto pd = md.named_parameters();
  auto pf = mf.named_parameters();
  for (std::size_t i = 0; i < pd.size(); ++i) {
    Index count = 1;
    for (auto d : pd[i].shape) count *= Index(d);
    for (Index j = 0; j < count; ++j) pf[i].data[j] = float(pd[i].data[j]);
  }
  mf.update_position_table();
  const M images = random(5, 3 * 32 * 32, rng);
  const std::vector<int> labels = {0, 1, 2, 1, 0};
  vit::train::Backprop<vit::DynamicConfig<double>> bd(md);
  M dl(5, 3);
  vit::MatrixRef<double> dlr(dl);
  vit::train::cross_entropy<double>(bd.forward(md, images), labels, 0.1, &dlr);
  bd.backward(md, dl);
  for (bool packed : {true, false}) {
    for (int threads : {1, 2}) {
      INFO("packed " << packed << ", threads " << threads);
      vit::train::Backprop<vit::DynamicConfig<float>> bf(mf, threads);
      bf.use_packed_kernels(packed);
      if (packed) CHECK(bf.packed_kernels() == vit::nn::gemm_packed_uses_avx512());
      vit::Matrix<float> dlf(5, 3);
      vit::MatrixRef<float> dlfr(dlf);
      const vit::Matrix<float> imf = images.cast<float>();
      vit::train::cross_entropy<float>(bf.forward(mf, imf), labels, 0.1, &dlfr);
      bf.backward(mf, dlf);
      auto gd = bd.grads().named_parameters();
      auto gf = bf.grads().named_parameters();
      for (std::size_t i = 0; i < gd.size(); ++i) {
        Index count = 1;
        for (auto d : gd[i].shape) count *= Index(d);
        double diff = 0, ref = 0;
        for (Index j = 0; j < count; ++j) {
          diff += std::pow(double(gf[i].data[j]) - gd[i].data[j], 2);
          ref += gd[i].data[j] * gd[i].data[j];
        }
        INFO(gd[i].name);
        CHECK(std::sqrt(diff / ref) < 1e-4);
      }
    }
  }
}

TEST_CASE("Backprop refuses what it cannot train, and wrong shapes") {
  vit::Architecture a = small_architecture();
  a.pos_embed_grid = 4;  // stored for another size
  CHECK_THROWS_AS(vit::train::Backprop<vit::DynamicConfig<double>>(Model(a)), vit::argument_error);
  vit::Architecture d = small_architecture();
  d.dist_token = true;
  CHECK_THROWS_AS(vit::train::Backprop<vit::DynamicConfig<double>>(Model(d)), vit::argument_error);
  Model m(small_architecture());
  vit::train::Backprop<vit::DynamicConfig<double>> bp(m);
  CHECK_THROWS_AS(bp.forward(m, M::Zero(1, 10)), vit::argument_error);
  CHECK_THROWS_AS(bp.backward(m, M::Zero(1, 3)), vit::argument_error);  // no forward yet
  bp.forward(m, M::Zero(2, 3 * 64));
  CHECK_THROWS_AS(bp.backward(m, M::Zero(2, 4)), vit::argument_error);
}

TEST_CASE("Backprop::forward uses pos_embed as it is now (an optimizer step changes it)") {
  for (const bool class_token : {true, false}) {
    INFO("class token " << class_token);
    vit::Architecture a = small_architecture();
    if (!class_token) {
      a.class_token = false;
      a.pooling = vit::Pooling::avg;
    }
    std::mt19937_64 rng(11);
    Model model(a);
    randomize(model, rng);
    const M images = random(2, 3 * a.image_size * a.image_size, rng);
    vit::train::Backprop<vit::DynamicConfig<double>> bp(model, 1);
    const M before = bp.forward(model, images);
    // What an optimizer does: change the parameter, not the cached table.
    model.pos_embed += random(model.pos_embed.rows(), model.pos_embed.cols(), rng, 0.5);
    const M after = bp.forward(model, images);
    CHECK((after - before).cwiseAbs().maxCoeff() > 1e-3);
    model.update_position_table();
    CHECK((after - model(images)).cwiseAbs().maxCoeff() < 1e-12);
  }
}
