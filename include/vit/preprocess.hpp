// vit/preprocess.hpp - from a decoded RGB image to a model input row.
//
//   vit::Image im = vit::load_image("cat.jpg");              // vit::image
//   vit::Matrix<float> x(1, 3 * S * S);
//   vit::preprocess<float>(im, loaded.info.data, x.row(0));  // resize, crop, normalise
//
// Everything here reproduces the Python references bit for bit:
//   * resize() is Pillow's Image.resize on 8-bit RGB (libImaging/Resample.c):
//     separable, fixed-point (22 fractional bits), antialiased when shrinking;
//   * center_crop() is torchvision's (rounding and zero padding);
//   * eval_transform() is timm's transforms_imagenet_eval (crop_mode "center")
//     or a plain resize to S x S (crop_mode "squash", Hugging Face);
//   * to_tensor() is torchvision's ToTensor + Normalize, in float32.
// Header-only; needs no image decoder.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "vit/config.hpp"
#include "vit/error.hpp"
#include "vit/image.hpp"
#include "vit/tensor.hpp"

namespace vit {

/// Resampling filters, named and defined as Pillow's (PIL.Image.Resampling).
enum class Interpolation { nearest, bilinear, bicubic, lanczos, box, hamming };

/// "nearest", "bilinear", "bicubic", "lanczos", "box" or "hamming" (timm /
/// torchvision InterpolationMode names); argument_error listing them otherwise.
inline Interpolation parse_interpolation(const std::string& name) {
  static const char* const names[] = {"nearest", "bilinear", "bicubic",
                                      "lanczos", "box",      "hamming"};
  for (int i = 0; i < 6; ++i)
    if (name == names[i]) return static_cast<Interpolation>(i);
  throw argument_error("unknown interpolation '" + name +
                       "' (known: nearest, bilinear, bicubic, lanczos, box, hamming)");
}

/// The name parse_interpolation accepts for `f`.
inline const char* interpolation_name(Interpolation f) {
  switch (f) {
    case Interpolation::nearest:
      return "nearest";
    case Interpolation::bilinear:
      return "bilinear";
    case Interpolation::bicubic:
      return "bicubic";
    case Interpolation::lanczos:
      return "lanczos";
    case Interpolation::box:
      return "box";
    case Interpolation::hamming:
      return "hamming";
  }
  return "?";
}

namespace detail {

/// Output images are held to the same limits as decoded ones (vit::load_image).
inline constexpr int kMaxOutputSide = 32768;
inline constexpr std::int64_t kMaxOutputPixels = std::int64_t{1} << 28;

/// argument_error unless `im` is non-empty and holds width * height * 3 bytes.
inline void check_image(const Image& im, const char* what) {
  if (im.width <= 0 || im.height <= 0)
    throw argument_error(std::string(what) + ": image is " + std::to_string(im.width) + "x" +
                         std::to_string(im.height) + " (empty)");
  if (im.pixels.size() != std::size_t(im.width) * std::size_t(im.height) * 3)
    throw argument_error(
        std::string(what) + ": pixel buffer holds " + std::to_string(im.pixels.size()) +
        " bytes, a " + std::to_string(im.width) + "x" + std::to_string(im.height) +
        " RGB image has " + std::to_string(std::size_t(im.width) * std::size_t(im.height) * 3));
}

/// argument_error unless width x height is a size an output image may have.
inline void check_output_size(int width, int height, const char* what) {
  if (width < 1 || height < 1 || width > kMaxOutputSide || height > kMaxOutputSide ||
      std::int64_t(width) * height > kMaxOutputPixels)
    throw argument_error(std::string(what) + ": output size " + std::to_string(width) + "x" +
                         std::to_string(height) + " is not in 1 .. " +
                         std::to_string(kMaxOutputSide) + " per side, at most " +
                         std::to_string(kMaxOutputPixels) + " pixels");
}

// Pillow's filters, with its exact floating-point expressions (the weights are
// rounded to 22 bits afterwards, so a different but equal formula could flip
// a last bit, and with it an output level).
inline double box_filter(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }

inline double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

inline constexpr double kPi = 3.14159265358979323846;

inline double hamming_filter(double x) {
  if (x < 0.0) x = -x;
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x = x * kPi;
  // Pillow writes 0.54f and 0.46f: float constants, widened to double.
  return std::sin(x) / x * (double(0.54f) + double(0.46f) * std::cos(x));
}

inline double bicubic_filter(double x) {
  constexpr double a = -0.5;  // Keys' cubic, as in Pillow (not PyTorch's -0.75)
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

inline double sinc_filter(double x) {
  if (x == 0.0) return 1.0;
  x = x * kPi;
  return std::sin(x) / x;
}

inline double lanczos_filter(double x) {
  // Truncated sinc, 3 lobes.
  if (-3.0 <= x && x < 3.0) return sinc_filter(x) * sinc_filter(x / 3);
  return 0.0;
}

struct ResampleFilter {
  double (*weight)(double);
  double support;  ///< half-width at scale 1
};

inline ResampleFilter resample_filter(Interpolation f) {
  switch (f) {
    case Interpolation::box:
      return {box_filter, 0.5};
    case Interpolation::bilinear:
      return {bilinear_filter, 1.0};
    case Interpolation::hamming:
      return {hamming_filter, 1.0};
    case Interpolation::bicubic:
      return {bicubic_filter, 2.0};
    case Interpolation::lanczos:
      return {lanczos_filter, 3.0};
    case Interpolation::nearest:
      break;
  }
  throw argument_error("resample_filter: nearest has no filter");
}

inline constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's PRECISION_BITS

/// The taps of a 1-D resampling from `in_size` to `out_size` samples: output i
/// reads inputs first[i] .. first[i] + count[i] - 1 with weights
/// weights[i * ksize + k], 22-bit fixed point (Pillow's precompute_coeffs and
/// normalize_coeffs_8bpc).
struct Taps {
  int ksize = 0;
  std::vector<int> first, count;      // [out_size]
  std::vector<std::int32_t> weights;  // [out_size, ksize]
};

inline Taps make_taps(int in_size, int out_size, const ResampleFilter& filter) {
  const double scale = double(in_size) / out_size;
  // Shrinking widens the kernel by the scale (antialiasing); enlarging does not.
  const double filterscale = std::max(scale, 1.0);
  const double support = filter.support * filterscale;
  Taps t;
  t.ksize = int(std::ceil(support)) * 2 + 1;
  t.first.resize(std::size_t(out_size));
  t.count.resize(std::size_t(out_size));
  t.weights.assign(std::size_t(out_size) * std::size_t(t.ksize), 0);
  std::vector<double> w(std::size_t(t.ksize));
  const double ss = 1.0 / filterscale;
  for (int i = 0; i < out_size; ++i) {
    const double center = (i + 0.5) * scale;
    const int lo = std::max(int(center - support + 0.5), 0);  // int(): truncation, as in C
    const int hi = std::min(int(center + support + 0.5), in_size);
    const int n = std::min(hi - lo, t.ksize);
    double sum = 0.0;
    for (int k = 0; k < n; ++k) {
      w[std::size_t(k)] = filter.weight((k + lo - center + 0.5) * ss);
      sum += w[std::size_t(k)];
    }
    std::int32_t* out = &t.weights[std::size_t(i) * std::size_t(t.ksize)];
    for (int k = 0; k < n; ++k) {
      const double v = sum != 0.0 ? w[std::size_t(k)] / sum : w[std::size_t(k)];
      // Round half away from zero, as Pillow does.
      const double fixed = v * (1 << kPrecisionBits);
      out[k] = std::int32_t(v < 0 ? -0.5 + fixed : 0.5 + fixed);
    }
    t.first[std::size_t(i)] = lo;
    t.count[std::size_t(i)] = std::max(n, 0);
  }
  return t;
}

/// Pillow's clip8: fixed-point sum (with its rounding half already added) to 0..255.
inline std::uint8_t clip8(std::int64_t acc) {
  if (acc >= (std::int64_t{1} << kPrecisionBits << 8)) return 255;
  if (acc <= 0) return 0;
  return std::uint8_t(acc >> kPrecisionBits);
}

/// One separable pass over rows [row0, row0 + rows) of `in` (row-major,
/// 3 channels): horizontal when `horizontal`, else vertical.
inline Image resample_pass(const Image& in, const Taps& t, bool horizontal, int row0, int rows) {
  const std::int64_t half = std::int64_t{1} << (kPrecisionBits - 1);
  if (horizontal) {
    // in: [H, W_in, 3] -> out: [rows, W_out, 3], 8-bit intermediate.
    const int out_w = int(t.first.size());
    Image out(out_w, rows);
    for (int y = 0; y < rows; ++y) {
      const std::uint8_t* src = &in.pixels[std::size_t(row0 + y) * std::size_t(in.width) * 3];
      std::uint8_t* dst = &out.pixels[std::size_t(y) * std::size_t(out_w) * 3];
      for (int x = 0; x < out_w; ++x) {
        const std::int32_t* k = &t.weights[std::size_t(x) * std::size_t(t.ksize)];
        const std::uint8_t* p = src + std::size_t(t.first[std::size_t(x)]) * 3;
        std::int64_t a0 = half, a1 = half, a2 = half;
        for (int j = 0; j < t.count[std::size_t(x)]; ++j, p += 3) {
          a0 += std::int64_t(p[0]) * k[j];
          a1 += std::int64_t(p[1]) * k[j];
          a2 += std::int64_t(p[2]) * k[j];
        }
        dst[3 * x + 0] = clip8(a0);
        dst[3 * x + 1] = clip8(a1);
        dst[3 * x + 2] = clip8(a2);
      }
    }
    return out;
  }
  // in: [H_in, W, 3] -> out: [H_out, W, 3]; taps index rows of `in` from row0.
  const int out_h = int(t.first.size());
  const std::size_t stride = std::size_t(in.width) * 3;
  Image out(in.width, out_h);
  for (int y = 0; y < out_h; ++y) {
    const std::int32_t* k = &t.weights[std::size_t(y) * std::size_t(t.ksize)];
    const std::uint8_t* src = &in.pixels[std::size_t(t.first[std::size_t(y)] - row0) * stride];
    std::uint8_t* dst = &out.pixels[std::size_t(y) * stride];
    for (std::size_t i = 0; i < stride; ++i) {
      std::int64_t a = half;
      for (int j = 0; j < t.count[std::size_t(y)]; ++j)
        a += std::int64_t(src[j * stride + i]) * k[j];
      dst[i] = clip8(a);
    }
  }
  return out;
}

/// Pillow's NEAREST resize (ImagingScaleAffine): the source coordinate of
/// output x is int(x0 + x * step) with x0 = step / 2, accumulated by repeated
/// addition in double exactly as Pillow does (this decides ties).
inline Image resize_nearest(const Image& in, int width, int height) {
  auto source_index = [](int in_size, int out_size) {
    const double step = double(in_size) / out_size;
    std::vector<int> idx(std::size_t(out_size), -1);
    double pos = 0.0 + step * 0.5;
    for (int i = 0; i < out_size; ++i) {
      const int s = pos < 0.0 ? -1 : int(pos);
      if (s >= 0 && s < in_size) idx[std::size_t(i)] = s;  // else: left black, as Pillow
      pos += step;
    }
    return idx;
  };
  const std::vector<int> xs = source_index(in.width, width);
  const std::vector<int> ys = source_index(in.height, height);
  Image out(width, height);
  for (int y = 0; y < height; ++y) {
    if (ys[std::size_t(y)] < 0) continue;
    for (int x = 0; x < width; ++x) {
      if (xs[std::size_t(x)] < 0) continue;
      for (int c = 0; c < 3; ++c)
        out.at(x, y, c) = in.at(xs[std::size_t(x)], ys[std::size_t(y)], c);
    }
  }
  return out;
}

/// Python's int(round(v / 2)) for an integer v >= 0: halves go to the even neighbour.
inline int half_round_even(int v) {
  int h = v / 2;
  if (v % 2 == 1 && h % 2 == 1) ++h;
  return h;
}

}  // namespace detail

/// Pillow's `Image.resize((width, height), filter)` on an 8-bit RGB image,
/// bit-exact. Same size: a copy. Otherwise the horizontal pass runs first (into
/// an 8-bit intermediate), then the vertical one; a pass whose dimension does
/// not change is skipped, as in Pillow. Throws argument_error for an empty or
/// inconsistent image or an output size outside 1 .. 32768 per side / 2^28 pixels.
inline Image resize(const Image& in, int width, int height, Interpolation filter) {
  detail::check_image(in, "resize");
  detail::check_output_size(width, height, "resize");
  if (width == in.width && height == in.height) return in;
  if (filter == Interpolation::nearest) return detail::resize_nearest(in, width, height);

  const detail::ResampleFilter f = detail::resample_filter(filter);
  const bool horizontal = width != in.width;
  const bool vertical = height != in.height;
  if (!vertical) {
    const detail::Taps th = detail::make_taps(in.width, width, f);
    return detail::resample_pass(in, th, true, 0, in.height);
  }
  const detail::Taps tv = detail::make_taps(in.height, height, f);
  if (!horizontal) return detail::resample_pass(in, tv, false, 0, in.height);
  // The horizontal pass only needs the rows the vertical taps read.
  const int row0 = tv.first.front();
  const int row1 = tv.first.back() + tv.count.back();
  const detail::Taps th = detail::make_taps(in.width, width, f);
  const Image tmp = detail::resample_pass(in, th, true, row0, row1 - row0);
  return detail::resample_pass(tmp, tv, false, row0, row1 - row0);
}

/// torchvision's `CenterCrop((height, width))` on a PIL image: offsets
/// int(round((H - height) / 2)) and int(round((W - width) / 2)) with Python's
/// round (halves to even: a margin of 149 gives 74, of 151 gives 76). Where the
/// crop is larger than the image, the image is first padded with black,
/// floor(d / 2) before and ceil(d / 2) after (d = crop - size).
inline Image center_crop(const Image& in, int width, int height) {
  detail::check_image(in, "center_crop");
  detail::check_output_size(width, height, "center_crop");
  // Offset of the crop in the (padded) image, then of the padding: source = out + off - pad.
  const int pad_x = width > in.width ? (width - in.width) / 2 : 0;
  const int pad_y = height > in.height ? (height - in.height) / 2 : 0;
  const int off_x = width > in.width ? 0 : detail::half_round_even(in.width - width);
  const int off_y = height > in.height ? 0 : detail::half_round_even(in.height - height);
  Image out(width, height);  // zeros: the padding
  for (int y = 0; y < height; ++y) {
    const int sy = y + off_y - pad_y;
    if (sy < 0 || sy >= in.height) continue;
    const int x_begin = std::max(0, pad_x - off_x);
    const int x_end = std::min(width, in.width + pad_x - off_x);
    if (x_end <= x_begin) continue;
    std::copy_n(&in.pixels[(std::size_t(sy) * std::size_t(in.width) +
                            std::size_t(x_begin + off_x - pad_x)) *
                           3],
                std::size_t(x_end - x_begin) * 3,
                &out.pixels[(std::size_t(y) * std::size_t(width) + std::size_t(x_begin)) * 3]);
  }
  return out;
}

/// The size eval_transform resizes to before cropping: the shorter side
/// becomes floor(input_size / crop_pct), the longer one
/// int(short_target * long / short) (truncated, as torchvision's Resize does).
/// Throws argument_error for a bad configuration (see eval_transform).
inline std::array<int, 2> eval_resize_size(int image_width, int image_height,
                                           const DataConfig& data) {
  if (data.input_size < 1 || data.input_size > detail::kMaxOutputSide)
    throw argument_error("DataConfig: input_size " + std::to_string(data.input_size) +
                         " is not in 1 .. " + std::to_string(detail::kMaxOutputSide));
  // timm accepts crop_pct > 1 (the centre crop then pads); 0, negative, NaN and
  // infinity make no size.
  if (!(data.crop_pct > 0.0) || !std::isfinite(data.crop_pct))
    throw argument_error("DataConfig: crop_pct must be a finite number > 0, got " +
                         std::to_string(data.crop_pct));
  if (data.crop_mode == "squash") return {data.input_size, data.input_size};
  if (data.crop_mode != "center")
    throw argument_error("DataConfig: unknown crop_mode '" + data.crop_mode +
                         "' (known: center, squash)");
  if (image_width < 1 || image_height < 1)
    throw argument_error("eval_transform: image is " + std::to_string(image_width) + "x" +
                         std::to_string(image_height) + " (empty)");
  // Decided in double before converting, so absurd values cannot overflow an int.
  const double target = std::floor(double(data.input_size) / data.crop_pct);
  const int short_side = std::min(image_width, image_height);
  const int long_side = std::max(image_width, image_height);
  const double long_target = std::trunc(target * long_side / short_side);
  if (target < 1 || long_target > detail::kMaxOutputSide)
    throw argument_error("DataConfig: crop_pct " + std::to_string(data.crop_pct) +
                         " with input_size " + std::to_string(data.input_size) +
                         " would resize a " + std::to_string(image_width) + "x" +
                         std::to_string(image_height) + " image to a shorter side of " +
                         std::to_string(target) + ", out of range");
  // Python: int(size * long / short), the product exact, one rounded division.
  const int s = int(target);
  const int l = int(double(std::int64_t(s) * long_side) / double(short_side));
  if (image_width <= image_height) return {s, l};
  return {l, s};
}

/// timm's evaluation transform on an 8-bit image, before normalisation:
///   crop_mode "center" (timm transforms_imagenet_eval, torchvision): resize
///     to eval_resize_size() with data.interpolation, then center_crop to
///     input_size x input_size;
///   crop_mode "squash" (Hugging Face ViTImageProcessor): resize both sides
///     straight to input_size, no crop; crop_pct is not used. (timm's own
///     "squash" resizes to floor(input_size / crop_pct) and then crops; the
///     two agree for crop_pct = 1, which is what Hugging Face configs give.)
/// Throws argument_error naming the field for a bad input_size, crop_pct
/// (<= 0, NaN, infinite, or making an absurd size), crop_mode or interpolation.
inline Image eval_transform(const Image& in, const DataConfig& data) {
  detail::check_image(in, "eval_transform");
  const Interpolation filter = parse_interpolation(data.interpolation);
  const std::array<int, 2> size = eval_resize_size(in.width, in.height, data);
  Image resized = resize(in, size[0], size[1], filter);
  if (data.crop_mode == "squash") return resized;
  return center_crop(resized, data.input_size, data.input_size);
}

/// Normalises an 8-bit image into out[0, 3 * H * W), channel planes one after
/// another (CHW, i.e. one NCHW image): (u8 / 255 - mean[c]) / std[c], computed
/// in float32 in exactly that order like torchvision's ToTensor + Normalize (so
/// the result is bit-identical to it), then converted to Scalar.
template <class Scalar>
void to_tensor(const Image& image, const std::array<double, 3>& mean,
               const std::array<double, 3>& std, Scalar* out) {
  detail::check_image(image, "to_tensor");
  for (int c = 0; c < 3; ++c)
    if (!std::isfinite(mean[std::size_t(c)]) || !std::isfinite(std[std::size_t(c)]) ||
        float(std[std::size_t(c)]) == 0.0f)
      throw argument_error("to_tensor: mean and std must be finite and std non-zero (channel " +
                           std::to_string(c) + ": mean " + std::to_string(mean[std::size_t(c)]) +
                           ", std " + std::to_string(std[std::size_t(c)]) + ")");
  const std::size_t plane = std::size_t(image.width) * std::size_t(image.height);
  for (std::size_t c = 0; c < 3; ++c) {
    // 256 possible inputs per channel: a table, each entry as the reference computes it.
    Scalar table[256];
    const float m = float(mean[c]), s = float(std[c]);
    for (int v = 0; v < 256; ++v) {
      const float x = float(v) / 255.f;
      table[v] = static_cast<Scalar>((x - m) / s);
    }
    const std::uint8_t* src = image.pixels.data() + c;
    Scalar* dst = out + c * plane;
    for (std::size_t i = 0; i < plane; ++i) dst[i] = table[src[3 * i]];
  }
}

/// eval_transform + to_tensor into one row of an [N, 3 * S * S] input matrix
/// (S = data.input_size), e.g. `preprocess<float>(im, data, x.row(n))`.
/// Throws argument_error if the row does not have 3 * S * S columns.
template <class Scalar>
void preprocess(const Image& image, const DataConfig& data, Eigen::Ref<RowVector<Scalar>> row) {
  const Index n = Index(3) * data.input_size * data.input_size;
  if (data.input_size < 1 || row.size() != n)
    throw argument_error("preprocess: the row has " + std::to_string(row.size()) +
                         " values, input_size " + std::to_string(data.input_size) + " needs 3 * " +
                         std::to_string(data.input_size) + "^2 = " + std::to_string(n));
  const Image ready = eval_transform(image, data);
  to_tensor(ready, data.mean, data.std, row.data());
}

}  // namespace vit
