// Unit tests of the whole model and of checkpoint loading: compile-time vs
// run-time configs, batches, image size changes, naming variants, dtypes,
// and checkpoints that are wrong for the model (each must be refused with a
// message naming the file and tensor, leaving the model as it was).
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "test_support.hpp"
#include "vit/vit.hpp"

namespace fs = std::filesystem;
using vit::Index;
using vit::Matrix;

namespace {

const std::string data_dir = VIT_TEST_DATA_DIR;
const std::string tiny_dir = data_dir + "/timm_vit_tiny_p16_224";

using vit_test::TempDir;

vit::LoadOptions with_config(const std::string& dir) {
  vit::LoadOptions o;
  o.config_path = dir + "/config.json";
  return o;
}

// The fixture's input image as one row.
Matrix<float> fixture_pixels(const std::string& dir) {
  const auto ex = vit::io::SafeTensors::open(dir + "/expected.safetensors");
  const std::vector<float> px = ex.read<float>("pixel_values");
  return Eigen::Map<const Matrix<float>>(px.data(), 1, Index(px.size()));
}

// Copies a checkpoint with edits: `rename` maps (or drops, when it returns "")
// each key; `extra` adds tensors.
void rewrite(const std::string& from, const std::string& to,
             const std::function<std::string(const std::string&)>& rename,
             const std::function<void(vit::io::SafeTensorsWriter&)>& extra = {}) {
  const auto src = vit::io::SafeTensors::open(from);
  vit::io::SafeTensorsWriter w;
  for (const auto& t : src.tensors()) {
    const std::string name = rename(t.name);
    if (name.empty()) continue;
    const std::uint8_t* p = src.raw(t.name);
    w.add_raw(name, t.dtype, t.shape, std::vector<std::uint8_t>(p, p + (t.end - t.begin)));
  }
  if (extra) extra(w);
  w.write(to);
}

std::string keep(const std::string& s) { return s; }

// Copies an F32 checkpoint with every value changed (x -> 2x + 0.25), so that
// loading it changes every weight; `rename` and `extra` as for rewrite().
void rewrite_changed(const std::string& from, const std::string& to,
                     const std::function<std::string(const std::string&)>& rename,
                     const std::function<void(vit::io::SafeTensorsWriter&)>& extra = {}) {
  const auto src = vit::io::SafeTensors::open(from);
  vit::io::SafeTensorsWriter w;
  for (const auto& t : src.tensors()) {
    const std::string name = rename(t.name);
    if (name.empty()) continue;
    std::vector<float> v = src.read<float>(t.name);
    for (float& x : v) x = 2 * x + 0.25f;
    w.add(name, t.shape, v);
  }
  if (extra) extra(w);
  w.write(to);
}

// Every parameter value of a model, in named_parameters() order.
template <class Model>
std::vector<std::vector<float>> parameter_values(Model& model) {
  std::vector<std::vector<float>> values;
  for (const auto& p : model.named_parameters()) {
    std::size_t n = 1;
    for (auto d : p.shape) n *= std::size_t(d);
    values.emplace_back(p.data, p.data + n);
  }
  return values;
}

// Runs `f`, expects a vit::error whose message contains every string in `parts`.
template <class Error = vit::error>
void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    FAIL("no exception thrown");
  } catch (const Error& e) {
    const std::string msg = e.what();
    INFO("message: " << msg);
    for (const auto& p : parts) CHECK(msg.find(p) != std::string::npos);
  }
}

// The tiny fixture's architecture as a Config of our own.
struct TinyTwoBlocks {
  using Scalar = float;
  static constexpr bool is_static = true;
  static constexpr vit::Architecture architecture() {
    vit::Architecture a = vit::presets::vit_tiny_patch16_224<>::architecture();
    a.depth = 2;
    return a;
  }
};

}  // namespace

TEST_CASE("a preset fixes the architecture at compile time") {
  using Tiny = vit::presets::vit_tiny_patch16_224<float>;
  static_assert(Tiny::architecture().embed_dim == 192);
  static_assert(Tiny::architecture().num_tokens() == 197);
  static_assert(vit::presets::deit_tiny_distilled_patch16_224<>::architecture().num_tokens() ==
                198);
  static_assert(vit::presets::vit_base_patch32_224<>::architecture().num_patches() == 49);
  static_assert(vit::presets::vit_base_patch16_384<>::architecture().grid_size() == 24);
  vit::VisionTransformer<Tiny> m;
  CHECK(m.architecture() == vit::preset_architecture("vit_tiny_patch16_224"));
  CHECK(m.blocks.size() == 12);
  CHECK(m.blocks[0].attn.qkv.weight.rows() == 3 * 192);
  CHECK(vit::preset_architecture("vit_large_patch16_224").num_heads == 16);
  expect_error<vit::config_error>([] { vit::preset_architecture("vit_gigantic"); },
                                  {"vit_gigantic", "vit_base_patch16_224"});
  // A compile-time model refuses a different architecture.
  vit::Architecture other = Tiny::architecture();
  other.depth = 3;
  CHECK_THROWS_AS(vit::VisionTransformer<Tiny>{other}, vit::config_error);
}

TEST_CASE("an inconsistent architecture is refused with the reason") {
  vit::Architecture a;
  a.embed_dim = 100;
  a.num_heads = 3;
  expect_error<vit::config_error>([&] { vit::VisionTransformer<vit::DynamicConfig<float>> m(a); },
                                  {"num_heads"});
  a = vit::Architecture{};
  a.image_size = 225;
  expect_error<vit::config_error>([&] { vit::VisionTransformer<vit::DynamicConfig<float>> m(a); },
                                  {"patch_size"});
  a = vit::Architecture{};
  a.embed_dim = 1 << 20;
  CHECK(a.problem() != nullptr);
}

TEST_CASE("compile-time and run-time configs run the same code and give the same logits") {
  vit::VisionTransformer<TinyTwoBlocks> fixed;
  vit::load_weights(fixed, tiny_dir + "/model.safetensors");
  auto dynamic = vit::load_model<float>(tiny_dir + "/model.safetensors", with_config(tiny_dir));
  // load_model packs the weights where the AVX-512 kernels run: same for both.
  if (dynamic.model.weights_packed()) fixed.pack_weights();
  const Matrix<float> img = fixture_pixels(tiny_dir);
  CHECK(fixed(img) == dynamic.model(img));

  // The 12-block preset cannot take this 2-block file: missing tensors, named.
  vit::VisionTransformer<vit::presets::vit_tiny_patch16_224<float>> twelve;
  expect_error<vit::checkpoint_error>(
      [&] { vit::load_weights(twelve, tiny_dir + "/model.safetensors"); },
      {"model.safetensors", "missing", "blocks.2.norm1.weight"});
}

TEST_CASE("a batch gives the same results as its images one by one") {
  auto loaded = vit::load_model<float>(tiny_dir + "/model.safetensors", with_config(tiny_dir));
  const Matrix<float> one = fixture_pixels(tiny_dir);
  Matrix<float> batch(3, one.cols());
  batch.row(0) = one;
  batch.row(1) = one.reverse();
  batch.row(2) = -0.5f * one;
  vit::Output<float> all;
  loaded.model.forward(batch, all, {true, false});
  const Index t = loaded.model.architecture().num_tokens();
  const Index h = loaded.model.architecture().num_heads;
  for (Index i = 0; i < 3; ++i) {
    vit::Output<float> single;
    loaded.model.forward(batch.row(i), single, {true, false});
    CHECK((all.logits.row(i) - single.logits).cwiseAbs().maxCoeff() < 1e-5f);
    CHECK((all.pre_logits.row(i) - single.pre_logits).cwiseAbs().maxCoeff() < 1e-5f);
    CHECK((all.tokens.middleRows(i * t, t) - single.tokens).cwiseAbs().maxCoeff() < 1e-5f);
    CHECK((all.attention[1].middleRows(i * h * t, h * t) - single.attention[1])
              .cwiseAbs()
              .maxCoeff() < 1e-6f);
  }
  // In bf16 and int8 every kernel works row by row: a batch row's logits are
  // the bits of the image alone.
  for (vit::Precision p : {vit::Precision::bf16, vit::Precision::int8}) {
    auto low = vit::load_model<float>(tiny_dir + "/model.safetensors", with_config(tiny_dir));
    low.model.pack_weights(p);
    const Matrix<float> logits = low.model(batch);
    for (Index i = 0; i < 3; ++i) {
      CAPTURE(vit::precision_name(p));
      CAPTURE(i);
      CHECK(logits.row(i) == low.model(batch.row(i)));
    }
  }
  // Rows of every attention map are probability distributions.
  for (const auto& a : all.attention) {
    CHECK((a.rowwise().sum().array() - 1.0f).abs().maxCoeff() < 1e-5f);
    CHECK(a.minCoeff() >= 0.0f);
  }
  // An empty batch is fine, a wrong width is not.
  vit::Output<float> none;
  loaded.model.forward(Matrix<float>(0, one.cols()), none);
  CHECK(none.logits.rows() == 0);
  expect_error<vit::argument_error>([&] { loaded.model(Matrix<float>::Zero(1, one.cols() - 1)); },
                                    {"150528", "150527"});
}

TEST_CASE("running at another image size resamples the position table, and back") {
  auto loaded = vit::load_model<float>(tiny_dir + "/model.safetensors", with_config(tiny_dir));
  auto& m = loaded.model;
  const Matrix<float> img = fixture_pixels(tiny_dir);
  const Matrix<float> before = m(img);
  m.set_image_size(112);
  CHECK(m.architecture().grid_size() == 7);
  CHECK(m.position_table().rows() == 1 + 49);
  CHECK(m.position_table().row(0) == m.pos_embed.row(0));  // prefix row kept
  const Matrix<float> small = m(Matrix<float>::Zero(1, 3 * 112 * 112));
  CHECK(small.allFinite());
  CHECK_THROWS_AS(m(img), vit::argument_error);  // still 112
  expect_error<vit::argument_error>([&] { m.set_image_size(100); }, {"set_image_size(100)"});
  m.set_image_size(224);
  CHECK(m(img) == before);

  // load_model's image_size option does the same at load time.
  vit::LoadOptions o = with_config(tiny_dir);
  o.image_size = 112;
  auto at112 = vit::load_model<float>(tiny_dir + "/model.safetensors", o);
  m.set_image_size(112);
  CHECK(at112.model.position_table() == m.position_table());
}

TEST_CASE("save_weights then load_model gives the same model (F32 exact, F16/BF16 close)") {
  TempDir tmp;
  auto loaded = vit::load_model<float>(tiny_dir + "/model.safetensors", with_config(tiny_dir));
  const Matrix<float> img = fixture_pixels(tiny_dir);
  const Matrix<float> ref = loaded.model(img);
  vit::save_weights(loaded.model, tmp / "f32.safetensors");
  vit::LoadOptions o = with_config(tiny_dir);
  auto again = vit::load_model<float>(tmp / "f32.safetensors", o);
  CHECK(again.model(img) == ref);

  vit::save_weights(loaded.model, tmp / "f16.safetensors", vit::io::DType::F16);
  vit::save_weights(loaded.model, tmp / "bf16.safetensors", vit::io::DType::BF16);
  CHECK(vit::io::SafeTensors::open(tmp / "f16.safetensors").info("head.weight").dtype ==
        vit::io::DType::F16);
  const float scale = ref.cwiseAbs().maxCoeff();
  const Matrix<float> f16 = vit::load_model<float>(tmp / "f16.safetensors", o).model(img);
  const Matrix<float> bf16 = vit::load_model<float>(tmp / "bf16.safetensors", o).model(img);
  CHECK((f16 - ref).cwiseAbs().maxCoeff() < 0.01f * scale);
  CHECK((bf16 - ref).cwiseAbs().maxCoeff() < 0.1f * scale);
  CHECK((f16 - ref).cwiseAbs().maxCoeff() > 0.0f);  // really went through half precision

  // A double model reads the same float32 file.
  auto d = vit::load_model<double>(tmp / "f32.safetensors", o);
  CHECK((d.model(img.cast<double>()).cast<float>() - ref).cwiseAbs().maxCoeff() < 1e-4f);
}

TEST_CASE("torchvision files with the older mlp.linear_1 / linear_2 names load the same") {
  TempDir tmp;
  const std::string tv = data_dir + "/torchvision_vit_p16_64";
  rewrite(tv + "/model.safetensors", tmp / "old.safetensors", [](const std::string& k) {
    std::string s = k;
    for (auto [from, to] : {std::pair<std::string, std::string>{".mlp.0.", ".mlp.linear_1."},
                            {".mlp.3.", ".mlp.linear_2."}})
      if (auto pos = s.find(from); pos != std::string::npos) s.replace(pos, from.size(), to);
    return s;
  });
  const Matrix<float> img = fixture_pixels(tv);
  auto a = vit::load_model<float>(tv + "/model.safetensors", with_config(tv));
  auto b = vit::load_model<float>(tmp / "old.safetensors", with_config(tv));
  CHECK(a.model(img) == b.model(img));
}

TEST_CASE("Hugging Face ViTModel files (no 'vit.' prefix, with pooler) load, pooler ignored") {
  TempDir tmp;
  const std::string hf = data_dir + "/hf_vit_p16_32";
  rewrite(
      hf + "/model.safetensors", tmp / "model.safetensors",
      [](const std::string& k) {
        if (k.rfind("classifier.", 0) == 0) return std::string();  // bare model: no head
        return k.rfind("vit.", 0) == 0 ? k.substr(4) : k;
      },
      [](vit::io::SafeTensorsWriter& w) {
        const std::vector<float> pool(64 * 64, 0.5f), bias(64, 0.1f);
        w.add("pooler.dense.weight", {64, 64}, pool.data());
        w.add("pooler.dense.bias", {64}, bias.data());
      });
  fs::copy_file(hf + "/hf_config.json", tmp / "config.json");
  // A folder is accepted; its config.json is read (eps 1e-12, 4 heads).
  auto bare = vit::load_model<float>(tmp.path.string());
  CHECK(bare.model.architecture().num_classes == 0);
  CHECK(bare.model.architecture().layer_norm_eps == 1e-12);
  CHECK(bare.info.config_paths.size() == 1);
  auto full = vit::load_model<float>(hf + "/model.safetensors", with_config(hf));
  const Matrix<float> img = fixture_pixels(hf);
  vit::Output<float> a, b;
  bare.model.forward(img, a);
  full.model.forward(img, b);
  CHECK(a.pre_logits == b.pre_logits);
  CHECK(a.logits.cols() == 0);
}

TEST_CASE("wrong checkpoints are refused by name, and the model is left as it was") {
  TempDir tmp;
  const std::string src = tiny_dir + "/model.safetensors";
  auto loaded = vit::load_model<float>(src, with_config(tiny_dir));
  auto& model = loaded.model;
  const Matrix<float> img = fixture_pixels(tiny_dir);
  const Matrix<float> ref = model(img);

  SUBCASE("missing tensor") {
    rewrite(src, tmp / "x.safetensors",
            [](const std::string& k) { return k == "blocks.1.mlp.fc2.bias" ? "" : k; });
    expect_error<vit::checkpoint_error>([&] { vit::load_weights(model, tmp / "x.safetensors"); },
                                        {"x.safetensors", "missing", "blocks.1.mlp.fc2.bias"});
  }
  SUBCASE("unknown tensor") {
    rewrite(src, tmp / "x.safetensors", keep, [](vit::io::SafeTensorsWriter& w) {
      const float v[2] = {1, 2};
      w.add("blocks.0.attn.extra", {2}, v);
    });
    expect_error<vit::checkpoint_error>([&] { vit::load_weights(model, tmp / "x.safetensors"); },
                                        {"x.safetensors", "unknown", "blocks.0.attn.extra"});
  }
  SUBCASE("shape mismatch") {
    rewrite(
        src, tmp / "x.safetensors",
        [](const std::string& k) { return k == "blocks.0.attn.proj.weight" ? std::string() : k; },
        [](vit::io::SafeTensorsWriter& w) {
          const std::vector<float> v(192 * 191, 0.f);
          w.add("blocks.0.attn.proj.weight", {192, 191}, v.data());
        });
    expect_error<vit::checkpoint_error>(
        [&] { vit::load_weights(model, tmp / "x.safetensors"); },
        {"x.safetensors", "blocks.0.attn.proj.weight", "[192, 191]", "[192, 192]"});
  }
  SUBCASE("integer dtype where floats are needed") {
    rewrite(
        src, tmp / "x.safetensors",
        [](const std::string& k) { return k == "norm.bias" ? std::string() : k; },
        [](vit::io::SafeTensorsWriter& w) {
          w.add_raw("norm.bias", vit::io::DType::I32, {192}, std::vector<std::uint8_t>(192 * 4, 0));
        });
    expect_error<vit::checkpoint_error>([&] { vit::load_weights(model, tmp / "x.safetensors"); },
                                        {"x.safetensors", "norm.bias", "I32"});
  }
  SUBCASE("truncated file") {
    std::ifstream in(src, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(tmp / "x.safetensors", std::ios::binary).write(bytes.data(), 100000);
    expect_error<vit::checkpoint_error>([&] { vit::load_weights(model, tmp / "x.safetensors"); },
                                        {"x.safetensors"});
    expect_error<vit::checkpoint_error>([&] { vit::load_model<float>(tmp / "x.safetensors"); },
                                        {"x.safetensors"});
  }
  SUBCASE("0-byte file and missing file") {
    std::ofstream(tmp / "empty.safetensors").close();
    expect_error([&] { vit::load_model<float>(tmp / "empty.safetensors"); }, {"empty.safetensors"});
    expect_error<vit::io_error>([&] { vit::load_model<float>(tmp / "nothing.safetensors"); },
                                {"nothing.safetensors"});
  }
  SUBCASE("not a ViT checkpoint") {
    vit::io::SafeTensorsWriter w;
    const float v[1] = {1};
    w.add("conv1.weight", {1}, v);
    w.write(tmp / "resnet.safetensors");
    expect_error<vit::checkpoint_error>([&] { vit::load_model<float>(tmp / "resnet.safetensors"); },
                                        {"resnet.safetensors", "not a ViT checkpoint"});
  }
  SUBCASE("position table that is not prefix + square grid") {
    rewrite(
        src, tmp / "x.safetensors",
        [](const std::string& k) { return k == "pos_embed" ? std::string() : k; },
        [](vit::io::SafeTensorsWriter& w) {
          const std::vector<float> v(190 * 192, 0.f);
          w.add("pos_embed", {1, 190, 192}, v.data());
        });
    expect_error<vit::checkpoint_error>(
        [&] { vit::load_model<float>(tmp / "x.safetensors", with_config(tiny_dir)); },
        {"x.safetensors", "190 rows"});
  }
  SUBCASE("config that contradicts the tensors") {
    std::ofstream(tmp / "config.json") << R"({"architecture": "vit_tiny_patch16_224",
        "model_args": {"depth": 3, "embed_dim": 192}})";
    vit::LoadOptions o;
    o.config_path = tmp / "config.json";
    expect_error<vit::checkpoint_error>([&] { vit::load_model<float>(src, o); },
                                        {"depth = 3", "tensors have 2"});
    std::ofstream(tmp / "bad.json") << "{\"architecture\": ";
    o.config_path = tmp / "bad.json";
    expect_error<vit::config_error>([&] { vit::load_model<float>(src, o); }, {"bad.json", "JSON"});
    std::ofstream(tmp / "labels.json")
        << R"({"model_type": "vit", "num_attention_heads": 3, "id2label": {"0": "a", "1": "b"}})";
    o.config_path = tmp / "labels.json";
    expect_error<vit::checkpoint_error>([&] { vit::load_model<float>(src, o); },
                                        {"2 class names", "1000"});
  }
  // Whatever failed above, the model is untouched.
  CHECK(model(img) == ref);
}

TEST_CASE("a file whose fault shows only after every tensor was checked changes no weight") {
  // Each file below has new values for every tensor, and a fault in the last
  // parameter (timm order) or beyond: a loader that wrote tensors while still
  // checking would have changed the model before finding it.
  TempDir tmp;
  const std::string src = tiny_dir + "/model.safetensors";
  auto loaded = vit::load_model<float>(src, with_config(tiny_dir));
  auto& model = loaded.model;
  const auto before = parameter_values(model);
  const Matrix<float> table = model.position_table();
  const std::string bad = tmp / "bad.safetensors";
  auto drop_head_bias = [](const std::string& k) { return k == "head.bias" ? std::string() : k; };

  SUBCASE("an unknown tensor") {
    rewrite_changed(src, bad, keep, [](vit::io::SafeTensorsWriter& w) {
      const float v[1] = {1};
      w.add("zzz.extra", {1}, v);
    });
    expect_error<vit::checkpoint_error>([&] { vit::load_weights(model, bad); },
                                        {"bad.safetensors", "unknown", "zzz.extra"});
  }
  SUBCASE("the last parameter missing") {
    rewrite_changed(src, bad, drop_head_bias);
    expect_error<vit::checkpoint_error>([&] { vit::load_weights(model, bad); },
                                        {"bad.safetensors", "missing", "head.bias"});
  }
  SUBCASE("the last parameter with an integer dtype") {
    rewrite_changed(src, bad, drop_head_bias, [](vit::io::SafeTensorsWriter& w) {
      w.add_raw("head.bias", vit::io::DType::I32, {1000}, std::vector<std::uint8_t>(4000, 0));
    });
    expect_error<vit::checkpoint_error>([&] { vit::load_weights(model, bad); },
                                        {"bad.safetensors", "head.bias", "I32"});
  }
  SUBCASE("the last parameter with the wrong shape") {
    rewrite_changed(src, bad, drop_head_bias, [](vit::io::SafeTensorsWriter& w) {
      const std::vector<float> v(999, 0.f);
      w.add("head.bias", {999}, v);
    });
    expect_error<vit::checkpoint_error>([&] { vit::load_weights(model, bad); },
                                        {"bad.safetensors", "head.bias", "[999]", "[1000]"});
  }
  CHECK(parameter_values(model) == before);
  CHECK(model.position_table() == table);
}

TEST_CASE("load_weights into a model that holds weights replaces all of them and the table") {
  TempDir tmp;
  const std::string src = tiny_dir + "/model.safetensors";
  auto model = vit::load_model<float>(src, with_config(tiny_dir)).model;
  const auto before = parameter_values(model);
  const Matrix<float> old_table = model.position_table();
  rewrite_changed(src, tmp / "changed.safetensors", keep);
  vit::load_weights(model, tmp / "changed.safetensors");
  auto fresh = vit::load_model<float>(tmp / "changed.safetensors", with_config(tiny_dir)).model;
  const auto after = parameter_values(model);
  CHECK(after == parameter_values(fresh));
  REQUIRE(after.size() == before.size());
  for (std::size_t i = 0; i < after.size(); ++i) CHECK(after[i] != before[i]);
  // The table added to the tokens follows the new pos_embed.
  CHECK(model.position_table() == fresh.position_table());
  CHECK(model.position_table() != old_table);
  const Matrix<float> img = fixture_pixels(tiny_dir);
  CHECK(model(img) == fresh(img));
}

TEST_CASE("a model with packed weights stays packed through a failed and a good load") {
  TempDir tmp;
  const std::string src = tiny_dir + "/model.safetensors";
  auto model = vit::load_model<float>(src, with_config(tiny_dir)).model;
  model.pack_weights();
  const Matrix<float> img = fixture_pixels(tiny_dir);
  const Matrix<float> ref = model(img);
  // Reading the parameters unpacks them; a failed load must pack them again.
  rewrite_changed(src, tmp / "bad.safetensors",
                  [](const std::string& k) { return k == "head.bias" ? std::string() : k; });
  expect_error<vit::checkpoint_error>([&] { vit::load_weights(model, tmp / "bad.safetensors"); },
                                      {"missing", "head.bias"});
  CHECK(model.weights_packed());
  CHECK(model(img) == ref);

  rewrite_changed(src, tmp / "changed.safetensors", keep);
  vit::load_weights(model, tmp / "changed.safetensors");
  CHECK(model.weights_packed());
  auto fresh = vit::load_model<float>(tmp / "changed.safetensors", with_config(tiny_dir)).model;
  fresh.pack_weights();
  CHECK(model(img) == fresh(img));
  CHECK(model(img) != ref);
}

TEST_CASE("Hugging Face DeiT naming (split q/k/v, distillation token, two classifiers)") {
  // The distilled variant rewritten the way transformers' DeiT saves it.
  TempDir tmp;
  const std::string dir = data_dir + "/variants/deit_distilled";
  const auto src = vit::io::SafeTensors::open(dir + "/model.safetensors");
  vit::io::SafeTensorsWriter w;
  auto copy = [&](const std::string& from, const std::string& to) {
    const auto& t = src.info(from);
    const std::uint8_t* p = src.raw(from);
    w.add_raw(to, t.dtype, t.shape, std::vector<std::uint8_t>(p, p + (t.end - t.begin)));
  };
  copy("cls_token", "deit.embeddings.cls_token");
  copy("dist_token", "deit.embeddings.distillation_token");
  copy("pos_embed", "deit.embeddings.position_embeddings");
  copy("patch_embed.proj.weight", "deit.embeddings.patch_embeddings.projection.weight");
  copy("patch_embed.proj.bias", "deit.embeddings.patch_embeddings.projection.bias");
  copy("norm.weight", "deit.layernorm.weight");
  copy("norm.bias", "deit.layernorm.bias");
  for (const char* p : {"weight", "bias"}) {
    copy(std::string("head.") + p, std::string("cls_classifier.") + p);
    copy(std::string("head_dist.") + p, std::string("distillation_classifier.") + p);
  }
  const char* parts[] = {"query", "key", "value"};
  for (int b = 0; b < 2; ++b) {
    const std::string t = "blocks." + std::to_string(b) + ".";
    const std::string h = "deit.encoder.layer." + std::to_string(b) + ".";
    for (const char* p : {"weight", "bias"}) {
      copy(t + "norm1." + p, h + "layernorm_before." + p);
      copy(t + "norm2." + p, h + "layernorm_after." + p);
      copy(t + "attn.proj." + p, h + "attention.output.dense." + p);
      copy(t + "mlp.fc1." + p, h + "intermediate.dense." + p);
      copy(t + "mlp.fc2." + p, h + "output.dense." + p);
      // Split the packed [3D, ...] qkv into its three thirds.
      const std::vector<float> qkv = src.read<float>(t + "attn.qkv." + p);
      const auto shape = src.info(t + "attn.qkv." + p).shape;
      std::vector<std::int64_t> third = shape;
      third[0] /= 3;
      const std::size_t n = qkv.size() / 3;
      for (int i = 0; i < 3; ++i)
        w.add(h + "attention.attention." + parts[i] + "." + p, third, qkv.data() + i * n);
    }
  }
  w.write(tmp / "model.safetensors");
  std::ofstream(tmp / "config.json") << R"({"model_type": "deit", "hidden_size": 64,
      "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256,
      "layer_norm_eps": 1e-6, "hidden_act": "gelu", "image_size": 32, "patch_size": 8,
      "id2label": {"0": "a", "1": "b", "2": "c", "3": "d", "4": "e"}})";
  auto hf = vit::load_model<float>(tmp.path.string());
  CHECK(hf.info.naming == vit::io::Naming::hf);
  CHECK(hf.model.architecture().dist_token);
  CHECK(hf.info.labels.size() == 5);
  const auto ex = vit::io::SafeTensors::open(dir + "/expected.safetensors");
  const std::vector<float> px = ex.read<float>("pixel_values");
  const Matrix<float> images = Eigen::Map<const Matrix<float>>(px.data(), 2, 3 * 32 * 32);
  const std::vector<float> want = ex.read<float>("logits");
  const Matrix<float> got = hf.model(images);
  REQUIRE(std::size_t(got.size()) == want.size());
  for (std::size_t i = 0; i < want.size(); ++i)
    CHECK(got.data()[i] == doctest::Approx(want[i]).epsilon(1e-4));
}

TEST_CASE("torchvision representation layer: pre_logits = tanh(W token0 + b), then the head") {
  TempDir tmp;
  const std::string tv = data_dir + "/torchvision_vit_p16_64";
  const Index d = 128, r = 16, c = 5;
  Matrix<float> wpre = Matrix<float>::Random(r, d) * 0.2f, bpre = Matrix<float>::Random(1, r);
  Matrix<float> whead = Matrix<float>::Random(c, r), bhead = Matrix<float>::Random(1, c);
  rewrite(
      tv + "/model.safetensors", tmp / "model.safetensors",
      [](const std::string& k) { return k.rfind("heads.head.", 0) == 0 ? std::string() : k; },
      [&](vit::io::SafeTensorsWriter& w) {
        w.add("heads.pre_logits.weight", {r, d}, wpre.data());
        w.add("heads.pre_logits.bias", {r}, bpre.data());
        w.add("heads.head.weight", {c, r}, whead.data());
        w.add("heads.head.bias", {c}, bhead.data());
      });
  auto with_rep = vit::load_model<float>(tmp / "model.safetensors", with_config(tv));
  CHECK(with_rep.model.architecture().representation_size == r);
  auto plain = vit::load_model<float>(tv + "/model.safetensors", with_config(tv));
  const Matrix<float> img = fixture_pixels(tv);
  vit::Output<float> a, b;
  with_rep.model.forward(img, a);
  plain.model.forward(img, b);
  const Matrix<float> token0 = b.tokens.topRows(1);
  const Matrix<float> pre =
      ((token0 * wpre.transpose()).rowwise() + bpre.row(0)).array().tanh().matrix();
  CHECK((a.pre_logits - pre).cwiseAbs().maxCoeff() < 1e-5f);
  const Matrix<float> logits = (pre * whead.transpose()).rowwise() + bhead.row(0);
  CHECK((a.logits - logits).cwiseAbs().maxCoeff() < 1e-5f);
}

TEST_CASE("sidecar files: timm pretrained_cfg, HF preprocessor_config and hidden_act") {
  TempDir tmp;
  vit::io::HubConfig h;
  std::ofstream(tmp / "pre.json") << R"({"do_resize": true, "size": {"height": 384, "width": 384},
      "resample": 2, "image_mean": [0.1, 0.2, 0.3], "image_std": [0.4, 0.5, 0.6]})";
  vit::io::read_preprocessor_config(tmp / "pre.json", h);
  CHECK(*h.input_size == 384);
  CHECK(*h.interpolation == "bilinear");
  CHECK((*h.mean)[2] == 0.3);
  CHECK((*h.std)[0] == 0.4);
  CHECK(*h.crop_pct == 1.0);

  vit::io::HubConfig t;
  vit::io::read_config_file(data_dir + "/timm_vit_tiny_p16_224/timm_config.json", t);
  CHECK(t.architecture.rfind("vit_tiny_patch16_224", 0) == 0);
  CHECK(*t.input_size == 224);
  CHECK(*t.crop_pct == doctest::Approx(0.9));
  CHECK(*t.interpolation == "bicubic");

  std::ofstream(tmp / "act.json") << R"({"model_type": "vit", "hidden_act": "gelu_new"})";
  vit::io::HubConfig a;
  vit::io::read_config_file(tmp / "act.json", a);
  CHECK(*a.activation == vit::Activation::gelu_tanh);
  std::ofstream(tmp / "badact.json") << R"({"model_type": "vit", "hidden_act": "swish2"})";
  expect_error<vit::config_error>([&] { vit::io::read_config_file(tmp / "badact.json", a); },
                                  {"badact.json", "swish2"});
  std::ofstream(tmp / "pool.json") << R"({"architecture": "x", "global_pool": "map"})";
  expect_error<vit::config_error>([&] { vit::io::read_config_file(tmp / "pool.json", a); },
                                  {"pool.json", "map"});
  std::ofstream(tmp / "type.json") << R"({"model_type": "vit", "hidden_size": "wide"})";
  expect_error<vit::config_error>([&] { vit::io::read_config_file(tmp / "type.json", a); },
                                  {"type.json", "hidden_size"});
}
