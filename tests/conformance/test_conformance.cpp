// Conformance: every case in tests/data (checkpoints and outputs produced by
// timm, Hugging Face transformers and torchvision themselves) is loaded and
// run, and every stored tensor is compared within the tolerances that
// tests/data/index.json gives.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "vit/vit.hpp"

namespace {

const std::string data_dir = VIT_TEST_DATA_DIR;

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), "cannot open " << path);
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

struct Tolerance {
  double atol, rtol;
};

Tolerance tolerance(const char* key, bool f64 = false) {
  const nlohmann::json index = read_json(data_dir + "/index.json");
  const auto& t =
      index.at("tolerances").at(f64 ? "float64_implementation" : "float32_implementation").at(key);
  return {t.at("atol").get<double>(), t.at("rtol").get<double>()};
}

// Compares got (any layout, row-major order) with the stored tensor `name`:
// max |got - expected| <= atol + rtol * max |expected|. Reports the first
// element over the limit with its index.
template <class Scalar>
void expect_close(const vit::io::SafeTensors& expected, const std::string& name,
                  const vit::Matrix<Scalar>& got, Tolerance tol, const std::string& label) {
  INFO(label << " tensor " << name);
  const std::vector<double> want = expected.read<double>(name);
  REQUIRE(std::size_t(got.size()) == want.size());
  double max_expected = 0;
  for (double v : want) max_expected = std::max(max_expected, std::abs(v));
  const double limit = tol.atol + tol.rtol * max_expected;
  double max_diff = 0;
  std::size_t first_bad = want.size();
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double d = std::abs(double(got.data()[i]) - want[i]);
    if (!(d <= limit) && first_bad == want.size()) first_bad = i;
    if (!(d <= max_diff)) max_diff = d;
  }
  INFO("max |diff| = " << max_diff << ", limit " << limit);
  if (first_bad != want.size())
    FAIL("first mismatch at flat index " << first_bad << ": got " << got.data()[first_bad]
                                         << ", expected " << want[first_bad]);
  CHECK(max_diff <= limit);
}

template <class Scalar>
void run_case(const std::string& name) {
  const std::string dir = data_dir + "/" + name;
  const nlohmann::json cfg = read_json(dir + "/config.json");
  const auto expected = vit::io::SafeTensors::open(dir + "/expected.safetensors");

  // The neutral config.json carries the head count, which torchvision files lack.
  vit::LoadOptions options;
  options.config_path = dir + "/config.json";
  auto loaded = vit::load_model<Scalar>(dir + "/model.safetensors", options);
  const vit::Architecture& a = loaded.model.architecture();
  CHECK(std::string(vit::io::naming_name(loaded.info.naming)) ==
        cfg.at("naming").get<std::string>());
  CHECK(a.embed_dim == cfg.at("dim").get<int>());
  CHECK(a.depth == cfg.at("depth").get<int>());
  CHECK(a.num_heads == cfg.at("heads").get<int>());
  CHECK(a.mlp_hidden == cfg.at("mlp_dim").get<int>());
  CHECK(a.num_classes == cfg.at("num_classes").get<int>());
  CHECK(a.num_tokens() == cfg.at("num_tokens").get<int>());
  CHECK(a.layer_norm_eps == cfg.at("layer_norm_eps").get<double>());

  // pixel_values: the stored reference input, [1, 3, S, S] -> one row.
  const std::vector<Scalar> pixels = expected.read<Scalar>("pixel_values");
  REQUIRE(pixels.size() == std::size_t(3 * a.image_size * a.image_size));
  const vit::Matrix<Scalar> images =
      Eigen::Map<const vit::Matrix<Scalar>>(pixels.data(), 1, Eigen::Index(pixels.size()));

  vit::Output<Scalar> out;
  loaded.model.forward(images, out, {/*attention=*/true, /*hidden_states=*/true});

  const std::string label = name + (std::is_same_v<Scalar, float> ? " (float)" : " (double)");
  if constexpr (std::is_same_v<Scalar, float>) {
    expect_close(expected, "embeddings", out.embeddings, tolerance("embeddings"), label);
    for (int k = 0; k < a.depth; ++k)
      expect_close(expected, "hidden_states." + std::to_string(k), out.hidden_states[k],
                   tolerance("hidden_states.K"), label);
    expect_close(expected, "last_hidden_state", out.tokens, tolerance("last_hidden_state"), label);
    expect_close(expected, "attn_probs.last", out.attention.back(), tolerance("attn_probs.last"),
                 label);
    expect_close(expected, "pre_logits", out.pre_logits, tolerance("pre_logits"), label);
    expect_close(expected, "logits", out.logits, tolerance("logits"), label);
    expect_close(expected, "logits_f64", out.logits, tolerance("logits_vs_logits_f64"), label);
  } else {
    // A double build reproduces the float64 reference run.
    const bool resampled = !cfg.at("pos_embed_resample").is_null();
    Tolerance tl = tolerance("logits_vs_logits_f64", true);
    Tolerance tp = tolerance("pre_logits_vs_pre_logits_f64", true);
    if (resampled) tl.atol = tp.atol = 1e-6;
    expect_close(expected, "logits_f64", out.logits, tl, label);
    expect_close(expected, "pre_logits_f64", out.pre_logits, tp, label);
  }
}

}  // namespace

TEST_CASE("conformance: timm vit_tiny_patch16_224 (float)") {
  run_case<float>("timm_vit_tiny_p16_224");
}
TEST_CASE("conformance: timm vit_tiny_patch16_224 (double)") {
  run_case<double>("timm_vit_tiny_p16_224");
}
TEST_CASE("conformance: timm vit_small_patch32 avg-pool fc_norm (float)") {
  run_case<float>("timm_vit_small_p32_96");
}
TEST_CASE("conformance: timm vit_small_patch32 avg-pool fc_norm (double)") {
  run_case<double>("timm_vit_small_p32_96");
}
TEST_CASE("conformance: torchvision vit p16 (float)") { run_case<float>("torchvision_vit_p16_64"); }
TEST_CASE("conformance: torchvision vit p16 (double)") {
  run_case<double>("torchvision_vit_p16_64");
}
TEST_CASE("conformance: Hugging Face ViT p16 eps 1e-12 (float)") {
  run_case<float>("hf_vit_p16_32");
}
TEST_CASE("conformance: Hugging Face ViT p16 eps 1e-12 (double)") {
  run_case<double>("hf_vit_p16_32");
}

TEST_CASE("conformance: every case in index.json has a test") {
  // Guards against a fixture being added without being run above.
  const nlohmann::json index = read_json(data_dir + "/index.json");
  std::vector<std::string> names;
  for (const auto& c : index.at("cases")) names.push_back(c.at("name").get<std::string>());
  CHECK(names == std::vector<std::string>{"timm_vit_tiny_p16_224", "timm_vit_small_p32_96",
                                          "torchvision_vit_p16_64", "hf_vit_p16_32"});
}

TEST_CASE("conformance: hub sidecar files give the same architecture as the neutral config") {
  // timm's config.json and HF's config.json, as they sit beside hub checkpoints.
  const std::string timm_dir = data_dir + "/timm_vit_small_p32_96";
  vit::LoadOptions o;
  o.config_path = timm_dir + "/timm_config.json";
  auto timm = vit::load_model<float>(timm_dir + "/model.safetensors", o);
  CHECK(timm.model.architecture().pooling == vit::Pooling::avg);
  CHECK(timm.model.architecture().num_heads == 6);
  CHECK(timm.info.data.crop_pct == doctest::Approx(0.9));
  CHECK(timm.info.data.interpolation == "bicubic");

  const std::string hf_dir = data_dir + "/hf_vit_p16_32";
  o.config_path = hf_dir + "/hf_config.json";
  auto hf = vit::load_model<float>(hf_dir + "/model.safetensors", o);
  CHECK(hf.model.architecture().layer_norm_eps == 1e-12);
  CHECK(hf.model.architecture().num_heads == 4);
  CHECK(hf.info.labels == std::vector<std::string>{"LABEL_0", "LABEL_1", "LABEL_2"});

  // Same logits as with the neutral config.
  const auto expected = vit::io::SafeTensors::open(hf_dir + "/expected.safetensors");
  const std::vector<float> px = expected.read<float>("pixel_values");
  const vit::Matrix<float> images =
      Eigen::Map<const vit::Matrix<float>>(px.data(), 1, Eigen::Index(px.size()));
  expect_close(expected, "logits", hf.model(images), tolerance("logits"), "hf via hf_config");
}
