// vit/attention_map.hpp - where a ViT looks: attention rollout, the class
// token's attention per block and head, and heat maps drawn over an image.
//
//   vit::Output<float> out;
//   model.forward(images, out, {/*attention=*/true});
//   auto maps = vit::attention_maps(out, model.architecture(), 0);
//   vit::Image shown = vit::heatmap_overlay(photo, maps.rollout, 0.5f);
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <vector>

#include "vit/config.hpp"
#include "vit/error.hpp"
#include "vit/image.hpp"
#include "vit/tensor.hpp"
#include "vit/vision_transformer.hpp"

namespace vit {

/// Attention maps of one image, over the patch grid.
template <class Scalar>
struct AttentionMaps {
  /// (grid, grid) attention rollout: how much the class token's final state
  /// draws on each patch through all blocks (row-major grid order; without a
  /// class token, the mean over the patch tokens' final states).
  Matrix<Scalar> rollout;
  /// depth x (heads, grid*grid): per block and head, the class token's
  /// attention to each patch, row-major grid order. The prefix tokens' share
  /// is left out, so a row sums to 1 minus the attention to the prefix tokens.
  std::vector<Matrix<Scalar>> cls_attention;
};

namespace detail {

// Checks out.attention against the architecture and the image index; returns
// the batch size N. `fn` names the public function in the messages.
template <class Scalar>
Index check_attention(const Output<Scalar>& out, const Architecture& arch, Index image,
                      const std::string& fn) {
  if (const char* p = arch.problem()) throw argument_error(fn + ": invalid architecture: " + p);
  if (arch.depth == 0)
    throw argument_error(fn + ": the architecture has no blocks (depth 0), so no attention");
  if (out.attention.empty())
    throw argument_error(fn +
                         ": out.attention is empty; run forward() with "
                         "ForwardOptions::attention = true");
  if (out.attention.size() != std::size_t(arch.depth))
    throw argument_error(fn + ": out.attention has " + std::to_string(out.attention.size()) +
                         " blocks, the architecture has depth " + std::to_string(arch.depth));
  const Index t = arch.num_tokens(), per_image = Index(arch.num_heads) * t;
  Index batch = 0;
  for (std::size_t l = 0; l < out.attention.size(); ++l) {
    const Matrix<Scalar>& a = out.attention[l];
    // Each block holds (N*heads*T, T): N images, heads blocks of T query rows.
    if (a.cols() != t || a.rows() == 0 || a.rows() % per_image != 0)
      throw argument_error(fn + ": out.attention[" + std::to_string(l) + "] has shape " +
                           shape_string(a.rows(), a.cols()) +
                           ", expected [N*heads*T, T] with heads = " +
                           std::to_string(arch.num_heads) + ", T = " + std::to_string(t));
    const Index n = a.rows() / per_image;
    if (l == 0)
      batch = n;
    else if (n != batch)
      throw argument_error(fn + ": out.attention[" + std::to_string(l) + "] holds " +
                           std::to_string(n) + " images, out.attention[0] holds " +
                           std::to_string(batch));
  }
  if (image < 0 || image >= batch)
    throw argument_error(fn + ": image " + std::to_string(image) +
                         " is out of range for a batch of " + std::to_string(batch));
  return batch;
}

// Block l's attention of one image, averaged over heads, with the residual
// identity added and each row renormalised to sum 1: A' = (mean_h A_h + I) / rowsum, (T, T).
template <class Scalar>
Matrix<Scalar> residual_attention(const Matrix<Scalar>& probs, Index heads, Index t, Index image,
                                  std::size_t block, const std::string& fn) {
  Matrix<Scalar> a = Matrix<Scalar>::Zero(t, t);
  for (Index h = 0; h < heads; ++h) a += probs.middleRows((image * heads + h) * t, t);
  a /= Scalar(heads);
  a.diagonal().array() += Scalar(1);
  for (Index i = 0; i < t; ++i) {
    const Scalar s = a.row(i).sum();
    // Softmax rows are >= 0, so s >= 1; anything else is not attention.
    if (!(s > Scalar(0)) || !std::isfinite(s))
      throw argument_error(fn + ": out.attention[" + std::to_string(block) + "], image " +
                           std::to_string(image) + ", query " + std::to_string(i) +
                           ": head-mean attention plus identity sums to " + std::to_string(s) +
                           "; attention probabilities must be finite and non-negative");
    a.row(i) /= s;
  }
  return a;
}

// R = A'_L ... A'_1, (T, T); out.attention already checked.
template <class Scalar>
Matrix<Scalar> rollout(const Output<Scalar>& out, const Architecture& arch, Index image,
                       const std::string& fn) {
  const Index t = arch.num_tokens(), heads = arch.num_heads;
  Matrix<Scalar> r = residual_attention(out.attention[0], heads, t, image, 0, fn);
  // Later blocks multiply on the left: R_l = A'_l R_(l-1).
  for (std::size_t l = 1; l < out.attention.size(); ++l)
    r = residual_attention(out.attention[l], heads, t, image, l, fn) * r;
  return r;
}

// The query row a map is read from, restricted to the patch columns, (1, P):
// the class token's row, or without a class token the mean of the patch rows.
template <class Scalar>
RowVector<Scalar> patch_row(const MatrixCRef<Scalar>& m, const Architecture& arch) {
  const Index p = arch.num_patches();
  if (arch.class_token) return m.row(0).tail(p);         // skips class (and distillation) columns
  return m.bottomRows(p).rightCols(p).colwise().mean();  // no prefix tokens: all rows
}

}  // namespace detail

/// Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in
/// Transformers") of batch element `image`, over all tokens: (T, T), prefix
/// tokens first. Per block l, A'_l = (mean over heads of the attention + I),
/// each row renormalised to sum 1 (the identity stands for the residual
/// connection); R = A'_L * ... * A'_1. Row i of R says how token i's final
/// state mixes the input tokens; every row sums to 1.
///
/// `out` must come from forward() with ForwardOptions::attention = true on a
/// model of architecture `arch`. Throws argument_error when it holds no
/// attention, its shapes do not fit `arch`, or `image` is not in [0, N).
template <class Scalar>
Matrix<Scalar> attention_rollout(const Output<Scalar>& out, const Architecture& arch, Index image) {
  const std::string fn = "attention_rollout";
  detail::check_attention(out, arch, image, fn);
  return detail::rollout(out, arch, image, fn);
}

/// The attention maps of batch element `image` (see AttentionMaps).
///
/// rollout: the class token's row of attention_rollout(), patch columns only
/// (the class and distillation tokens are skipped), as a (grid, grid) map; it
/// sums to 1 minus the rollout's share of the prefix tokens. A model without a
/// class token (average pooling) has no token that speaks for the image, so
/// the map is the mean over the patch-token rows of R instead, matching the
/// pooled feature. cls_attention is read the same way from each block's
/// attention: the class token's query row, or without a class token the mean
/// over the patch query rows.
///
/// Note: identity attention (every token attends only to itself) gives
/// A' = I in every block and R = I, whose class row has no weight on the
/// patches: the rollout map is then all zero (heatmap() draws it flat).
///
/// Throws argument_error as attention_rollout() does.
template <class Scalar>
AttentionMaps<Scalar> attention_maps(const Output<Scalar>& out, const Architecture& arch,
                                     Index image) {
  const std::string fn = "attention_maps";
  detail::check_attention(out, arch, image, fn);
  const Index t = arch.num_tokens(), heads = arch.num_heads, grid = arch.grid_size();
  const Index p = arch.num_patches();

  AttentionMaps<Scalar> maps;
  const Matrix<Scalar> r = detail::rollout(out, arch, image, fn);    // (T, T)
  const RowVector<Scalar> row = detail::patch_row<Scalar>(r, arch);  // (1, P)
  // Patches are numbered row by row over the grid, so a row-major (grid, grid)
  // view of the P values is the map.
  maps.rollout = Eigen::Map<const Matrix<Scalar>>(row.data(), grid, grid);

  maps.cls_attention.reserve(out.attention.size());
  for (const Matrix<Scalar>& a : out.attention) {
    Matrix<Scalar> m(heads, p);  // (heads, P)
    for (Index h = 0; h < heads; ++h)
      m.row(h) = detail::patch_row<Scalar>(a.middleRows((image * heads + h) * t, t), arch);
    maps.cls_attention.push_back(std::move(m));
  }
  return maps;
}

// --- heat maps ----------------------------------------------------------------

namespace detail {

struct ColourStop {
  double t;
  double rgb[3];
};

// Control points of the heat colour map, linear in RGB between them. Dark
// blue -> cyan -> yellow -> red; lightness rises from the cold end to yellow
// (CIE L* about 13, 54, 83, 91), so low and middle values read in order even
// in grey; the hot end is a saturated red, darker than yellow but set apart by
// hue. (Not perceptually uniform, a simple "cold to hot" ramp.)
inline constexpr ColourStop heat_stops[] = {
    {0.00, {0, 0, 128}},    // dark blue
    {0.25, {0, 128, 255}},  // azure
    {0.45, {0, 230, 230}},  // cyan
    {0.70, {255, 230, 0}},  // yellow
    {1.00, {220, 0, 0}},    // red
};

inline std::uint8_t to_byte(double v) {
  return std::uint8_t(std::lround(std::clamp(v, 0.0, 255.0)));
}

// Checks a grid for heat maps and returns it min-max normalised to [0, 1]
// (all zero when constant, so a flat map never divides by zero).
template <class Derived>
Matrix<double> normalised_grid(const Eigen::MatrixBase<Derived>& grid, const char* fn) {
  if (grid.size() == 0) throw argument_error(std::string(fn) + ": the grid is empty");
  Matrix<double> g = grid.template cast<double>();
  if (!g.allFinite())
    throw argument_error(std::string(fn) + ": the grid has non-finite values (NaN or inf)");
  const double lo = g.minCoeff(), hi = g.maxCoeff();
  if (hi > lo)
    g = (g.array() - lo) / (hi - lo);
  else
    g.setZero();
  return g;
}

inline void check_size(int width, int height, const char* fn) {
  if (width <= 0 || height <= 0)
    throw argument_error(std::string(fn) + ": width and height must be positive, got " +
                         std::to_string(width) + " x " + std::to_string(height));
}

}  // namespace detail

/// The heat colour of t in [0, 1] (clamped; NaN counts as 0) as 8-bit RGB:
/// dark blue (0) -> azure -> cyan -> yellow -> red (1), see detail::heat_stops.
inline std::array<std::uint8_t, 3> heat_colour(double t) {
  if (!(t > 0.0)) t = 0.0;
  if (t > 1.0) t = 1.0;
  const auto& s = detail::heat_stops;
  std::size_t k = 1;
  while (k + 1 < std::size(s) && t > s[k].t) ++k;  // t in [s[k-1].t, s[k].t]
  const double w = (t - s[k - 1].t) / (s[k].t - s[k - 1].t);
  std::array<std::uint8_t, 3> c{};
  for (int i = 0; i < 3; ++i)
    c[std::size_t(i)] = detail::to_byte((1.0 - w) * s[k - 1].rgb[i] + w * s[k].rgb[i]);
  return c;
}

/// Bilinear resize of a (rows, cols) grid to (height, width), cells and
/// pixels aligned by their centres (half-pixel convention): pixel x samples
/// the grid at x' = (x + 0.5) * cols / width - 0.5, clamped to the edge cells.
/// No antialiasing when shrinking. Computed in double.
template <class Derived>
Matrix<typename Derived::Scalar> upsample_bilinear(const Eigen::MatrixBase<Derived>& grid,
                                                   int width, int height) {
  detail::check_size(width, height, "upsample_bilinear");
  if (grid.size() == 0) throw argument_error("upsample_bilinear: the grid is empty");
  const Index gh = grid.rows(), gw = grid.cols();
  // Source index pairs and weights along one axis: (i0, i1, weight of i1).
  struct Tap {
    Index i0, i1;
    double w;
  };
  auto taps = [](Index out, Index in) {
    std::vector<Tap> v(static_cast<std::size_t>(out));
    for (Index o = 0; o < out; ++o) {
      const double x =
          std::clamp((double(o) + 0.5) * double(in) / double(out) - 0.5, 0.0, double(in - 1));
      const Index i0 = std::min(Index(x), in - 1);
      v[std::size_t(o)] = {i0, std::min(i0 + 1, in - 1), x - double(i0)};
    }
    return v;
  };
  const std::vector<Tap> tx = taps(width, gw), ty = taps(height, gh);
  Matrix<typename Derived::Scalar> up(height, width);
  for (Index y = 0; y < height; ++y) {
    const Tap& a = ty[std::size_t(y)];
    for (Index x = 0; x < width; ++x) {
      const Tap& b = tx[std::size_t(x)];
      const double top = (1.0 - b.w) * double(grid(a.i0, b.i0)) + b.w * double(grid(a.i0, b.i1));
      const double bot = (1.0 - b.w) * double(grid(a.i1, b.i0)) + b.w * double(grid(a.i1, b.i1));
      up(y, x) = typename Derived::Scalar((1.0 - a.w) * top + a.w * bot);
    }
  }
  return up;
}

/// The heat map of a grid (e.g. AttentionMaps::rollout) as a width x height
/// image: min-max normalised to [0, 1] (a constant grid gives all 0, the cold
/// end), bilinearly upsampled (upsample_bilinear) and coloured by heat_colour().
template <class Derived>
Image heatmap(const Eigen::MatrixBase<Derived>& grid, int width, int height) {
  detail::check_size(width, height, "heatmap");
  const Matrix<double> up =
      upsample_bilinear(detail::normalised_grid(grid, "heatmap"), width, height);
  Image img(width, height);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      const std::array<std::uint8_t, 3> c = heat_colour(up(y, x));
      for (int ch = 0; ch < 3; ++ch) img.at(x, y, ch) = c[std::size_t(ch)];
    }
  return img;
}

/// `image` with the heat map of `grid` laid over it:
/// out = round((1 - alpha) * image + alpha * heatmap(grid, width, height)),
/// per channel. alpha 0 returns the image, alpha 1 the heat map. Throws
/// argument_error for an empty or inconsistent image, an empty or non-finite
/// grid, or alpha outside [0, 1].
template <class Derived>
Image heatmap_overlay(const Image& image, const Eigen::MatrixBase<Derived>& grid,
                      float alpha = 0.5f) {
  if (image.width <= 0 || image.height <= 0)
    throw argument_error("heatmap_overlay: the image is empty (" + std::to_string(image.width) +
                         " x " + std::to_string(image.height) + ")");
  const std::size_t n = std::size_t(image.width) * std::size_t(image.height) * 3;
  if (image.pixels.size() != n)
    throw argument_error("heatmap_overlay: the image has " + std::to_string(image.pixels.size()) +
                         " bytes, expected width * height * 3 = " + std::to_string(n));
  if (!(alpha >= 0.0f && alpha <= 1.0f))
    throw argument_error("heatmap_overlay: alpha must be in [0, 1], got " + std::to_string(alpha));
  Image out = heatmap(grid, image.width, image.height);
  const double a = alpha;
  for (std::size_t i = 0; i < n; ++i)
    out.pixels[i] =
        detail::to_byte((1.0 - a) * double(image.pixels[i]) + a * double(out.pixels[i]));
  return out;
}

}  // namespace vit
