// Fuzz target: the checkpoint loader. The input is a .safetensors file; seeds
// are tiny models in timm, Hugging Face and torchvision naming, so mutations
// reach the naming detection, the architecture inference from tensor shapes,
// the weight copies (q/k/v fusing, conv reshapes, position tables), the
// non-finite check and weight packing. A model that loads is run once.
#include <cstddef>
#include <cstdint>

#include "fuzz_support.hpp"
#include "vit/io/checkpoint.hpp"
#include "vit/vit.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string path = vit_fuzz::write_file("model.safetensors", data, size);
  vit_fuzz::expect_clean([&] {
    vit::io::LoadOptions options;
    options.check_finite = true;
    // The low bits of the size pick the arithmetic, so every kernel's packing is reached.
    options.precision = size % 3 == 0   ? vit::Precision::fp32
                        : size % 3 == 1 ? vit::Precision::bf16
                                        : vit::Precision::int8;
    auto loaded = vit::load_model<float>(path, options);
    const vit::Architecture& a = loaded.info.architecture;
    // A file holds every weight, so a model that loads is at most a few times
    // the input's size; one forward pass is cheap.
    vit::Matrix<float> images =
        vit::Matrix<float>::Constant(1, vit::Index(a.in_chans) * a.image_size * a.image_size, 0.5f);
    vit::Output<float> out;
    loaded.model.forward(images, out);
  });
  return 0;
}
