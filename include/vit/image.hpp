// vit/image.hpp - an 8-bit RGB image in memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace vit {

/// 8-bit RGB pixels, row-major, channels interleaved (HWC):
/// pixel (x, y) channel c is pixels[(y * width + x) * 3 + c].
struct Image {
  int width = 0;
  int height = 0;
  std::vector<std::uint8_t> pixels;  // (height, width, 3)

  Image() = default;
  Image(int w, int h) : width(w), height(h), pixels(std::size_t(w) * std::size_t(h) * 3, 0) {}

  bool empty() const { return width == 0 || height == 0; }
  std::uint8_t& at(int x, int y, int c) { return pixels[(std::size_t(y) * width + x) * 3 + c]; }
  std::uint8_t at(int x, int y, int c) const {
    return pixels[(std::size_t(y) * width + x) * 3 + c];
  }
};

}  // namespace vit
