// Fuzz target: image decoding (PNG, JPEG, BMP, GIF, TGA, PNM through stb) and
// the preprocessing that follows it (resize, centre crop or squash, to_tensor).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_support.hpp"
#include "vit/io/image_io.hpp"
#include "vit/preprocess.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  vit_fuzz::expect_clean([&] {
    vit::ImageLimits limits;
    limits.max_pixels = std::int64_t{1} << 22;  // the fuzzer's memory, not the library's default
    const vit::Image im = vit::decode_image(data, size, "fuzz.img", limits);
    // Two of the data configs checkpoints use: timm's centre crop and Hugging
    // Face's squash, with different filters.
    vit::DataConfig timm;
    timm.input_size = 16;
    timm.crop_pct = 0.875;
    vit::DataConfig hf;
    hf.input_size = 8;
    hf.crop_mode = "squash";
    hf.interpolation = size % 2 ? "bilinear" : "lanczos";
    for (const vit::DataConfig& d : {timm, hf}) {
      std::vector<float> x(std::size_t(3) * d.input_size * d.input_size);
      vit::to_tensor(vit::eval_transform(im, d), d.mean, d.std, x.data());
    }
  });
  return 0;
}
