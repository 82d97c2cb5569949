// Architecture variants the library-made fixtures do not cover (DeiT
// distillation token, no class token, position-table resampling both ways, a
// fixed sin-cos table, no qkv bias), checked against tests/data/variants:
// outputs of an independent PyTorch reference (tests/reference/), itself
// validated against the timm / transformers / torchvision fixtures.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "vit/vit.hpp"

namespace {

const std::string variants_dir = std::string(VIT_TEST_DATA_DIR) + "/variants/";

template <class Scalar>
void expect_close(const vit::io::SafeTensors& expected, const std::string& name, const Scalar* got,
                  std::size_t count, double atol, double rtol) {
  INFO("tensor " << name);
  const std::vector<double> want = expected.read<double>(name);
  REQUIRE(count == want.size());
  double max_expected = 0, max_diff = 0;
  for (double v : want) max_expected = std::max(max_expected, std::abs(v));
  for (std::size_t i = 0; i < count; ++i)
    max_diff = std::max(max_diff, std::abs(double(got[i]) - want[i]));
  CHECK(max_diff <= atol + rtol * max_expected);
}

template <class Scalar, class M>
void expect_close(const vit::io::SafeTensors& expected, const std::string& name, const M& got,
                  double atol, double rtol) {
  expect_close<Scalar>(expected, name, got.data(), std::size_t(got.size()), atol, rtol);
}

template <class Scalar>
void run_variant(const std::string& name, const std::string& config = "config.json") {
  const std::string dir = variants_dir + name;
  const auto expected = vit::io::SafeTensors::open(dir + "/expected.safetensors");
  vit::LoadOptions options;
  options.config_path = dir + "/" + config;
  const bool resampled = name.rfind("resample", 0) == 0;
  if (config != "config.json" && resampled) {
    // timm's sidecar describes the checkpoint at its own size; ask for the run size.
    const std::vector<std::int64_t>& shape = expected.info("pixel_values").shape;
    options.image_size = int(shape[3]);
  }
  auto loaded = vit::load_model<Scalar>(dir + "/model.safetensors", options);
  const vit::Architecture& a = loaded.model.architecture();

  const std::vector<Scalar> pixels = expected.read<Scalar>("pixel_values");
  const Eigen::Index per_image = 3 * Eigen::Index(a.image_size) * a.image_size;
  REQUIRE(pixels.size() % std::size_t(per_image) == 0);
  const Eigen::Index batch = Eigen::Index(pixels.size()) / per_image;
  CHECK(batch == 2);
  const vit::Matrix<Scalar> images =
      Eigen::Map<const vit::Matrix<Scalar>>(pixels.data(), batch, per_image);

  vit::Output<Scalar> out;
  loaded.model.forward(images, out, {true, true});
  if constexpr (std::is_same_v<Scalar, float>) {
    expect_close<Scalar>(expected, "pos_embed_used", loaded.model.position_table(), 1e-5, 0);
    expect_close<Scalar>(expected, "embeddings", out.embeddings, 1e-4, 1e-5);
    for (int k = 0; k < a.depth; ++k)
      expect_close<Scalar>(expected, "hidden_states." + std::to_string(k), out.hidden_states[k],
                           1e-4, 1e-5);
    expect_close<Scalar>(expected, "attn_probs.last", out.attention.back(), 1e-5, 0);
    expect_close<Scalar>(expected, "last_hidden_state", out.tokens, 1e-4, 1e-5);
    expect_close<Scalar>(expected, "pre_logits", out.pre_logits, 1e-4, 1e-5);
    expect_close<Scalar>(expected, "logits", out.logits, 1e-4, 1e-5);
  } else {
    // The reference resamples the table in float32, hence 1e-6 there.
    const double atol = resampled ? 1e-6 : 1e-9;
    expect_close<Scalar>(expected, "logits_f64", out.logits, atol, 0);
    expect_close<Scalar>(expected, "pre_logits_f64", out.pre_logits, atol, 0);
  }
}

}  // namespace

TEST_CASE("variants: DeiT distilled (class + distillation token, two heads)") {
  run_variant<float>("deit_distilled");
  run_variant<double>("deit_distilled");
}
TEST_CASE("variants: no class token, average pooling") {
  run_variant<float>("no_class_token");
  run_variant<double>("no_class_token");
}
TEST_CASE("variants: position table resampled 4x4 -> 6x6") {
  run_variant<float>("resample_up");
  run_variant<double>("resample_up");
  run_variant<float>("resample_up", "timm_config.json");
}
TEST_CASE("variants: position table resampled 6x6 -> 3x3") {
  run_variant<float>("resample_down");
  run_variant<double>("resample_down");
  run_variant<float>("resample_down", "timm_config.json");
}
TEST_CASE("variants: fixed 2-D sin-cos position table") {
  run_variant<float>("sincos");
  run_variant<double>("sincos");
  run_variant<float>("sincos", "timm_config.json");
}
TEST_CASE("variants: no qkv bias") {
  run_variant<float>("no_qkv_bias");
  run_variant<double>("no_qkv_bias");
}
TEST_CASE("variants: timm sidecar files load the distilled and no-class-token cases") {
  run_variant<float>("deit_distilled", "timm_config.json");
  run_variant<float>("no_class_token", "timm_config.json");
  run_variant<float>("no_qkv_bias", "timm_config.json");
}
