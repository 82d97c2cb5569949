// vit/position_embedding.hpp - position tables: resampling a learned table to
// another grid, and the fixed 2-D sin-cos table.
#pragma once

#include <cmath>
#include <vector>

#include "vit/tensor.hpp"

namespace vit {
namespace detail {

/// Keys' cubic convolution kernel with a = -0.5 (the one Pillow and torch's
/// antialiased bicubic use).
inline double keys_cubic(double x) {
  constexpr double a = -0.5;
  x = std::abs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

/// Resampling weights from `in` samples to `out` (antialiased bicubic,
/// align_corners=false): a dense [out, in] matrix, rows sum to 1. When
/// shrinking, the kernel is widened by in/out (antialiasing); taps that fall
/// outside the input are dropped and the rest renormalised, as torch's
/// interpolate(mode='bicubic', antialias=True) and Pillow do.
inline Matrix<double> bicubic_antialias_weights(Index in, Index out) {
  Matrix<double> w = Matrix<double>::Zero(out, in);
  const double scale = double(in) / double(out);
  const double widen = scale > 1.0 ? scale : 1.0;
  const double support = 2.0 * widen;
  for (Index i = 0; i < out; ++i) {
    const double center = (double(i) + 0.5) * scale;
    const Index lo = std::max<Index>(Index(center - support + 0.5), 0);
    const Index hi = std::min<Index>(Index(center + support + 0.5), in);
    double total = 0.0;
    for (Index j = lo; j < hi; ++j) {
      w(i, j) = keys_cubic((double(j) - center + 0.5) / widen);
      total += w(i, j);
    }
    if (total != 0.0) w.row(i) /= total;
  }
  return w;
}

}  // namespace detail

/// Resizes a [from*from, D] grid table (row-major grid order) to
/// [to*to, D], separably: along x, then along y. Computed in Scalar like the
/// reference (timm resamples in the table's dtype).
template <class Scalar>
Matrix<Scalar> resample_grid(const MatrixCRef<Scalar>& table, Index from, Index to) {
  if (table.rows() != from * from)
    throw argument_error("resample_grid: table has " + std::to_string(table.rows()) +
                         " rows, expected " + std::to_string(from * from));
  if (from == to) return table;
  const Index d = table.cols();
  const Matrix<Scalar> w = detail::bicubic_antialias_weights(from, to).template cast<Scalar>();
  // Along x: for each input row y, [to, D] = w * [from, D].
  Matrix<Scalar> horizontal(from * to, d);
  for (Index y = 0; y < from; ++y)
    horizontal.middleRows(y * to, to).noalias() = w * table.middleRows(y * from, from);
  // Along y: out(yo, x) = sum_yi w(yo, yi) * horizontal(yi, x).
  Matrix<Scalar> out = Matrix<Scalar>::Zero(to * to, d);
  for (Index yo = 0; yo < to; ++yo)
    for (Index yi = 0; yi < from; ++yi)
      if (w(yo, yi) != Scalar(0))
        out.middleRows(yo * to, to) += w(yo, yi) * horizontal.middleRows(yi * to, to);
  return out;
}

/// The fixed 2-D sin-cos table in MAE's layout, [grid*grid, D] (D % 4 == 0).
/// For the patch at column x, row y and omega_i = 10000^(-i / (D/4)):
/// features [0, D/4) sin(x omega), [D/4, D/2) cos(x omega), then the same
/// for y in [D/2, D). Computed in double, then cast.
template <class Scalar>
Matrix<Scalar> sincos_table(Index grid, Index dim) {
  if (dim % 4 != 0)
    throw argument_error("sincos_table: embed_dim " + std::to_string(dim) +
                         " is not divisible by 4");
  const Index quarter = dim / 4;
  Matrix<Scalar> table(grid * grid, dim);
  for (Index y = 0; y < grid; ++y)
    for (Index x = 0; x < grid; ++x)
      for (Index i = 0; i < quarter; ++i) {
        const double omega = 1.0 / std::pow(10000.0, double(i) / double(quarter));
        const Index r = y * grid + x;
        table(r, i) = Scalar(std::sin(double(x) * omega));
        table(r, quarter + i) = Scalar(std::cos(double(x) * omega));
        table(r, 2 * quarter + i) = Scalar(std::sin(double(y) * omega));
        table(r, 3 * quarter + i) = Scalar(std::cos(double(y) * omega));
      }
  return table;
}

}  // namespace vit
