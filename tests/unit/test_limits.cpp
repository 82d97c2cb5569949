// Hostile sidecar configs: a config.json beside a valid checkpoint that claims
// absurd dimensions must be refused before anything big is allocated, with an
// error naming the file and what is wrong.
#include <doctest/doctest.h>

#include <fstream>
#include <string>

#include "test_support.hpp"
#include "vit/vit.hpp"

namespace {

using Model = vit::VisionTransformer<vit::DynamicConfig<float>>;

// A tiny timm model (image 8, patch 4, width 8, one block) saved with its config.
void save_tiny(const std::string& dir) {
  vit::Architecture a;
  a.image_size = 8;
  a.patch_size = 4;
  a.embed_dim = 8;
  a.depth = 1;
  a.num_heads = 2;
  a.mlp_hidden = 16;
  a.num_classes = 3;
  Model m(a);
  vit::DataConfig data;
  data.input_size = 8;
  vit::save_model(m, dir, data, {"a", "b", "c"});
}

// Replaces `from` by `to` in the folder's config.json.
void edit_config(const std::string& dir, const std::string& from, const std::string& to) {
  const std::string path = dir + "/config.json";
  std::string text = vit_test::slurp(path);
  const auto at = text.find(from);
  REQUIRE_MESSAGE(at != std::string::npos, "config.json has no '" << from << "'");
  text.replace(at, from.size(), to);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

template <class E>
void expect_refused(const std::string& dir, std::initializer_list<std::string> parts) {
  try {
    (void)vit::load_model<float>(dir);
    FAIL("load_model accepted the config");
  } catch (const E& e) {
    const std::string msg = e.what();
    INFO("message: " << msg);
    for (const std::string& p : parts) CHECK(msg.find(p) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("the tiny model round-trips (the hostile cases below start from it)") {
  vit_test::TempDir dir;
  save_tiny(dir.path.string());
  CHECK(vit::load_model<float>(dir.path.string()).info.architecture.image_size == 8);
  const std::string text = vit_test::slurp(dir / "config.json");
  CHECK(text.find("\"img_size\": 8") != std::string::npos);
  CHECK(text.find("\"mlp_ratio\": 2.0") != std::string::npos);
}

TEST_CASE("config.json claiming a huge image is refused before allocating") {
  vit_test::TempDir dir;
  save_tiny(dir.path.string());
  // 100000 pixels: beyond every dimension limit.
  edit_config(dir.path.string(), "\"img_size\": 8", "\"img_size\": 100000");
  expect_refused<vit::error>(dir.path.string(), {"beyond the supported limits", "config.json"});
  // 8192 at patch 4 is a 2048 x 2048 grid: 4 M tokens, attention of 16 T entries.
  save_tiny(dir.path.string());
  edit_config(dir.path.string(), "\"img_size\": 8", "\"img_size\": 8192");
  expect_refused<vit::error>(dir.path.string(), {"128 x 128 patches", "config.json"});
  // 512 at patch 4 is exactly 128 x 128: still allowed.
  save_tiny(dir.path.string());
  edit_config(dir.path.string(), "\"img_size\": 8", "\"img_size\": 512");
  CHECK(vit::load_model<float>(dir.path.string()).info.architecture.grid_size() == 128);
}

TEST_CASE("config.json claiming absurd model sizes is refused with the file named") {
  vit_test::TempDir dir;
  const std::string d = dir.path.string();
  save_tiny(d);
  edit_config(d, "\"mlp_ratio\": 2.0", "\"mlp_ratio\": 1e300");
  expect_refused<vit::config_error>(d, {"config.json", "mlp_ratio"});
  save_tiny(d);
  edit_config(d, "\"mlp_ratio\": 2.0", "\"mlp_ratio\": -1");
  expect_refused<vit::config_error>(d, {"config.json", "mlp_ratio"});
  save_tiny(d);
  edit_config(d, "\"depth\": 1", "\"depth\": 1000000000");
  expect_refused<vit::error>(d, {"depth"});
  save_tiny(d);
  edit_config(d, "\"depth\": 1", "\"depth\": 1e12");
  expect_refused<vit::config_error>(d, {"config.json", "depth"});
  save_tiny(d);
  edit_config(d, "\"embed_dim\": 8", "\"embed_dim\": -8");
  expect_refused<vit::error>(d, {"embed_dim"});
}
