// Unit tests of the NaN / Inf check of loaded weights: load_model with
// LoadOptions::check_finite refuses a checkpoint holding a non-finite value
// and names the file, the tensor (as the file names it) and the element;
// without the option the same file loads; check_finite() alone, also on a
// packed model, which it leaves as it was.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "test_support.hpp"
#include "vit/train/init.hpp"
#include "vit/vit.hpp"

using vit::Index;
using vit::Matrix;
using vit_test::TempDir;

namespace {

using Model = vit::VisionTransformer<vit::DynamicConfig<float>>;

const float kNan = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

vit::Architecture small_architecture() {
  vit::Architecture a;
  a.image_size = 32;
  a.patch_size = 8;
  a.embed_dim = 64;
  a.depth = 2;
  a.num_heads = 4;
  a.mlp_hidden = 128;
  a.num_classes = 5;
  return a;
}

Model small_model() {
  Model m(small_architecture());
  vit::train::init_weights(m, 42);
  return m;
}

// Sets element `at` of the parameter named `name`.
void set_value(Model& m, const std::string& name, std::size_t at, float value) {
  for (const auto& p : m.named_parameters())
    if (p.name == name) {
      p.data[at] = value;
      return;
    }
  FAIL("no parameter " << name);
}

vit::LoadOptions checking(bool on) {
  vit::LoadOptions o;
  o.check_finite = on;
  return o;
}

// Runs `f`, expects a checkpoint_error whose message contains every string in `parts`.
void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    FAIL("no exception thrown");
  } catch (const vit::checkpoint_error& e) {
    const std::string msg = e.what();
    INFO("message: " << msg);
    for (const auto& p : parts) CHECK(msg.find(p) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("load_model with check_finite refuses a NaN or an infinity, naming the tensor") {
  TempDir tmp;
  struct Case {
    std::string tensor;
    std::size_t at;
    float value;
    std::vector<std::string> expected;  // parts of the message
  };
  const std::vector<Case> cases = {
      {"blocks.0.attn.qkv.weight",
       17,
       kNan,
       {"'blocks.0.attn.qkv.weight'", "(nan)", "element 17 [0, 17]"}},
      {"head.bias", 3, kInf, {"'head.bias'", "(inf)", "element 3"}},
      // pos_embed [1, 17, 64]: element 64 * 2 + 5 is row 2, column 5.
      {"pos_embed", 133, -kInf, {"'pos_embed'", "(-inf)", "element 133 [0, 2, 5]"}},
      {"blocks.1.norm2.weight", 63, kNan, {"'blocks.1.norm2.weight'", "element 63"}},
  };
  for (const Case& c : cases) {
    CAPTURE(c.tensor);
    Model m = small_model();
    set_value(m, c.tensor, c.at, c.value);
    const std::string dir = tmp / c.tensor;
    vit::save_model(m, dir, vit::DataConfig{}, {});
    std::vector<std::string> parts = c.expected;
    parts.push_back(dir + "/model.safetensors");
    expect_error([&] { vit::load_model<float>(dir, checking(true)); }, parts);
    expect_error([&] { vit::load_model<double>(dir, checking(true)); }, parts);

    // Off (the library's default): the file loads, NaN and all.
    auto loaded = vit::load_model<float>(dir, checking(false));
    CHECK_FALSE(loaded.model(Matrix<float>::Zero(1, 3 * 32 * 32)).allFinite());
    CHECK_NOTHROW(vit::load_model<float>(dir));
  }
  // A clean model loads with the check, and gives the saved model's logits.
  Model m = small_model();
  vit::save_model(m, tmp / "clean", vit::DataConfig{}, {});
  auto loaded = vit::load_model<float>(tmp / "clean", checking(true));
  const Matrix<float> img = Matrix<float>::Random(2, 3 * 32 * 32);
  m.pack_weights();
  if (!loaded.model.weights_packed()) m.unpack_weights();
  CHECK(loaded.model(img) == m(img));
}

TEST_CASE("check_finite sees values that overflow only when converted to the model's type") {
  // An F64 file holding 1e300: finite in the file and in a double model,
  // +inf in a float one.
  TempDir tmp;
  Model m = small_model();
  vit::save_model(m, tmp.path.string(), vit::DataConfig{}, {});
  vit::io::SafeTensorsWriter w;
  for (const auto& p : m.named_parameters()) {
    std::size_t n = 1;
    for (auto d : p.shape) n *= std::size_t(d);
    std::vector<double> v(p.data, p.data + n);
    if (p.name == "blocks.1.mlp.fc2.bias") v[7] = 1e300;
    w.add(p.name, p.shape, v.data(), vit::io::DType::F64);
  }
  w.write(tmp / "model.safetensors");
  expect_error([&] { vit::load_model<float>(tmp.path.string(), checking(true)); },
               {"'blocks.1.mlp.fc2.bias'", "(inf)", "element 7"});
  auto d = vit::load_model<double>(tmp.path.string(), checking(true));
  CHECK(d.model.blocks[1].mlp.fc2.bias(7) == 1e300);
}

TEST_CASE("a Hugging Face file's bad tensor is named as the file names it") {
  // The fixture with one value of the key projection of block 1 made NaN:
  // the message names HF's key tensor and the element within it, not the
  // stacked qkv of timm.
  TempDir tmp;
  const std::string hf = std::string(VIT_TEST_DATA_DIR) + "/hf_vit_p16_32";
  const std::string key = "vit.encoder.layer.1.attention.attention.key.weight";
  vit_test::copy_with_value(hf + "/model.safetensors", tmp / "model.safetensors", key, 70, kNan);
  vit::LoadOptions o = checking(true);
  o.config_path = hf + "/hf_config.json";
  // key.weight is [64, 64]: element 70 is row 1, column 6.
  expect_error([&] { vit::load_model<float>(tmp / "model.safetensors", o); },
               {tmp / "model.safetensors", "'" + key + "'", "(nan)", "element 70 [1, 6]",
                "(for blocks.1.attn.qkv.weight)"});
  o.check_finite = false;
  CHECK_NOTHROW(vit::load_model<float>(tmp / "model.safetensors", o));
}

TEST_CASE("check_finite on its own: timm names, packed models checked and left as they were") {
  Model m = small_model();
  CHECK_NOTHROW(vit::check_finite(m, "clean"));
  m.pack_weights();
  const Matrix<float> img = Matrix<float>::Random(1, 3 * 32 * 32);
  const Matrix<float> before = m(img);
  CHECK_NOTHROW(vit::check_finite(m, "clean"));
  CHECK(m.weights_packed());
  CHECK(m(img) == before);

  set_value(m, "blocks.1.mlp.fc1.weight", 64 * 3 + 1, -kInf);  // unpacks
  m.pack_weights();
  const Model& packed = m;
  expect_error([&] { vit::check_finite(packed, "my model"); },
               {"my model: tensor 'blocks.1.mlp.fc1.weight'", "(-inf)", "element 193 [3, 1]"});
  CHECK(m.weights_packed());
  m.unpack_weights();
  expect_error([&] { vit::check_finite(packed, "my model"); }, {"'blocks.1.mlp.fc1.weight'"});
}
