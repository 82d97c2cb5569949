// Fuzz target: the DEFLATE / gzip decoder used for the Fashion-MNIST files
// (Huffman tables, back-references, stored blocks, CRC and length trailers,
// several members), under a small output limit so bombs stop early.
#include <cstddef>
#include <cstdint>

#include "fuzz_support.hpp"
#include "vit/io/inflate.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  constexpr std::size_t kLimit = std::size_t{1} << 24;
  vit_fuzz::expect_clean([&] { vit::io::gunzip(data, size, "fuzz.gz", kLimit); });
  vit_fuzz::expect_clean([&] {
    std::size_t used = 0;
    vit::io::inflate(data, size, "fuzz.deflate", &used, kLimit);
    if (used > size) throw std::logic_error("inflate consumed more bytes than it was given");
  });
  return 0;
}
