// Fuzz target: the safetensors reader (header JSON, dtypes, shapes, offsets,
// layout) and every tensor read that a loader may ask for.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_support.hpp"
#include "vit/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  vit_fuzz::expect_clean([&] {
    const auto file = vit::io::SafeTensors::from_bytes(std::vector<std::uint8_t>(data, data + size),
                                                       "fuzz.safetensors");
    (void)file.metadata();
    for (const vit::io::TensorInfo& t : file.tensors()) {
      // Every float conversion, and the exact-size check, on each tensor.
      vit_fuzz::expect_clean([&] {
        std::vector<float> f(t.numel());
        file.read(t.name, f.data(), f.size());
        std::vector<double> d(t.numel());
        file.read(t.name, d.data(), d.size());
      });
      vit_fuzz::expect_clean([&] { file.check_read(t.name, t.numel() + 1); });
    }
  });
  return 0;
}
