// vit/data/augment.hpp - reproducible training augmentations and epoch shuffles.
//
//   std::mt19937_64 rng = vit::data::make_rng(seed, epoch);
//   vit::Image a = vit::data::random_crop(im, 32, 32, 4, rng);      // CIFAR: pad 4, crop 32
//   a = vit::data::random_horizontal_flip(a, rng);                  // p = 0.5
//   vit::Image b = vit::data::random_resized_crop(im, 224, 224, rng);  // ImageNet style
//   std::vector<int> order = vit::data::shuffled(n, seed, epoch);
//
// Every random decision draws from vit/random.hpp, so a seed gives the same
// shuffles and crops with every standard library.
// Header-only; needs no image decoder.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "vit/config.hpp"
#include "vit/data/dataset.hpp"
#include "vit/error.hpp"
#include "vit/image.hpp"
#include "vit/preprocess.hpp"
#include "vit/random.hpp"

namespace vit {
namespace data {

// The random primitives (vit/random.hpp), also under vit::data.
using vit::make_rng;
using vit::random_below;
using vit::random_normal;
using vit::random_uniform;
using vit::random_unit;

namespace detail {

/// Python's round() to an integer: halves go to the even neighbour.
inline double round_half_even(double x) {
  const double f = std::floor(x);
  const double d = x - f;
  if (d > 0.5 || (d == 0.5 && std::fmod(f, 2.0) != 0.0)) return f + 1.0;
  return f;
}

}  // namespace detail

/// A permutation of 0 .. n - 1 for epoch `epoch` of run `seed`: Fisher-Yates
/// from the last position down (position i swaps with random_below(i + 1)),
/// drawing from make_rng(seed, epoch). The same on every platform.
inline std::vector<int> shuffled(int n, std::uint64_t seed, int epoch) {
  if (n < 0) throw argument_error("shuffled: n must be >= 0, got " + std::to_string(n));
  std::vector<int> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) v[std::size_t(i)] = i;
  std::mt19937_64 rng = make_rng(seed, std::uint64_t(std::int64_t(epoch)));
  for (std::size_t i = v.size(); i > 1; --i) {
    const std::size_t j = std::size_t(random_below(rng, i));
    std::swap(v[i - 1], v[j]);
  }
  return v;
}

// --- geometry ------------------------------------------------------------------------

/// The width x height window of `in` whose top-left corner is (left, top);
/// the parts outside the image are black. Throws argument_error for an empty
/// image or a size outside 1 .. 32768 per side.
inline Image crop(const Image& in, int left, int top, int width, int height) {
  vit::detail::check_image(in, "crop");
  vit::detail::check_output_size(width, height, "crop");
  Image out(width, height);  // zeros
  // Columns [x0, x1) of the output come from the image.
  const long long x0 = std::max<long long>(0, -static_cast<long long>(left));
  const long long x1 = std::min<long long>(width, static_cast<long long>(in.width) - left);
  if (x1 <= x0) return out;
  for (int y = 0; y < height; ++y) {
    const long long sy = static_cast<long long>(y) + top;
    if (sy < 0 || sy >= in.height) continue;
    std::copy_n(&in.pixels[(std::size_t(sy) * std::size_t(in.width) + std::size_t(x0 + left)) * 3],
                std::size_t(x1 - x0) * 3,
                &out.pixels[(std::size_t(y) * std::size_t(width) + std::size_t(x0)) * 3]);
  }
  return out;
}

/// The mirror image (left and right swapped).
inline Image horizontal_flip(const Image& in) {
  vit::detail::check_image(in, "horizontal_flip");
  Image out(in.width, in.height);
  for (int y = 0; y < in.height; ++y)
    for (int x = 0; x < in.width; ++x)
      for (int c = 0; c < 3; ++c) out.at(in.width - 1 - x, y, c) = in.at(x, y, c);
  return out;
}

/// horizontal_flip(in) with probability p, else a copy of `in` (torchvision's
/// RandomHorizontalFlip). Always draws exactly one number: flips if random_unit < p.
inline Image random_horizontal_flip(const Image& in, std::mt19937_64& rng, double p = 0.5) {
  return random_unit(rng) < p ? horizontal_flip(in) : in;
}

/// torchvision's RandomCrop((height, width), padding): the image is padded
/// with `padding` black pixels on every side, then a width x height window is
/// taken at a uniformly random position (top = random_below(H + 2p - height + 1),
/// then left likewise). CIFAR-10's standard augmentation is
/// random_crop(im, 32, 32, 4, rng). Throws argument_error for a negative
/// padding or a window larger than the padded image.
inline Image random_crop(const Image& in, int width, int height, int padding,
                         std::mt19937_64& rng) {
  vit::detail::check_image(in, "random_crop");
  vit::detail::check_output_size(width, height, "random_crop");
  if (padding < 0 || padding > vit::detail::kMaxOutputSide)
    throw argument_error("random_crop: padding must be in 0 .. 32768, got " +
                         std::to_string(padding));
  const long long pw = in.width + 2LL * padding, ph = in.height + 2LL * padding;
  if (width > pw || height > ph)
    throw argument_error("random_crop: a " + std::to_string(width) + "x" + std::to_string(height) +
                         " window does not fit in the " + std::to_string(pw) + "x" +
                         std::to_string(ph) + " padded image");
  const int top = int(random_below(rng, std::uint64_t(ph - height + 1)));
  const int left = int(random_below(rng, std::uint64_t(pw - width + 1)));
  return crop(in, left - padding, top - padding, width, height);
}

/// A rectangle inside an image.
struct CropBox {
  int left = 0, top = 0, width = 0, height = 0;
};

namespace detail {

/// One try of the box both random crops and random erasing draw: an area
/// fraction s ~ U(scale), then an aspect ratio r = exp(U(log_lo, log_hi));
/// returns {round(sqrt(A * s * r)), round(sqrt(A * s / r))}, halves to even.
inline std::pair<double, double> draw_box_sides(std::mt19937_64& rng, double area,
                                                const std::array<double, 2>& scale, double log_lo,
                                                double log_hi) {
  const double target_area = area * random_uniform(rng, scale[0], scale[1]);
  const double aspect = std::exp(random_uniform(rng, log_lo, log_hi));
  return {round_half_even(std::sqrt(target_area * aspect)),
          round_half_even(std::sqrt(target_area / aspect))};
}

/// A width x height box placed uniformly in the image: the top row is drawn
/// first, then the left column (torchvision's and timm's order).
inline CropBox place_box(std::mt19937_64& rng, int image_width, int image_height, int width,
                         int height) {
  CropBox b;
  b.width = width;
  b.height = height;
  b.top = int(random_below(rng, std::uint64_t(image_height - height + 1)));
  b.left = int(random_below(rng, std::uint64_t(image_width - width + 1)));
  return b;
}

}  // namespace detail

/// torchvision's RandomResizedCrop.get_params: up to 10 tries of an area
/// fraction s ~ U(scale) and an aspect ratio r = exp(U(log ratio)), giving
/// w = round(sqrt(A * s * r)), h = round(sqrt(A * s / r)) (A = image area,
/// round halves to even); the first that fits (0 < w <= W, 0 < h <= H) is
/// placed at top = random_below(H - h + 1), left = random_below(W - w + 1).
/// If none fits: the largest centred box whose ratio is clamped to `ratio`.
/// Throws argument_error for an empty image or a bad scale / ratio range.
inline CropBox random_resized_crop_box(int image_width, int image_height, std::mt19937_64& rng,
                                       std::array<double, 2> scale = {0.08, 1.0},
                                       std::array<double, 2> ratio = {3.0 / 4.0, 4.0 / 3.0}) {
  if (image_width < 1 || image_height < 1)
    throw argument_error("random_resized_crop: image is " + std::to_string(image_width) + "x" +
                         std::to_string(image_height) + " (empty)");
  if (!(scale[0] >= 0.0) || !(scale[0] <= scale[1]) || !std::isfinite(scale[1]))
    throw argument_error("random_resized_crop: scale must be finite with 0 <= min <= max, got (" +
                         std::to_string(scale[0]) + ", " + std::to_string(scale[1]) + ")");
  if (!(ratio[0] > 0.0) || !(ratio[0] <= ratio[1]) || !std::isfinite(ratio[1]))
    throw argument_error("random_resized_crop: ratio must be finite with 0 < min <= max, got (" +
                         std::to_string(ratio[0]) + ", " + std::to_string(ratio[1]) + ")");
  const double area = double(image_width) * double(image_height);
  const double log_lo = std::log(ratio[0]), log_hi = std::log(ratio[1]);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const auto [w, h] = detail::draw_box_sides(rng, area, scale, log_lo, log_hi);
    if (w > 0 && w <= image_width && h > 0 && h <= image_height)
      return detail::place_box(rng, image_width, image_height, int(w), int(h));
  }
  // Fallback: centre crop, the ratio clamped into range.
  CropBox b;
  const double in_ratio = double(image_width) / double(image_height);
  if (in_ratio < ratio[0]) {
    b.width = image_width;
    b.height = int(detail::round_half_even(b.width / ratio[0]));
  } else if (in_ratio > ratio[1]) {
    b.height = image_height;
    b.width = int(detail::round_half_even(b.height * ratio[1]));
  } else {
    b.width = image_width;
    b.height = image_height;
  }
  b.width = std::max(1, std::min(b.width, image_width));
  b.height = std::max(1, std::min(b.height, image_height));
  b.top = (image_height - b.height) / 2;
  b.left = (image_width - b.width) / 2;
  return b;
}

/// torchvision's RandomResizedCrop(size=(height, width), scale, ratio,
/// interpolation) on a PIL image: crop random_resized_crop_box(...), then
/// vit::resize (Pillow's resize, bit-exact) to width x height.
inline Image random_resized_crop(const Image& in, int width, int height, std::mt19937_64& rng,
                                 Interpolation filter = Interpolation::bilinear,
                                 std::array<double, 2> scale = {0.08, 1.0},
                                 std::array<double, 2> ratio = {3.0 / 4.0, 4.0 / 3.0}) {
  vit::detail::check_image(in, "random_resized_crop");
  vit::detail::check_output_size(width, height, "random_resized_crop");
  const CropBox b = random_resized_crop_box(in.width, in.height, rng, scale, ratio);
  return resize(crop(in, b.left, b.top, b.width, b.height), width, height, filter);
}

/// timm's RandomErasing (mode "pixel", one box): with probability p, up to
/// 10 tries of an area fraction s ~ U(scale) and an aspect ratio
/// r = exp(U(log ratio)), h = round(sqrt(A * s * r)), w = round(sqrt(A * s / r));
/// the first box smaller than the image (w < W, h < H) is placed at
/// top = random_below(H - h + 1), left = random_below(W - w + 1) and filled with
/// uniform random bytes, fresh for every pixel and channel. timm fills with
/// standard-normal values after normalisation; uniform bytes have about the
/// same spread (std 74 of 255) and need no knowledge of mean and std here.
/// Draws one number when it does not erase. Throws argument_error for an
/// empty image, p outside [0, 1] or a bad scale / ratio range.
inline Image random_erasing(const Image& in, std::mt19937_64& rng, double p = 0.25,
                            std::array<double, 2> scale = {0.02, 1.0 / 3.0},
                            std::array<double, 2> ratio = {0.3, 1.0 / 0.3}) {
  vit::detail::check_image(in, "random_erasing");
  if (!(p >= 0.0 && p <= 1.0))
    throw argument_error("random_erasing: p must be in [0, 1], got " + std::to_string(p));
  if (!(scale[0] >= 0.0) || !(scale[0] <= scale[1]) || !(scale[1] <= 1.0))
    throw argument_error("random_erasing: scale must satisfy 0 <= min <= max <= 1, got (" +
                         std::to_string(scale[0]) + ", " + std::to_string(scale[1]) + ")");
  if (!(ratio[0] > 0.0) || !(ratio[0] <= ratio[1]) || !std::isfinite(ratio[1]))
    throw argument_error("random_erasing: ratio must be finite with 0 < min <= max, got (" +
                         std::to_string(ratio[0]) + ", " + std::to_string(ratio[1]) + ")");
  Image out = in;
  if (!(random_unit(rng) < p)) return out;
  const double area = double(in.width) * double(in.height);
  const double log_lo = std::log(ratio[0]), log_hi = std::log(ratio[1]);
  for (int attempt = 0; attempt < 10; ++attempt) {
    // timm puts r on the height here (torchvision's crop puts it on the width).
    const auto [h, w] = detail::draw_box_sides(rng, area, scale, log_lo, log_hi);
    if (!(w < in.width && h < in.height)) continue;
    const CropBox b = detail::place_box(rng, in.width, in.height, int(w), int(h));
    for (int y = b.top; y < b.top + b.height; ++y)
      for (int x = b.left; x < b.left + b.width; ++x) {
        const std::uint64_t r = rng();  // one draw: the pixel's three bytes
        out.at(x, y, 0) = std::uint8_t(r >> 56);
        out.at(x, y, 1) = std::uint8_t(r >> 48);
        out.at(x, y, 2) = std::uint8_t(r >> 40);
      }
    break;
  }
  return out;
}

// --- transforms for make_batch -----------------------------------------------------------

/// Evaluation: vit::eval_transform(im, data) (resize, then centre crop to
/// data.input_size, as timm's eval transform); draws nothing from the generator.
/// Throws argument_error now for an unknown interpolation.
inline Transform make_eval_transform(const DataConfig& data) {
  parse_interpolation(data.interpolation);
  return [data](const Image& im, std::mt19937_64&) { return eval_transform(im, data); };
}

/// CIFAR-style training: random_crop to the image's own size with `padding`,
/// random_horizontal_flip (p = 0.5), then a resize to image_size x image_size
/// with `filter` if the image is not that size already, then random_erasing
/// with probability `erase_p` (none by default).
inline Transform make_cifar_train_transform(int image_size = 32, int padding = 4,
                                            Interpolation filter = Interpolation::bilinear,
                                            double erase_p = 0.0) {
  vit::detail::check_output_size(image_size, image_size, "make_cifar_train_transform");
  if (padding < 0)
    throw argument_error("make_cifar_train_transform: padding must be >= 0, got " +
                         std::to_string(padding));
  if (!(erase_p >= 0.0 && erase_p <= 1.0))
    throw argument_error("make_cifar_train_transform: erase_p must be in [0, 1], got " +
                         std::to_string(erase_p));
  return [=](const Image& im, std::mt19937_64& rng) {
    Image out = random_horizontal_flip(random_crop(im, im.width, im.height, padding, rng), rng);
    if (out.width != image_size || out.height != image_size)
      out = resize(out, image_size, image_size, filter);
    if (erase_p > 0.0) out = random_erasing(out, rng, erase_p);
    return out;
  };
}

/// ImageNet-style training: random_resized_crop to image_size x image_size,
/// then random_horizontal_flip (p = 0.5), then random_erasing with
/// probability `erase_p` (none by default).
inline Transform make_train_transform(int image_size,
                                      Interpolation filter = Interpolation::bilinear,
                                      std::array<double, 2> scale = {0.08, 1.0},
                                      std::array<double, 2> ratio = {3.0 / 4.0, 4.0 / 3.0},
                                      double erase_p = 0.0) {
  vit::detail::check_output_size(image_size, image_size, "make_train_transform");
  std::mt19937_64 probe(0);
  random_resized_crop_box(1, 1, probe, scale, ratio);  // validates scale and ratio now
  if (!(erase_p >= 0.0 && erase_p <= 1.0))
    throw argument_error("make_train_transform: erase_p must be in [0, 1], got " +
                         std::to_string(erase_p));
  return [=](const Image& im, std::mt19937_64& rng) {
    Image out = random_horizontal_flip(
        random_resized_crop(im, image_size, image_size, rng, filter, scale, ratio), rng);
    if (erase_p > 0.0) out = random_erasing(out, rng, erase_p);
    return out;
  };
}

}  // namespace data
}  // namespace vit
