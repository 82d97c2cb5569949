// vit/io/image_io.hpp - decode image files to 8-bit RGB, write PNG.
//
// Part of the compiled library vit::image (link it to use these functions):
// the decoders are stb_image's, compiled once inside that library, so this
// header needs no third-party header.
//
// Decoded pixels are what Pillow's `Image.open(f).convert('RGB')` gives:
//   * grayscale is replicated to R = G = B;
//   * alpha is dropped, not composited onto a background;
//   * palette images are expanded through their palette;
//   * 16-bit channels keep their high byte (v >> 8), like Pillow for 16-bit
//     RGB/RGBA PNGs. One difference: Pillow opens a 16-bit *grayscale* PNG as
//     32-bit mode "I" and its convert('RGB') clips to 0..255 (every value
//     >= 255 becomes white); here it is v >> 8 like the colour case;
//   * animated GIFs: the first frame;
//   * EXIF orientation and colour profiles (ICC, gAMA) are ignored, as Pillow
//     does without ImageOps.exif_transpose.
// Formats: PNG, JPEG (baseline and progressive; not arithmetic-coded or
// 12-bit), BMP, TGA, GIF, binary PNM (P5 gray, P6 RGB), PSD (composite image).
// JPEG pixels can differ from Pillow's (libjpeg-turbo) by up to 2 levels, 3
// with subsampled chroma. All functions are safe to call from several threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "vit/error.hpp"
#include "vit/image.hpp"

namespace vit {

/// Hard ceiling on an image side, whatever the limits say (stb's own bound,
/// and every pixel index stays far inside int).
inline constexpr int kMaxImageSide = 32768;
/// Default pixel budget of a decoded image: 64 Mi pixels (8192 x 8192, 192 MiB
/// of RGB). A photo from a phone has 12-50 M; a header claiming more is far
/// more likely a decompression bomb than a picture anyone wants classified.
inline constexpr std::int64_t kDefaultMaxImagePixels = std::int64_t{1} << 26;

/// What the decoders accept, checked from the file header before anything is
/// decoded or allocated. Raise max_pixels for gigapixel scans, lower it for
/// servers that take images from strangers.
struct ImageLimits {
  int max_side = kMaxImageSide;                      ///< each side, 1..kMaxImageSide
  std::int64_t max_pixels = kDefaultMaxImagePixels;  ///< width * height, >= 1
};

/// What a file's header says, before decoding.
struct ImageInfo {
  int width = 0;
  int height = 0;
  /// Channels as stored, before conversion to RGB: 1 gray, 2 gray + alpha,
  /// 3 RGB or palette, 4 RGBA or palette with transparency (GIF: always 4).
  int channels = 0;
};

/// Decodes the image file at `path` to 8-bit RGB.
/// Throws io_error ("<path>: cannot open ...") if the file cannot be opened or
/// read, image_error ("<path>: ...") if it is empty, corrupt, truncated, of an
/// unsupported format, or larger than `limits` (the message names the
/// dimensions and the limit), argument_error if `limits` is out of range.
Image load_image(const std::string& path, const ImageLimits& limits = {});

/// As load_image, from an encoded file held in memory; `source` names it in
/// error messages. `data` may be null when `size` is 0.
Image decode_image(const std::uint8_t* data, std::size_t size, const std::string& source,
                   const ImageLimits& limits = {});

/// Reads the header of the image file at `path` without decoding the pixels.
/// Reports the dimensions even when they exceed the decoding limits (a PNG
/// header claiming 100000x100000 is probed, not loaded). Throws io_error if the
/// file cannot be opened, image_error if it is not an image stb can read.
ImageInfo probe_image(const std::string& path);

/// Writes `image` as an 8-bit RGB PNG. Atomic: the data goes to a temporary
/// file in the same folder that is then renamed over `path`, so `path` is
/// either the old file or the complete new one, and nothing is left behind on
/// failure. Throws argument_error if the image is empty or its pixel buffer
/// does not hold width * height * 3 bytes, io_error (naming `path`) if the
/// file cannot be written.
void write_png(const std::string& path, const Image& image);

}  // namespace vit
