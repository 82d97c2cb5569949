// One training step of a tiny ViT against PyTorch: tests/data/train/step.safetensors, made by
// tests/reference/train_reference.py (step). The training forward pass (logits), the
// label-smoothed cross-entropy, every parameter's gradient, gradient clipping and one AdamW
// step with timm's parameter groups, on the plain and (where the CPU has them) the packed
// kernels, with one and two threads.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "vit/config.hpp"
#include "vit/io/safetensors.hpp"
#include "vit/nn/gemm_avx512.hpp"
#include "vit/tensor.hpp"
#include "vit/train/backprop.hpp"
#include "vit/train/loss.hpp"
#include "vit/train/optimizer.hpp"
#include "vit/vision_transformer.hpp"

#ifndef VIT_TEST_DATA_DIR
#error "VIT_TEST_DATA_DIR must be defined as the absolute path of tests/data"
#endif

namespace {

using Config = vit::DynamicConfig<float>;
using Model = vit::VisionTransformer<Config>;
using Backprop = vit::train::Backprop<Config>;
using vit::Index;
using vit::io::SafeTensors;

const std::string kFixture = std::string(VIT_TEST_DATA_DIR) + "/train/step.safetensors";

// Per-tensor tolerance: ||got - ref|| / ||ref|| (relative L2 error).
constexpr double kTol = 1e-5;

const SafeTensors& fixture() {
  static const SafeTensors f = SafeTensors::open(kFixture);
  return f;
}

const std::string& meta(const std::string& key) {
  const auto& m = fixture().metadata();
  const auto it = m.find(key);
  REQUIRE_MESSAGE(it != m.end(), kFixture << ": no metadata '" << key << "'");
  return it->second;
}
int meta_int(const std::string& key) { return std::stoi(meta(key)); }
double meta_double(const std::string& key) { return std::stod(meta(key)); }

// The architecture written in the fixture's metadata (class token, learned table, final
// norm, class-token pooling, qkv bias, exact GELU).
vit::Architecture fixture_architecture() {
  vit::Architecture a;
  a.image_size = meta_int("image_size");
  a.patch_size = meta_int("patch_size");
  a.in_chans = meta_int("in_chans");
  a.embed_dim = meta_int("embed_dim");
  a.depth = meta_int("depth");
  a.num_heads = meta_int("num_heads");
  a.mlp_hidden = meta_int("mlp_hidden");
  a.num_classes = meta_int("num_classes");
  a.layer_norm_eps = meta_double("layer_norm_eps");
  REQUIRE(meta("qkv_bias") == "true");
  REQUIRE(meta("activation") == "gelu_erf");
  REQUIRE(meta("pooling") == "cls");
  REQUIRE(meta("class_token") == "true");
  REQUIRE(meta("final_norm") == "true");
  a.qkv_bias = true;
  a.activation = vit::Activation::gelu_erf;
  a.class_token = true;
  a.pooling = vit::Pooling::cls;
  a.final_norm = true;
  a.fc_norm = false;
  return a;
}

std::size_t numel(const std::vector<std::int64_t>& shape) {
  std::size_t n = 1;
  for (std::int64_t d : shape) n *= static_cast<std::size_t>(d);
  return n;
}

// Copies fixture tensors prefix + name into the parameters of the same name and shape
// (for prefix "param.": every model parameter found, every fixture parameter used).
void load_tensors(const std::vector<vit::ParameterRef<float>>& params, const std::string& prefix) {
  std::set<std::string> unused;
  for (const vit::io::TensorInfo& t : fixture().tensors())
    if (t.name.rfind(prefix, 0) == 0) unused.insert(t.name);
  for (const vit::ParameterRef<float>& p : params) {
    const std::string name = prefix + p.name;
    INFO("tensor " << name);
    REQUIRE(fixture().contains(name));
    CHECK(fixture().info(name).shape == p.shape);
    fixture().read(name, p.data, numel(p.shape));
    unused.erase(name);
  }
  for (const std::string& name : unused) FAIL_CHECK("fixture tensor " << name << " not used");
}

Model fixture_model() {
  Model model(fixture_architecture());
  load_tensors(model.named_parameters(), "param.");
  model.update_position_table();
  return model;
}

vit::Matrix<float> fixture_matrix(const std::string& name, Index rows, Index cols) {
  const std::vector<float> v = fixture().read<float>(name);
  REQUIRE(v.size() == static_cast<std::size_t>(rows * cols));
  vit::Matrix<float> m(rows, cols);
  std::copy(v.begin(), v.end(), m.data());
  return m;
}

std::vector<int> fixture_labels() {
  std::vector<int> labels;
  for (float v : fixture().read<float>("labels")) {
    REQUIRE(v == std::round(v));
    labels.push_back(static_cast<int>(v));
  }
  return labels;
}

// ||got - ref|| / ||ref||, in double.
double rel_l2(const float* got, const std::vector<float>& ref) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double r = ref[i], d = double(got[i]) - r;
    diff += d * d;
    norm += r * r;
  }
  return norm == 0 ? std::sqrt(diff) : std::sqrt(diff / norm);
}

struct Worst {
  double error = 0;
  std::string where;
  void update(double e, const std::string& name) {
    if (!(e <= error)) {
      error = e;
      where = name;
    }
  }
};

// Compares every parameter with fixture tensor prefix + name; returns the worst tensor.
Worst compare(const std::vector<vit::ParameterRef<float>>& got, const std::string& prefix) {
  Worst worst;
  for (const vit::ParameterRef<float>& p : got) {
    const std::string name = prefix + p.name;
    const std::vector<float> ref = fixture().read<float>(name);
    REQUIRE(ref.size() == numel(p.shape));
    const double e = rel_l2(p.data, ref);
    INFO(name << ": relative L2 error " << e);
    CHECK(e < kTol);
    worst.update(e, name);
  }
  return worst;
}

// Runs forward, loss and backward with the given kernels and threads, checking logits, loss
// and gradients against the fixture. Leaves the gradients in bp.
void forward_backward(const Model& model, Backprop& bp, Worst& worst_grad) {
  const vit::Architecture& a = model.architecture();
  const std::vector<int> labels = fixture_labels();
  const Index n = static_cast<Index>(labels.size());
  const vit::Matrix<float> images =
      fixture_matrix("images", n, Index(a.in_chans) * a.image_size * a.image_size);

  bp.zero_grad();
  const vit::Matrix<float> logits = bp.forward(model, images);
  const std::vector<float> ref_logits = fixture().read<float>("logits");
  REQUIRE(logits.rows() == n);
  REQUIRE(logits.cols() == a.num_classes);
  const double logits_err = rel_l2(logits.data(), ref_logits);
  INFO("logits relative L2 error " << logits_err);
  CHECK(logits_err < kTol);

  vit::Matrix<float> dlogits(n, a.num_classes);
  vit::MatrixRef<float> dref(dlogits);
  const double loss =
      vit::train::cross_entropy<float>(logits, labels, meta_double("label_smoothing"), &dref);
  const double ref_loss = fixture().read<double>("loss").at(0);
  const double loss_err = std::fabs(loss - ref_loss) / std::fabs(ref_loss);
  INFO("loss " << loss << " vs " << ref_loss << ", relative error " << loss_err);
  CHECK(loss_err < kTol);

  bp.backward(model, dlogits);
  Worst w = compare(bp.grads().named_parameters(), "grad.");
  worst_grad.update(w.error, w.where);
}

struct Kernels {
  bool packed;
  int threads;
  std::string name() const {
    return std::string(packed ? "packed" : "plain") + " kernels, " + std::to_string(threads) +
           (threads == 1 ? " thread" : " threads");
  }
};

std::vector<Kernels> kernel_choices() {
  std::vector<Kernels> ks{{false, 1}, {false, 2}};
  if (vit::nn::gemm_packed_uses_avx512()) ks.insert(ks.end(), {{true, 1}, {true, 2}});
  return ks;
}

vit::train::AdamW<float> fixture_adamw(Model& model, Model& grads) {
  vit::train::AdamWOptions o;
  o.beta1 = meta_double("beta1");
  o.beta2 = meta_double("beta2");
  o.eps = meta_double("adam_eps");
  o.weight_decay = meta_double("weight_decay");
  return vit::train::AdamW<float>(model.named_parameters(), grads.named_parameters(), o);
}

}  // namespace

TEST_CASE("train step fixture: architecture and parameter names") {
  const vit::Architecture a = fixture_architecture();
  CHECK(a.problem() == nullptr);
  CHECK(a.num_tokens() == 17);
  Model model = fixture_model();  // every name found, every fixture parameter used
  // The gradients and the updated parameters cover the same names.
  for (const vit::ParameterRef<float>& p : model.named_parameters()) {
    CHECK(fixture().contains("grad." + p.name));
    CHECK(fixture().contains("updated." + p.name));
  }
}

TEST_CASE("train step: logits, loss and every gradient match PyTorch") {
  const Model model = fixture_model();
  Worst worst;
  for (const Kernels& k : kernel_choices()) {
    INFO(k.name());
    Backprop bp(model, k.threads);
    bp.use_packed_kernels(k.packed);
    REQUIRE(bp.packed_kernels() == k.packed);
    forward_backward(model, bp, worst);
  }
  MESSAGE("worst gradient relative L2 error " << worst.error << " (" << worst.where << ")");
}

TEST_CASE("train step: clipping and AdamW from the fixture's gradients match PyTorch") {
  Model model = fixture_model();
  Model grads(model.architecture());
  load_tensors(grads.named_parameters(), "grad.");
  vit::train::AdamW<float> opt = fixture_adamw(model, grads);
  const double norm = opt.clip_grad_norm(meta_double("max_norm"));
  const double ref_norm = fixture().read<double>("grad_norm").at(0);
  CHECK(ref_norm > meta_double("max_norm"));  // clipping is active
  CHECK(std::fabs(norm - ref_norm) <= 1e-6 * ref_norm);
  opt.step(meta_double("lr"));
  const Worst w = compare(model.named_parameters(), "updated.");
  MESSAGE("AdamW from the stored gradients: worst relative L2 error "
          << w.error << (w.where.empty() ? "" : " (" + w.where + ")"));
}

TEST_CASE("train step: forward, backward, clipping and AdamW end to end") {
  // The key rows of each qkv bias have no gradient (adding a constant to every key of a
  // query shifts all its attention scores equally, which softmax ignores): PyTorch's and our
  // values there are rounding noise (~1e-9), which AdamW's first step turns into +-lr. Those
  // rows are checked to have moved by at most lr; every other value against PyTorch.
  const double lr = meta_double("lr");
  for (const Kernels& k : kernel_choices()) {
    INFO(k.name());
    Model model = fixture_model();
    Backprop bp(model, k.threads);
    bp.use_packed_kernels(k.packed);
    Worst worst_grad;
    forward_backward(model, bp, worst_grad);
    vit::train::AdamW<float> opt = fixture_adamw(model, bp.grads());
    const double norm = opt.clip_grad_norm(meta_double("max_norm"));
    const double ref_norm = fixture().read<double>("grad_norm").at(0);
    CHECK(std::fabs(norm - ref_norm) <= kTol * ref_norm);
    opt.step(lr);

    const Index d = model.architecture().embed_dim;
    Worst worst;
    for (const vit::ParameterRef<float>& p : model.named_parameters()) {
      const std::string name = "updated." + p.name;
      std::vector<float> ref = fixture().read<float>(name);
      std::vector<float> got(p.data, p.data + ref.size());
      const std::string qkv_bias = ".attn.qkv.bias";
      if (p.name.size() > qkv_bias.size() &&
          p.name.compare(p.name.size() - qkv_bias.size(), qkv_bias.size(), qkv_bias) == 0) {
        const std::vector<float> before = fixture().read<float>("param." + p.name);
        for (Index i = d; i < 2 * d; ++i) {
          const auto j = static_cast<std::size_t>(i);
          INFO(p.name << "[" << i << "]");
          CHECK(std::fabs(double(got[j]) - double(before[j])) <= lr * (1 + 1e-4));
          got[j] = ref[j] = 0;
        }
      }
      const double e = rel_l2(got.data(), ref);
      INFO(name << ": relative L2 error " << e);
      CHECK(e < kTol);
      worst.update(e, name);
    }
    MESSAGE(k.name() << ": worst gradient " << worst_grad.error << " (" << worst_grad.where
                     << "), worst updated parameter " << worst.error << " (" << worst.where << ")");
  }
}
