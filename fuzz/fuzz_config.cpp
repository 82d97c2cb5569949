// Fuzz target: the sidecar config readers (timm config.json, Hugging Face
// config.json and preprocessor_config.json) as load_model uses them, beside a
// small valid checkpoint. The first input byte picks the file the rest
// becomes: 'p' a preprocessor_config.json, anything else a config.json. A
// model that loads preprocesses an image with the data config it was given
// and runs once.
#include <cstddef>
#include <cstdint>

#include "fuzz_support.hpp"
#include "vit/io/checkpoint.hpp"
#include "vit/preprocess.hpp"
#include "vit/vit.hpp"

namespace {

// model.safetensors of a tiny timm model (image 8, patch 4, width 8, one
// block, 3 classes), written once into the scratch folder.
const std::string& model_dir() {
  static const std::string dir = [] {
    vit::Architecture a;
    a.image_size = 8;
    a.patch_size = 4;
    a.embed_dim = 8;
    a.depth = 1;
    a.num_heads = 2;
    a.mlp_hidden = 16;
    a.num_classes = 3;
    vit::VisionTransformer<vit::DynamicConfig<float>> model(a);
    float v = 0.01f;
    for (auto& p : model.named_parameters()) {
      std::int64_t n = 1;
      for (std::int64_t d : p.shape) n *= d;
      for (std::int64_t i = 0; i < n; ++i, v = -v * 1.01f) p.data[i] = v;
    }
    vit::io::save_weights(model, (vit_fuzz::scratch_dir() / "model.safetensors").string());
    return vit_fuzz::scratch_dir().string();
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& dir = model_dir();
  if (size == 0) return 0;
  const bool preprocessor = data[0] == 'p';
  const std::string config = vit_fuzz::write_file(
      preprocessor ? "preprocessor_config.json" : "config.json", data + 1, size - 1);
  vit_fuzz::expect_clean([&] {
    vit::io::LoadOptions options;
    if (preprocessor)
      options.preprocessor_config_path = config;
    else
      options.config_path = config;
    auto loaded = vit::load_model<float>(dir, options);
    const vit::DataConfig& d = loaded.info.data;
    vit::Image photo;
    photo.width = 12;
    photo.height = 9;
    photo.pixels.assign(std::size_t(12) * 9 * 3, 100);
    const vit::Architecture& a = loaded.info.architecture;
    vit::Matrix<float> x(1, vit::Index(3) * d.input_size * d.input_size);
    vit::preprocess<float>(photo, d, x.row(0));
    if (d.input_size == a.image_size) {
      vit::Output<float> out;
      loaded.model.forward(x, out);
    }
  });
  return 0;
}
