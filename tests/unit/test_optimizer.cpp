// Tests of vit/train/optimizer.hpp and vit/train/schedule.hpp: AdamW, SGD and gradient
// clipping replayed against PyTorch (tests/data/train/optimizer_steps.safetensors, made by
// tests/reference/make_optimizer_case.py), timm's weight-decay rule on real model names,
// frozen parameters and lr multipliers, the learning-rate schedules, and saving / loading
// the optimizer state.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "vit/config.hpp"
#include "vit/error.hpp"
#include "vit/io/safetensors.hpp"
#include "vit/train/optimizer.hpp"
#include "vit/train/schedule.hpp"
#include "vit/vision_transformer.hpp"

#ifndef VIT_TEST_DATA_DIR
#error "VIT_TEST_DATA_DIR must be defined as the absolute path of tests/data"
#endif

namespace {

namespace fs = std::filesystem;
using vit::ParameterRef;
using vit::io::SafeTensors;
using vit::train::AdamW;
using vit::train::AdamWOptions;
using vit::train::ParamSettings;
using vit::train::SGD;
using vit::train::SGDOptions;

const std::string kFixture = std::string(VIT_TEST_DATA_DIR) + "/train/optimizer_steps.safetensors";
constexpr int kSteps = 5;
constexpr double kMaxNorm = 1.0;

const SafeTensors& fixture() {
  static const SafeTensors f = SafeTensors::open(kFixture);
  return f;
}

struct Spec {
  std::string name;
  std::vector<std::int64_t> shape;
};

// The tensors of make_optimizer_case.py, in its order.
const std::vector<Spec>& specs() {
  static const std::vector<Spec> s = {
      {"cls_token", {1, 1, 8}},
      {"pos_embed", {1, 5, 8}},
      {"patch_embed.proj.weight", {8, 3, 2, 2}},
      {"patch_embed.proj.bias", {8}},
      {"blocks.0.norm1.weight", {8}},
      {"blocks.0.norm1.bias", {8}},
      {"blocks.0.attn.qkv.weight", {24, 8}},
      {"blocks.0.attn.qkv.bias", {24}},
      {"norm.weight", {8}},
      {"norm.bias", {8}},
      {"head.weight", {3, 8}},
      {"head.bias", {3}},
  };
  return s;
}

std::size_t numel(const std::vector<std::int64_t>& shape) {
  std::size_t n = 1;
  for (auto d : shape) n *= static_cast<std::size_t>(d);
  return n;
}

// Owns a set of tensors and hands out ParameterRefs to them (not copyable: the refs
// point into it).
template <class S>
struct Store {
  std::vector<std::vector<S>> data;
  std::vector<ParameterRef<S>> refs;

  explicit Store(const std::vector<Spec>& ss = specs()) {
    for (const Spec& s : ss) data.emplace_back(numel(s.shape), S(0));
    for (std::size_t i = 0; i < ss.size(); ++i)
      refs.push_back({ss[i].name, ss[i].shape, data[i].data()});
  }
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Reads tensor prefix + name for every tensor.
  void load(const std::string& prefix, const SafeTensors& f = fixture()) {
    for (std::size_t i = 0; i < refs.size(); ++i)
      f.read(prefix + refs[i].name, data[i].data(), data[i].size());
  }
  // Copies the values (the buffers, and so the refs, stay where they are).
  void copy_from(const Store& o) {
    REQUIRE(o.data.size() == data.size());
    for (std::size_t i = 0; i < data.size(); ++i) {
      REQUIRE(o.data[i].size() == data[i].size());
      std::copy(o.data[i].begin(), o.data[i].end(), data[i].begin());
    }
  }
};

template <class S>
std::vector<S> read_vector(const std::string& name) {
  return fixture().read<S>(name);
}

// Errors are measured relative to max(|ref|, kFloor): AdamW moves some values through zero,
// and there one rounding of a step of ~0.03 is a large fraction of the value itself.
constexpr double kFloor = 1e-2;

// Largest |got - ref| / max(|ref|, floor) over the tensors `prefix + name`.
template <class S>
double worst_relative(const Store<S>& got, const std::string& prefix, double floor,
                      std::string* where = nullptr) {
  double worst = 0;
  for (std::size_t i = 0; i < got.refs.size(); ++i) {
    const std::vector<S> ref = fixture().read<S>(prefix + got.refs[i].name);
    REQUIRE(ref.size() == got.data[i].size());
    for (std::size_t j = 0; j < ref.size(); ++j) {
      const double r = ref[j], g = got.data[i][j];
      const double e = std::fabs(g - r) / std::max(std::fabs(r), floor);
      if (!(e <= worst)) {
        worst = e;
        if (where) *where = prefix + got.refs[i].name + "[" + std::to_string(j) + "]";
      }
    }
  }
  return worst;
}

vit::train::CosineSchedule fixture_schedule() {
  vit::train::CosineSchedule s;
  s.base_lr = 0.05;
  s.min_lr = 1e-3;
  s.warmup_lr = 5e-3;
  s.warmup_steps = 2;
  s.total_steps = 5;
  return s;
}

// Scalar type name for messages.
template <class S>
std::string scalar_name() {
  return std::is_same_v<S, float> ? "float" : "double";
}

// Replays run `run` of the fixture: per step, the stored gradients, clipping to norm 1,
// the step with the stored learning rate; compares the parameters after every step.
// Returns the largest relative error seen.
template <class S, class Make>
double replay(const std::string& run, Make&& make, double tol) {
  const std::string tag = std::is_same_v<S, float> ? "" : ".f64";
  Store<S> params, grads;
  params.load("init.");
  auto opt = make(params.refs, grads.refs);
  const std::vector<double> lrs = read_vector<double>("lr");
  const std::vector<double> norms = read_vector<double>(run + tag + ".norm");
  REQUIRE(lrs.size() == kSteps);
  REQUIRE(norms.size() == kSteps);
  double worst = 0;
  for (int k = 0; k < kSteps; ++k) {
    INFO(run << " in " << scalar_name<S>() << ", step " << k);
    grads.load("grad." + std::to_string(k) + ".");
    const double norm = opt.clip_grad_norm(kMaxNorm);
    CHECK(std::fabs(norm - norms[k]) <= tol * norms[k]);
    CHECK(opt.steps() == k);
    opt.step(lrs[k]);
    CHECK(opt.steps() == k + 1);
    std::string where;
    const double e =
        worst_relative(params, run + tag + "." + std::to_string(k) + ".", kFloor, &where);
    INFO("worst at " << where << ": " << e);
    CHECK(e <= tol);
    worst = std::max(worst, e);
  }
  return worst;
}

template <class S>
AdamW<S> make_adamw(std::vector<ParameterRef<S>> p, std::vector<ParameterRef<S>> g) {
  AdamWOptions o;
  o.weight_decay = 0.05;
  return AdamW<S>(std::move(p), std::move(g), o);
}

template <class S>
SGD<S> make_sgd(std::vector<ParameterRef<S>> p, std::vector<ParameterRef<S>> g, bool nesterov) {
  SGDOptions o;
  o.momentum = 0.9;
  o.weight_decay = 1e-4;
  o.nesterov = nesterov;
  return SGD<S>(std::move(p), std::move(g), o);
}

bool is_head(const std::string& name) { return name.rfind("head.", 0) == 0; }

// The fine-tuning run: cls_token and the patch embedding frozen, the backbone at 0.1 x lr.
template <class S>
AdamW<S> make_adamw_ft(std::vector<ParameterRef<S>> p, std::vector<ParameterRef<S>> g) {
  AdamWOptions o;
  o.weight_decay = 0.05;
  auto settings = vit::train::param_settings(p, [](const ParameterRef<S>& r, ParamSettings& s) {
    s.frozen = r.name == "cls_token" || r.name == "patch_embed.proj.weight";
    if (!is_head(r.name)) s.lr_scale = 0.1;
  });
  return AdamW<S>(std::move(p), std::move(g), o, std::move(settings));
}

// Tolerances against PyTorch: float runs agree to a few float roundings, double runs to
// a few double roundings.
constexpr double kFloatTol = 1e-6;
constexpr double kDoubleTol = 1e-12;

template <class S>
double tol() {
  return std::is_same_v<S, float> ? kFloatTol : kDoubleTol;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const vit::error& e) {
    return e.what();
  }
  FAIL("no vit::error thrown");
  return "";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

fs::path temp_path(const std::string& name) {
  return fs::temp_directory_path() / ("vit_test_optimizer_" + name + ".safetensors");
}

}  // namespace

TEST_CASE_TEMPLATE("AdamW with clipping replays torch.optim.AdamW step by step", S, float, double) {
  const double worst = replay<S>("adamw", make_adamw<S>, tol<S>());
  MESSAGE("AdamW " << scalar_name<S>() << ": worst relative error " << worst);
}

TEST_CASE_TEMPLATE("SGD momentum 0.9 with weight decay replays torch.optim.SGD", S, float, double) {
  auto plain = [](auto p, auto g) { return make_sgd<S>(std::move(p), std::move(g), false); };
  auto nesterov = [](auto p, auto g) { return make_sgd<S>(std::move(p), std::move(g), true); };
  const double w1 = replay<S>("sgd", plain, tol<S>());
  const double w2 = replay<S>("sgd_nesterov", nesterov, tol<S>());
  MESSAGE("SGD " << scalar_name<S>() << ": worst relative error " << w1 << ", nesterov " << w2);
}

TEST_CASE_TEMPLATE("fine-tuning settings (frozen, lr_scale) replay PyTorch parameter groups", S,
                   float, double) {
  replay<S>("adamw_ft", make_adamw_ft<S>, tol<S>());
  // Frozen parameters are bit-identical to their initial values after every step.
  const std::string tag = std::is_same_v<S, float> ? "" : ".f64";
  for (const char* name : {"cls_token", "patch_embed.proj.weight"}) {
    const auto init = fixture().read<S>(std::string("init.") + name);
    const auto last =
        fixture().read<S>("adamw_ft" + tag + "." + std::to_string(kSteps - 1) + "." + name);
    CHECK(init == last);
  }
}

TEST_CASE("the fixture is sensitive to what the replay checks") {
  // Sanity of the reference data: clipping is active on some steps only, and each run
  // moves the parameters by much more than the tolerance.
  const auto norms = read_vector<double>("adamw.norm");
  CHECK(std::count_if(norms.begin(), norms.end(), [](double n) { return n > kMaxNorm; }) == 2);
  CHECK(std::count_if(norms.begin(), norms.end(), [](double n) { return n < kMaxNorm; }) == 3);
  const auto ft_norms = read_vector<double>("adamw_ft.norm");
  CHECK(ft_norms[0] < norms[0]);  // the frozen gradients are left out of the norm
  Store<double> init, a, b;
  init.load("init.");
  a.load("sgd.f64.4.");
  b.load("sgd_nesterov.f64.4.");
  double sgd_vs_nesterov = 0, sgd_moved = 0;
  for (std::size_t i = 0; i < a.data.size(); ++i)
    for (std::size_t j = 0; j < a.data[i].size(); ++j) {
      sgd_vs_nesterov = std::max(sgd_vs_nesterov, std::fabs(a.data[i][j] - b.data[i][j]));
      sgd_moved = std::max(sgd_moved, std::fabs(a.data[i][j] - init.data[i][j]));
    }
  CHECK(sgd_vs_nesterov > 1e-4);
  CHECK(sgd_moved > 1e-3);

  // Where eps goes matters for head.bias, whose gradients are about eps in size.
  Store<double> params, grads;
  params.load("init.");
  AdamWOptions o;
  o.weight_decay = 0.05;
  o.eps = 1e-6;  // a different eps must be visible in the result
  AdamW<double> opt(params.refs, grads.refs, o);
  grads.load("grad.0.");
  opt.clip_grad_norm(kMaxNorm);
  opt.step(read_vector<double>("lr")[0]);
  CHECK(worst_relative(params, "adamw.f64.0.", kFloor) > 1e-3);
}

TEST_CASE("timm's weight-decay rule on a real ViT-Ti/16's parameter names") {
  vit::VisionTransformer<vit::presets::vit_tiny_patch16_224<float>> model;
  const auto params = model.named_parameters();
  // Written out independently of uses_weight_decay: the weight matrices of the patch
  // embedding, attention, MLP and head decay; biases, norms, tokens and pos_embed do not.
  auto ends_with = [](const std::string& s, const std::string& e) {
    return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0;
  };
  auto expected = [&](const std::string& n) {
    if (n == "patch_embed.proj.weight" || n == "head.weight") return true;
    if (n.rfind("blocks.", 0) != 0) return false;
    for (const char* w :
         {".attn.qkv.weight", ".attn.proj.weight", ".mlp.fc1.weight", ".mlp.fc2.weight"})
      if (ends_with(n, w)) return true;
    return false;
  };
  int decay = 0, no_decay = 0;
  const auto settings = vit::train::default_param_settings(params);
  REQUIRE(settings.size() == params.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    INFO(params[i].name);
    CHECK(vit::train::uses_weight_decay(params[i]) == expected(params[i].name));
    CHECK(settings[i].weight_decay == expected(params[i].name));
    CHECK(settings[i].lr_scale == 1.0);
    CHECK_FALSE(settings[i].frozen);
    (expected(params[i].name) ? decay : no_decay)++;
  }
  CHECK(params.size() == 152);  // timm's vit_tiny_patch16_224 has 152 parameter tensors
  CHECK(decay == 50);
  CHECK(no_decay == 102);
  CHECK(params[0].name == "cls_token");
  CHECK_FALSE(vit::train::uses_weight_decay(params[0]));  // [1, 1, 192] but in the no-decay set
  CHECK(params[1].name == "pos_embed");
  CHECK_FALSE(vit::train::uses_weight_decay(params[1]));

  // DeiT's distillation token and second head.
  vit::VisionTransformer<vit::DynamicConfig<float>> deit(
      vit::preset_architecture("deit_tiny_distilled_patch16_224"));
  int seen = 0;
  for (const auto& p : deit.named_parameters()) {
    if (p.name == "dist_token") {
      CHECK_FALSE(vit::train::uses_weight_decay(p));
      ++seen;
    }
    if (p.name == "head_dist.weight") {
      CHECK(vit::train::uses_weight_decay(p));
      ++seen;
    }
    if (p.name == "head_dist.bias") {
      CHECK_FALSE(vit::train::uses_weight_decay(p));
      ++seen;
    }
  }
  CHECK(seen == 3);
  // The rule by name and shape alone.
  CHECK(vit::train::uses_weight_decay("x.weight", {4, 4}));
  CHECK_FALSE(vit::train::uses_weight_decay("x.weight", {4}));
  CHECK_FALSE(vit::train::uses_weight_decay("x.bias", {4, 4}));  // name ends in .bias
  CHECK_FALSE(vit::train::uses_weight_decay("scalar", {}));
}

TEST_CASE_TEMPLATE("frozen parameters are untouched and get no state; lr_scale scales the step", S,
                   float, double) {
  const std::vector<Spec> ss = {{"a.weight", {4, 3}}, {"b.weight", {4, 3}}, {"c.weight", {4, 3}}};
  Store<S> params(ss), grads(ss);
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t j = 0; j < 12; ++j) {
      params.data[i][j] = S(0.5) + S(0.1) * S(j);   // the same values in all three
      grads.data[i][j] = S(0.27) - S(0.05) * S(j);  // never 0
    }
  std::vector<ParamSettings> settings(3);
  settings[1].lr_scale = 0.25;
  settings[2].frozen = true;
  for (auto& s : settings) s.weight_decay = false;
  AdamWOptions ao;
  ao.weight_decay = 0;
  AdamW<S> adamw(params.refs, grads.refs, ao, settings);
  // State for a and b only.
  const auto state = adamw.state_tensors();
  REQUIRE(state.size() == 4);
  CHECK(state[0].name == "optimizer.exp_avg.a.weight");
  CHECK(state[1].name == "optimizer.exp_avg.b.weight");
  CHECK(state[2].name == "optimizer.exp_avg_sq.a.weight");
  CHECK(state[3].name == "optimizer.exp_avg_sq.b.weight");
  CHECK(adamw.state_numel() == 2 * 2 * 12);  // nothing allocated for the frozen one
  const std::vector<S> before = params.data[0];
  adamw.step(0.01);
  // First AdamW step: p -= lr * g / (|g| + eps'), i.e. lr * sign(g) up to eps.
  for (std::size_t j = 0; j < 12; ++j) {
    const double da = double(params.data[0][j]) - double(before[j]);
    const double db = double(params.data[1][j]) - double(before[j]);
    INFO(j);
    CHECK(std::fabs(std::fabs(da) - 0.01) < 1e-5);
    CHECK(std::fabs(db - 0.25 * da) <= 1e-6);  // 0.75 * da = 0.0075 if the scale were lost
    CHECK(params.data[2][j] == before[j]);
  }
  // SGD without momentum: p + (-lr * lr_scale) * g, fused as in PyTorch's vectorized kernel.
  Store<S> p2(ss), g2(ss);
  p2.copy_from(params);
  g2.copy_from(grads);
  SGD<S> sgd(p2.refs, g2.refs, SGDOptions{}, settings);
  CHECK(sgd.state_tensors().empty());  // no momentum, no buffers
  const std::vector<std::vector<S>> b2 = p2.data;
  sgd.step(0.5);
  for (std::size_t j = 0; j < 12; ++j) {
    CHECK(p2.data[0][j] == std::fma(g2.data[0][j], S(-0.5), b2[0][j]));
    CHECK(p2.data[1][j] == std::fma(g2.data[1][j], S(-0.125), b2[1][j]));
    CHECK(p2.data[2][j] == b2[2][j]);
  }
  // A frozen parameter's gradient does not count towards the optimizer's norm.
  const double all = vit::train::global_grad_norm(g2.refs);
  const double live = sgd.grad_norm();
  CHECK(live == doctest::Approx(all * std::sqrt(2.0 / 3.0)).epsilon(1e-6));
}

TEST_CASE("weight decay goes where the settings say, decoupled in AdamW, coupled in SGD") {
  const std::vector<Spec> ss = {{"w", {2, 2}}, {"pos_embed", {1, 2, 2}}};
  Store<double> params(ss), grads(ss);  // zero gradients: only the decay moves anything
  for (auto& d : params.data) std::fill(d.begin(), d.end(), 2.0);
  AdamWOptions ao;
  ao.weight_decay = 0.1;
  AdamW<double> adamw(params.refs, grads.refs, ao);
  CHECK(adamw.settings()[0].weight_decay);
  CHECK_FALSE(adamw.settings()[1].weight_decay);
  adamw.step(0.5);
  CHECK(params.data[0][0] == 2.0 * (1 - 0.5 * 0.1));
  CHECK(params.data[1][0] == 2.0);
  SGDOptions so;
  so.weight_decay = 0.1;
  so.momentum = 0.9;
  SGD<double> sgd(params.refs, grads.refs, so);
  const double p0 = params.data[0][0];
  sgd.step(0.5);  // buf = g + wd p = 0.1 p
  CHECK(params.data[0][0] == doctest::Approx(p0 - 0.5 * 0.1 * p0).epsilon(1e-15));
  const double p1 = params.data[0][0];
  sgd.step(0.5);  // buf = 0.9 * 0.1 p0 + 0.1 p1
  CHECK(params.data[0][0] ==
        doctest::Approx(p1 - 0.5 * (0.9 * 0.1 * p0 + 0.1 * p1)).epsilon(1e-15));
  CHECK(params.data[1][0] == 2.0);
  CHECK(grads.data[0][0] == 0.0);  // SGD leaves the gradient tensor alone
}

TEST_CASE("SGD: the first step takes the gradient undamped, later steps damp it") {
  const std::vector<Spec> ss = {{"w", {3}}};
  Store<double> p(ss), g(ss);
  p.data[0] = {1.0, -2.0, 0.5};
  g.data[0] = {0.25, 0.5, -1.0};
  SGDOptions o;
  o.momentum = 0.5;
  o.dampening = 0.75;
  SGD<double> sgd(p.refs, g.refs, o);
  CHECK(sgd.state_numel() == 3);
  sgd.step(0.1);  // b = g (no dampening on the first step), p -= 0.1 b
  CHECK(p.data[0][0] == doctest::Approx(1.0 - 0.1 * 0.25).epsilon(1e-15));
  CHECK(p.data[0][2] == doctest::Approx(0.5 + 0.1).epsilon(1e-15));
  sgd.step(0.1);  // b = 0.5 b + 0.25 g = 0.75 g (0.375 g had the first step been damped)
  CHECK(p.data[0][0] == doctest::Approx(1.0 - 0.1 * 0.25 - 0.1 * 0.75 * 0.25).epsilon(1e-15));
  CHECK(p.data[0][1] == doctest::Approx(-2.0 - 0.1 * 0.5 - 0.1 * 0.75 * 0.5).epsilon(1e-15));
}

TEST_CASE("gradient helpers: zero_grad, global_grad_norm, clip_grad_norm") {
  const std::vector<Spec> ss = {{"a", {2}}, {"b", {1, 2}}};
  Store<float> g(ss);
  g.data = {{3, 0}, {0, 4}};
  CHECK(vit::train::global_grad_norm(g.refs) == 5.0);
  // Below the limit: unchanged, the norm is returned.
  CHECK(vit::train::clip_grad_norm(g.refs, 10.0) == 5.0);
  CHECK(g.data[0][0] == 3.0f);
  // Above: scaled by max_norm / (norm + 1e-6).
  CHECK(vit::train::clip_grad_norm(g.refs, 1.0) == 5.0);
  const float c = static_cast<float>(1.0 / (5.0 + 1e-6));
  CHECK(g.data[0][0] == 3.0f * c);
  CHECK(g.data[1][1] == 4.0f * c);
  CHECK(vit::train::global_grad_norm(g.refs) == doctest::Approx(1.0).epsilon(1e-6));
  CHECK(contains(message_of([&] { vit::train::clip_grad_norm(g.refs, 0.0); }), "max_norm"));
  CHECK(contains(message_of([&] { vit::train::clip_grad_norm(g.refs, -1.0); }), "max_norm"));
  vit::train::zero_grad(g.refs);
  CHECK(g.data[0] == std::vector<float>{0, 0});
  CHECK(g.data[1] == std::vector<float>{0, 0});
  CHECK(vit::train::global_grad_norm(g.refs) == 0.0);
  CHECK(vit::train::clip_grad_norm(g.refs, 1.0) == 0.0);
  // A NaN gradient makes the norm NaN and, as in PyTorch, reaches every gradient.
  g.data[0][0] = std::numeric_limits<float>::quiet_NaN();
  g.data[1][0] = 1;
  CHECK(std::isnan(vit::train::clip_grad_norm(g.refs, 1.0)));
  CHECK(std::isnan(g.data[1][0]));
}

TEST_CASE("optimizers reject mismatched lists and invalid options") {
  const std::vector<Spec> ss = {{"a", {2}}, {"b", {1, 2}}};
  const std::vector<Spec> other = {{"a", {2}}, {"b", {2, 1}}};
  Store<float> p(ss), g(ss), wrong(other);
  CHECK(contains(message_of([&] { AdamW<float>(p.refs, wrong.refs); }), "'b' [1, 2]"));
  auto fewer = g.refs;
  fewer.pop_back();
  CHECK(contains(message_of([&] { AdamW<float>(p.refs, fewer); }), "2 parameters but 1 gradients"));
  CHECK(contains(message_of([&] { SGD<float>(p.refs, p.refs); }), "same memory"));
  auto twice = p.refs, twice_g = g.refs;
  twice.push_back(p.refs[0]);
  twice_g.push_back(g.refs[0]);
  CHECK(contains(message_of([&] { AdamW<float>(twice, twice_g); }), "appears twice"));
  CHECK(
      contains(message_of([&] { AdamW<float>(p.refs, g.refs, {}, std::vector<ParamSettings>(1)); }),
               "settings"));
  std::vector<ParamSettings> bad_scale(2);
  bad_scale[1].lr_scale = -1;
  CHECK(contains(message_of([&] { AdamW<float>(p.refs, g.refs, {}, bad_scale); }), "lr_scale"));
  AdamWOptions ao;
  ao.beta1 = 1.0;
  CHECK(contains(message_of([&] { AdamW<float>(p.refs, g.refs, ao); }), "beta1"));
  SGDOptions so;
  so.nesterov = true;
  CHECK(contains(message_of([&] { SGD<float>(p.refs, g.refs, so); }), "nesterov"));
  AdamW<float> opt(p.refs, g.refs);
  CHECK(contains(message_of([&] { opt.step(-1e-3); }), "lr"));
  CHECK(contains(message_of([&] { opt.step(std::nan("")); }), "lr"));
  CHECK(opt.steps() == 0);
}

TEST_CASE("schedule: the fixture's learning rates are the cosine schedule's") {
  const auto lrs = read_vector<double>("lr");
  const auto s = fixture_schedule();
  for (int k = 0; k < kSteps; ++k) CHECK(s(k) == doctest::Approx(lrs[k]).epsilon(1e-15));
}

TEST_CASE("schedule: cosine with warm-up at known steps") {
  vit::train::CosineSchedule s;
  s.base_lr = 1e-3;
  s.min_lr = 1e-5;
  s.warmup_lr = 1e-6;
  s.warmup_steps = 100;
  s.total_steps = 1000;
  // Warm-up: starts at warmup_lr, linear, one step short of base_lr at its last step.
  CHECK(s(0) == 1e-6);
  CHECK(s(50) == doctest::Approx(1e-6 + 0.5 * (1e-3 - 1e-6)).epsilon(1e-14));
  CHECK(s(99) == doctest::Approx(1e-6 + 0.99 * (1e-3 - 1e-6)).epsilon(1e-14));
  // timm (no warmup_prefix): the cosine runs over [0, total]; the warm-up replaces its start.
  const double pi = std::acos(-1.0);
  CHECK(s(100) ==
        doctest::Approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + std::cos(pi * 0.1))).epsilon(1e-14));
  CHECK(s(500) == doctest::Approx((1e-3 + 1e-5) / 2).epsilon(1e-14));
  CHECK(s(999) > 1e-5);
  CHECK(s(1000) == 1e-5);
  CHECK(s(5000) == 1e-5);
  for (std::int64_t t = 101; t <= 1000; ++t) CHECK(s(t) < s(t - 1));
  // warmup_prefix: the cosine starts at base_lr right after the warm-up.
  s.warmup_prefix = true;
  CHECK(s(100) == 1e-3);
  CHECK(s(550) == doctest::Approx((1e-3 + 1e-5) / 2).epsilon(1e-14));
  CHECK(s(1000) == 1e-5);
  // No warm-up: starts at base_lr.
  s.warmup_steps = 0;
  s.warmup_prefix = false;
  CHECK(s(0) == 1e-3);
  // warmup_steps == total_steps: warm-up, then min_lr.
  s.warmup_steps = 1000;
  CHECK(s(999) < 1e-3);
  CHECK(s(1000) == 1e-5);
}

TEST_CASE("schedule: constant with warm-up") {
  vit::train::ConstantSchedule c;
  c.lr = 0.1;
  CHECK(c(0) == 0.1);
  CHECK(c(123456) == 0.1);
  c.warmup_steps = 4;  // warmup_lr 0 by default
  CHECK(c(0) == 0.0);
  CHECK(c(2) == doctest::Approx(0.05).epsilon(1e-15));
  CHECK(c(4) == 0.1);
}

TEST_CASE("schedule: nonsense is an argument_error that names the field") {
  auto err = [](auto s, std::int64_t step = 0) {
    try {
      s(step);
    } catch (const vit::argument_error& e) {
      return std::string(e.what());
    }
    return std::string("(no argument_error)");
  };
  vit::train::CosineSchedule s;
  s.base_lr = 1e-3;
  s.total_steps = 10;
  s.warmup_steps = 20;
  CHECK(contains(err(s), "total_steps = 10 is less than warmup_steps = 20"));
  s.warmup_steps = -1;
  CHECK(contains(err(s), "warmup_steps = -1"));
  s.warmup_steps = 0;
  s.total_steps = 0;
  CHECK(contains(err(s), "total_steps = 0"));
  s.total_steps = 10;
  s.base_lr = -1;
  CHECK(contains(err(s), "base_lr"));
  s.base_lr = 1e-3;
  s.min_lr = std::numeric_limits<double>::infinity();
  CHECK(contains(err(s), "min_lr"));
  s.min_lr = 0;
  s.warmup_lr = -1e-6;
  CHECK(contains(err(s), "warmup_lr"));
  s.warmup_lr = 0;
  CHECK(contains(err(s, -1), "step -1"));
  CHECK(err(s, 3) == "(no argument_error)");
  vit::train::ConstantSchedule c;
  c.lr = std::nan("");
  CHECK(contains(err(c), "lr"));
  c.lr = 1;
  c.warmup_steps = -5;
  CHECK(contains(err(c), "warmup_steps = -5"));
  c.warmup_steps = 0;
  CHECK(contains(err(c, -2), "step -2"));
}

namespace {

// Runs `first` steps of `run`'s data, saves the state, makes a new optimizer over a copy
// of the parameters, loads the state and runs the rest; the result must be bit-identical
// to an uninterrupted run.
template <class S, class Make>
void check_resume(const std::string& label, Make&& make, int first) {
  INFO(label << ", " << scalar_name<S>() << ", resumed after " << first << " steps");
  const auto lrs = read_vector<double>("lr");
  Store<S> straight, straight_g;
  straight.load("init.");
  auto a = make(straight.refs, straight_g.refs);
  for (int k = 0; k < kSteps; ++k) {
    straight_g.load("grad." + std::to_string(k) + ".");
    a.clip_grad_norm(kMaxNorm);
    a.step(lrs[k]);
  }

  const fs::path path = temp_path(label + "_" + scalar_name<S>());
  Store<S> part, part_g;
  part.load("init.");
  {
    auto b = make(part.refs, part_g.refs);
    for (int k = 0; k < first; ++k) {
      part_g.load("grad." + std::to_string(k) + ".");
      b.clip_grad_norm(kMaxNorm);
      b.step(lrs[k]);
    }
    b.save_state(path.string());
  }
  Store<S> resumed, resumed_g;
  resumed.copy_from(part);
  auto c = make(resumed.refs, resumed_g.refs);
  c.load_state(path.string());
  CHECK(c.steps() == first);
  for (int k = first; k < kSteps; ++k) {
    resumed_g.load("grad." + std::to_string(k) + ".");
    c.clip_grad_norm(kMaxNorm);
    c.step(lrs[k]);
  }
  CHECK(resumed.data == straight.data);
  // And the uninterrupted run is not trivially equal to the starting point.
  CHECK(resumed.data != part.data);
  fs::remove(path);
}

}  // namespace

TEST_CASE_TEMPLATE("state save / load: a resumed run is identical to an uninterrupted one", S,
                   float, double) {
  for (int first : {0, 1, 2, 4}) {
    check_resume<S>("adamw", make_adamw<S>, first);
    check_resume<S>("adamw_ft", make_adamw_ft<S>, first);
    check_resume<S>(
        "sgd", [](auto p, auto g) { return make_sgd<S>(std::move(p), std::move(g), false); },
        first);
    check_resume<S>(
        "sgd_nesterov",
        [](auto p, auto g) { return make_sgd<S>(std::move(p), std::move(g), true); }, first);
  }
}

TEST_CASE("state files: names, dtypes and shapes as documented") {
  Store<float> params, grads;
  params.load("init.");
  grads.load("grad.0.");
  auto opt = make_adamw_ft<float>(params.refs, grads.refs);
  opt.step(1e-3);
  const fs::path path = temp_path("layout");
  opt.save_state(path.string());
  const SafeTensors f = SafeTensors::open(path.string());
  CHECK(f.metadata().at("optimizer") == "AdamW");
  CHECK(f.info("optimizer.step").dtype == vit::io::DType::I64);
  CHECK(f.info("optimizer.step").shape.empty());
  const auto& head = f.info("optimizer.exp_avg_sq.head.weight");
  CHECK(head.dtype == vit::io::DType::F32);
  CHECK(head.shape == std::vector<std::int64_t>{3, 8});
  CHECK(f.contains("optimizer.exp_avg.pos_embed"));
  CHECK_FALSE(f.contains("optimizer.exp_avg.cls_token"));  // frozen: no state
  // 12 parameters, 2 frozen, two buffers each, plus the step.
  CHECK(f.tensors().size() == 2 * 10 + 1);
  std::size_t live = 0;
  for (const Spec& s : specs())
    if (s.name != "cls_token" && s.name != "patch_embed.proj.weight") live += numel(s.shape);
  CHECK(opt.state_numel() == 2 * live);
  // After one step exp_avg = (1 - beta1) * g.
  const auto m = f.read<float>("optimizer.exp_avg.head.weight");
  CHECK(m[5] == doctest::Approx(0.1 * grads.data[10][5]).epsilon(1e-6));
  fs::remove(path);
}

TEST_CASE("load_state errors name the file and the tensor, and change nothing") {
  Store<float> params, grads;
  params.load("init.");
  grads.load("grad.0.");
  auto opt = make_adamw<float>(params.refs, grads.refs);
  opt.step(1e-3);
  const fs::path path = temp_path("errors");
  const std::string file = path.string();
  opt.save_state(file);

  auto all_zero = [](auto& o) {
    for (const auto& t : o.state_tensors()) {
      const std::size_t n = numel(t.shape);
      for (std::size_t j = 0; j < n; ++j)
        if (t.data[j] != 0) return false;
    }
    return true;
  };

  SUBCASE("missing tensor") {
    std::vector<Spec> ss = specs();
    ss.push_back({"head_dist.weight", {3, 8}});
    Store<float> p(ss), g(ss);
    AdamW<float> other(p.refs, g.refs);
    const std::string msg = message_of([&] { other.load_state(file); });
    CHECK(contains(msg, file));
    CHECK(contains(msg, "missing tensor 'optimizer.exp_avg.head_dist.weight'"));
    CHECK(other.steps() == 0);
    CHECK(all_zero(other));
  }
  SUBCASE("wrong shape") {
    std::vector<Spec> ss = specs();
    ss[10].shape = {4, 8};  // head.weight
    Store<float> p(ss), g(ss);
    AdamW<float> other(p.refs, g.refs);
    const std::string msg = message_of([&] { other.load_state(file); });
    CHECK(contains(msg, file));
    CHECK(contains(msg, "'optimizer.exp_avg.head.weight' has shape [3, 8], expected [4, 8]"));
    CHECK(other.steps() == 0);
    CHECK(all_zero(other));
  }
  SUBCASE("state for a parameter that is frozen now") {
    Store<float> p, g;
    auto other = make_adamw_ft<float>(p.refs, g.refs);
    const std::string msg = message_of([&] { other.load_state(file); });
    CHECK(contains(msg, file));
    CHECK(contains(msg, "unexpected tensor 'optimizer.exp_avg"));
    CHECK((contains(msg, ".cls_token'") || contains(msg, ".patch_embed.proj.weight'")));
    CHECK(all_zero(other));
  }
  SUBCASE("another optimizer's state") {
    Store<float> p, g;
    auto sgd = make_sgd<float>(p.refs, g.refs, false);
    const std::string msg = message_of([&] { sgd.load_state(file); });
    CHECK(contains(msg, file));
    CHECK(contains(msg, "'AdamW'"));
  }
  SUBCASE("no step count") {
    const SafeTensors f = SafeTensors::open(file);
    vit::io::SafeTensorsWriter w;
    for (const auto& [k, v] : f.metadata()) w.set_metadata(k, v);
    for (const auto& t : f.tensors())
      if (t.name != "optimizer.step")
        w.add_raw(t.name, t.dtype, t.shape,
                  std::vector<std::uint8_t>(f.raw(t.name), f.raw(t.name) + t.nbytes()));
    const fs::path no_step = temp_path("no_step");
    w.write(no_step.string());
    Store<float> p, g;
    auto other = make_adamw<float>(p.refs, g.refs);
    const std::string msg = message_of([&] { other.load_state(no_step.string()); });
    CHECK(contains(msg, no_step.string()));
    CHECK(contains(msg, "missing tensor 'optimizer.step'"));
    CHECK(all_zero(other));
    fs::remove(no_step);
  }
  SUBCASE("not an optimizer state (the fixture)") {
    Store<float> p, g;
    auto other = make_adamw<float>(p.refs, g.refs);
    const std::string msg = message_of([&] { other.load_state(kFixture); });
    CHECK(contains(msg, kFixture));
    CHECK(contains(msg, "optimizer"));
  }
  SUBCASE("no such file") {
    Store<float> p, g;
    auto other = make_adamw<float>(p.refs, g.refs);
    const std::string missing = temp_path("does_not_exist").string();
    CHECK(contains(message_of([&] { other.load_state(missing); }), missing));
  }
  fs::remove(path);
}

TEST_CASE("state next to the weights in one checkpoint, a float state loads into double") {
  Store<float> params, grads;
  params.load("init.");
  grads.load("grad.1.");
  auto opt = make_adamw<float>(params.refs, grads.refs);
  opt.step(1e-3);
  opt.step(1e-3);
  vit::io::SafeTensorsWriter w;
  for (const auto& p : params.refs) w.add(p.name, p.shape, p.data);  // the model's weights
  opt.add_state(w);
  const SafeTensors f = SafeTensors::from_bytes(w.to_bytes(), "checkpoint");
  Store<double> dp, dg;
  auto d = make_adamw<double>(dp.refs, dg.refs);
  d.load_state(f);  // weight tensors (no "optimizer." prefix) are ignored
  CHECK(d.steps() == 2);
  const auto fs_ = opt.state_tensors();
  const auto ds = d.state_tensors();
  REQUIRE(fs_.size() == ds.size());
  for (std::size_t i = 0; i < ds.size(); ++i) {
    CHECK(ds[i].name == fs_[i].name);
    for (std::size_t j = 0; j < numel(ds[i].shape); ++j)
      CHECK(ds[i].data[j] == static_cast<double>(fs_[i].data[j]));
  }
}
