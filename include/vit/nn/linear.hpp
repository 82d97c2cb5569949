// vit/nn/linear.hpp - fully connected layer, y = x W^T + b.
//
// A float layer can hold its weight packed (pack()) for gemm_packed (fp32),
// gemm_packed_bf16 or gemm_packed_int8: the plain matrix is then released,
// so the weight lives in memory once, and the forward pass runs the packed
// kernel with bias, residual add or GELU fused into it. Unpacked layers (and
// every double layer) go through nn::gemm.
#pragma once

#include <algorithm>
#include <string>
#include <type_traits>

#include "vit/error.hpp"
#include "vit/nn/activation.hpp"
#include "vit/nn/gemm.hpp"
#include "vit/nn/gemm_avx512.hpp"
#include "vit/nn/gemm_bf16.hpp"
#include "vit/nn/gemm_int8.hpp"
#include "vit/precision.hpp"
#include "vit/tensor.hpp"

namespace vit::nn {

/// How a packed product of an [m, n] output and depth k is cut into tasks for
/// `threads` threads: one block for one thread or a small product, else
/// blocks of about 112 rows (whole 14-row micro-panels) by 256 columns (whole
/// 32-column weight panels). Each task packs its rows of the input again, so
/// blocks are wide (that repacking costs ~1/cols of the product); rows are
/// split as well so that two threads share even a single image's narrow
/// products. Every element sums over k in the same order whatever the blocks
/// are, so any thread count gives bit-identical results.
struct PackedTiling {
  Index tile_m, tile_n, tiles_m, tiles_n;
  Index count() const { return tiles_m * tiles_n; }

  PackedTiling(Index m, Index n, Index k, int threads) {
    constexpr Index small = Index(1) << 22;  // multiply-adds: not worth a split
    if (threads == 1 || m == 0 || m * n * std::max<Index>(k, 1) <= small) {
      tile_m = m;
      tile_n = n;
      tiles_m = tiles_n = 1;
      return;
    }
    auto ceil_div = [](Index p, Index q) { return (p + q - 1) / q; };
    tile_m = std::min(m, ceil_div(ceil_div(m, ceil_div(m, 112)), 14) * 14);
    tile_n = 256;
    tiles_m = ceil_div(m, tile_m);
    tiles_n = ceil_div(n, tile_n);
  }

  /// block(i0, rows, j0, j1, thread) for every task, on ctx's threads.
  /// Consecutive tasks share a column block: the threads read the same
  /// weight panels at about the same time.
  template <class Scalar, class Block>
  void run(Index m, Index n, const GemmContext<Scalar>& ctx, Block&& block) const {
    if (count() == 1) return block(Index(0), m, Index(0), n, 0);
    ctx.run(count(), [&](Index task, int thread) {
      const Index i0 = (task % tiles_m) * tile_m, j0 = (task / tiles_m) * tile_n;
      block(i0, std::min(tile_m, m - i0), j0, std::min(n, j0 + tile_n), thread);
    });
  }
};

/// c (op)= a b^T + bias with a packed fp32 weight b [n, k], on ctx's threads
/// (see PackedTiling; each thread uses its own scratch).
inline void gemm_packed(const MatrixCRef<float>& a, const PackedWeight& b, MatrixRef<float> c,
                        const float* bias, Epilogue ep, const GemmContext<float>& ctx) {
  const Index m = a.rows(), n = b.rows();
  const PackedTiling t(m, n, b.cols(), ctx.threads());
  t.run(m, n, ctx, [&](Index i0, Index rows, Index j0, Index j1, int thread) {
    float* scratch = ctx.scratch(thread).reserve(gemm_packed_scratch_size(rows, b.cols()));
    gemm_packed(a.middleRows(i0, rows), b, c.middleRows(i0, rows), bias, ep, scratch, j0, j1);
  });
}

/// Scratch floats each thread needs for the threaded gemm_packed above.
inline std::size_t gemm_packed_scratch_size(Index m, Index n, Index k, int threads) {
  const PackedTiling t(m, n, k, threads);
  return std::max(gemm_packed_scratch_size(t.tile_m, k),
                  gemm_packed_scratch_size(m - (t.tiles_m - 1) * t.tile_m, k));
}

/// A Linear layer in PyTorch's layout.
///   weight: [out, in]   bias: [out] (size 0 when the layer has no bias)
/// Inputs are token rows [rows, in]; outputs [rows, out].
template <class Scalar>
struct Linear {
  Matrix<Scalar> weight;   // (out, in); empty while the layer is packed
  RowVector<Scalar> bias;  // (out) or empty

  Linear() = default;
  Linear(Index out, Index in, bool has_bias)
      : weight(Matrix<Scalar>::Zero(out, in)),
        bias(has_bias ? RowVector<Scalar>::Zero(out) : RowVector<Scalar>()) {}

  Index in_features() const { return packed_ ? packed_cols_ : weight.cols(); }
  Index out_features() const { return packed_ ? packed_rows_ : weight.rows(); }
  bool has_bias() const { return bias.size() != 0; }

  /// True while the weight is held packed (see pack()).
  bool packed() const { return packed_; }
  /// The arithmetic of forward(): fp32 unless packed at lower precision.
  Precision precision() const { return packed_ ? precision_ : Precision::fp32; }

  /// Moves the weight into the packed layout of `p` and releases the plain
  /// matrix. Float layers only (a double layer throws argument_error).
  /// bf16 rounds the weight to bfloat16, int8 to 255 levels per output
  /// channel: pack(fp32) after unpack() keeps that rounding.
  void pack(Precision p = Precision::fp32) {
    if constexpr (!std::is_same_v<Scalar, float>) {
      throw argument_error(std::string("Linear::pack: packed weights are float only (asked for ") +
                           precision_name(p) + ")");
    } else {
      if (packed_) unpack();
      switch (p) {
        case Precision::fp32:
          f32_.pack(weight);
          break;
        case Precision::bf16:
          bf16_.pack(weight);
          break;
        case Precision::int8:
          int8_.pack(weight);
          break;
      }
      packed_rows_ = weight.rows();
      packed_cols_ = weight.cols();
      weight = Matrix<Scalar>();  // frees the plain copy
      precision_ = p;
      packed_ = true;
    }
  }

  /// Restores the plain weight (the values packed: bf16 / int8 keep their
  /// rounding).
  void unpack() {
    if (!packed_) return;
    if constexpr (std::is_same_v<Scalar, float>) {
      switch (precision_) {
        case Precision::fp32:
          weight = f32_.unpack();
          f32_ = PackedWeight();
          break;
        case Precision::bf16:
          weight = bf16_.unpack();
          bf16_ = PackedWeightBf16();
          break;
        case Precision::int8:
          weight = int8_.unpack();
          int8_ = PackedWeightInt8();
          break;
      }
    }
    packed_ = false;
  }

  /// Bytes of weight storage (plain or packed, without the bias).
  std::size_t weight_bytes() const {
    if (!packed_) return std::size_t(weight.size()) * sizeof(Scalar);
    switch (precision_) {
      case Precision::bf16:
        return bf16_.bytes();
      case Precision::int8:
        return int8_.bytes();
      default:
        return f32_.bytes();
    }
  }

  /// Scalars of GemmScratch each of ctx's threads needs for forward() of
  /// `rows` rows, whichever tasks it picks up.
  std::size_t scratch_size(Index rows, int threads) const {
    const Index n = out_features(), k = in_features();
    if (!packed_) return gemm_scratch_size<Scalar>(rows, n, k);
    const PackedTiling t(rows, n, k, threads);
    std::size_t size = 0;
    for (Index r : {t.tile_m, rows - (t.tiles_m - 1) * t.tile_m}) {
      switch (precision_) {
        case Precision::fp32:
          size = std::max(size, gemm_packed_scratch_size(r, k));
          break;
        case Precision::bf16:
          size = std::max(size, gemm_packed_bf16_scratch_size(r, k));
          break;
        case Precision::int8:
          size = std::max(size, gemm_packed_int8_scratch_size(r, k));
          break;
      }
    }
    return size;
  }

  /// y = epilogue(x W^T + b): Epilogue::store writes y, accumulate adds onto
  /// it (the residual form), gelu applies exact GELU.
  /// x: [rows, in], y: [rows, out] (must not alias x).
  void forward(const MatrixCRef<Scalar>& x, MatrixRef<Scalar> y, const GemmContext<Scalar>& ctx,
               Epilogue ep = Epilogue::store) const {
    if (x.cols() != in_features())
      throw argument_error("Linear::forward: x has " + std::to_string(x.cols()) +
                           " columns, the layer takes " + std::to_string(in_features()));
    vit::detail::check_shape(y, x.rows(), out_features(), "Linear::forward: y");
    if constexpr (std::is_same_v<Scalar, float>) {
      if (packed_) return forward_packed(x, y, ctx, ep);
    }
    // Each tile starts from the bias (or the residual), then the product
    // accumulates onto it; GELU runs on the finished tile on the same thread.
    gemm_nt_fused<Scalar>(
        x, weight, y, ctx, Scalar(1),
        [this, ep](MatrixRef<Scalar> tile, Index col0) {
          if (ep == Epilogue::accumulate) {
            if (has_bias()) tile.rowwise() += bias.segment(col0, tile.cols());
          } else if (has_bias()) {
            tile.rowwise() = bias.segment(col0, tile.cols());
          } else {
            tile.setZero();
          }
        },
        [ep](MatrixRef<Scalar> tile, Index) {
          if (ep == Epilogue::gelu) activate<Scalar>(Activation::gelu_erf, tile);
        });
  }

  /// y += x W^T + b, the residual form used after attention and the MLP.
  void forward_add(const MatrixCRef<Scalar>& x, MatrixRef<Scalar> y,
                   const GemmContext<Scalar>& ctx) const {
    forward(x, y, ctx, Epilogue::accumulate);
  }

 private:
  // The packed product, cut into tasks for ctx's threads (see PackedTiling).
  void forward_packed(const MatrixCRef<Scalar>& x, MatrixRef<Scalar> y,
                      const GemmContext<Scalar>& ctx, Epilogue ep) const {
    const Index m = x.rows(), n = out_features(), k = in_features();
    const float* b = has_bias() ? bias.data() : nullptr;
    // rows [i0, i0 + rows) x columns [j0, j1) with the thread's scratch.
    auto block = [&](Index i0, Index rows, Index j0, Index j1, int thread) {
      const MatrixCRef<float> a = x.middleRows(i0, rows);
      MatrixRef<float> c = y.middleRows(i0, rows);
      GemmScratch<float>& s = ctx.scratch(thread);
      switch (precision_) {
        case Precision::fp32:
          gemm_packed(a, f32_, c, b, ep, s.reserve(gemm_packed_scratch_size(rows, k)), j0, j1);
          break;
        case Precision::bf16:
          gemm_packed_bf16(a, bf16_, c, b, ep, s.reserve(gemm_packed_bf16_scratch_size(rows, k)),
                           j0, j1);
          break;
        case Precision::int8:
          gemm_packed_int8(a, int8_, c, b, ep, s.reserve(gemm_packed_int8_scratch_size(rows, k)),
                           j0, j1);
          break;
      }
    };
    PackedTiling(m, n, k, ctx.threads()).run(m, n, ctx, block);
  }

  // The packed weight: the member of precision_ (the others stay empty).
  PackedWeight f32_;
  PackedWeightBf16 bf16_;
  PackedWeightInt8 int8_;
  Index packed_rows_ = 0, packed_cols_ = 0;
  Precision precision_ = Precision::fp32;
  bool packed_ = false;
};

}  // namespace vit::nn
