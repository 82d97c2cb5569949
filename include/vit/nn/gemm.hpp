// vit/nn/gemm.hpp - the one matrix-product interface every layer goes through.
//
// c (+)= alpha * a * b      (b row-major [k, n])
// c (+)= alpha * a * b^T    (b row-major [n, k], e.g. a Linear weight [out, in])
// c (+)= alpha * a^T * b    (a row-major [k, m]: weight gradients dy^T x)
//
// Keeping every product behind these functions lets faster kernels replace
// the implementation without touching the model code. The current
// implementation runs Eigen's blocked GEMM kernel with packing buffers that
// live in a GemmScratch the caller owns, so a product never allocates once
// the scratch has grown to the largest shape (Eigen's own operator* would
// allocate its packing buffers on the heap for large shapes).
//
// Threads: a product is cut into output tiles (blocks of columns of c, and of
// rows for large batches) that are computed independently, each with the
// scratch of the thread that runs it. The tiles depend on the shape alone,
// never on the number of threads, and one thread runs the same tiles one
// after the other: every thread count gives bit-identical results. A
// GemmContext says which threads (a ThreadPool) and scratches to use; a plain
// GemmScratch converts to a single-thread context.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cstddef>
#include <utility>

#include "vit/parallel.hpp"
#include "vit/tensor.hpp"

namespace vit::nn {

/// Packing memory for gemm(); grows to the largest product seen, then is reused.
template <class Scalar>
class GemmScratch {
 public:
  /// Makes room for `count` scalars; allocates only when it grows.
  Scalar* reserve(std::size_t count) {
    if (count > size_) {
      Eigen::internal::aligned_free(data_);
      data_ = nullptr;
      size_ = 0;
      data_ = static_cast<Scalar*>(Eigen::internal::aligned_malloc(count * sizeof(Scalar)));
      size_ = count;
    }
    return data_;
  }
  GemmScratch() = default;
  GemmScratch(const GemmScratch&) : GemmScratch() {}  // scratch is never shared
  GemmScratch& operator=(const GemmScratch&) { return *this; }
  GemmScratch(GemmScratch&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  GemmScratch& operator=(GemmScratch&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    return *this;
  }
  ~GemmScratch() { Eigen::internal::aligned_free(data_); }
  std::size_t capacity() const { return size_; }

 private:
  Scalar* data_ = nullptr;
  std::size_t size_ = 0;
};

/// Where products run: a ThreadPool (or none: the calling thread) and one
/// GemmScratch per pool thread, the pool's thread number picking the scratch.
/// Cheap to copy (two pointers); the pool and scratches stay the caller's.
template <class Scalar>
class GemmContext {
 public:
  /// Single thread: everything runs on the caller with this scratch.
  GemmContext(GemmScratch<Scalar>& scratch) noexcept : scratch_(&scratch) {}  // NOLINT: implicit

  /// `scratches` points at pool->threads() scratches (one when pool is null).
  GemmContext(ThreadPool* pool, GemmScratch<Scalar>* scratches) noexcept
      : pool_(pool), scratch_(scratches) {}

  /// Threads that share the work.
  int threads() const noexcept { return pool_ ? pool_->threads() : 1; }

  /// The scratch of pool thread `thread` (0 is the caller).
  GemmScratch<Scalar>& scratch(int thread) const noexcept { return scratch_[thread]; }

  /// fn(task, thread) for every task in [0, count), on the pool's threads
  /// (see ThreadPool::run), or one after the other on the caller (thread 0).
  template <class F>
  void run(Index count, F&& fn) const {
    if (pool_)
      pool_->run(count, fn);
    else
      for (Index t = 0; t < count; ++t) fn(t, 0);
  }

  /// fn(begin, count) over [0, rows) cut into blocks of `block` rows, the
  /// blocks spread over the threads as run() does.
  template <class F>
  void for_rows(Index rows, F&& fn, Index block = 32) const {
    run((rows + block - 1) / block, [&](Index task, int) {
      const Index begin = task * block;
      fn(begin, std::min(block, rows - begin));
    });
  }

 private:
  ThreadPool* pool_ = nullptr;
  GemmScratch<Scalar>* scratch_ = nullptr;
};

namespace detail {

// Eigen's blocking descriptor pointed at caller-owned packing buffers.
template <class Scalar>
class ScratchBlocking : public Eigen::internal::level3_blocking<Scalar, Scalar> {
  using Base = Eigen::internal::level3_blocking<Scalar, Scalar>;

 public:
  // rows/cols/depth of the column-major product Eigen runs internally.
  ScratchBlocking(Index rows, Index cols, Index depth, GemmScratch<Scalar>& scratch) {
    const Sizes z = sizes(rows, cols, depth);
    Scalar* base = scratch.reserve(static_cast<std::size_t>(z.a + z.b));
    this->m_kc = z.kc;
    this->m_mc = z.mc;
    this->m_nc = z.nc;
    this->m_blockA = base;
    this->m_blockB = base + z.a;
  }

  // Scalars of scratch the blocking of this product takes.
  static std::size_t scratch_size(Index rows, Index cols, Index depth) {
    const Sizes z = sizes(rows, cols, depth);
    return static_cast<std::size_t>(z.a + z.b);
  }

 private:
  struct Sizes {
    Index kc, mc, nc, a, b;
  };
  static Sizes sizes(Index rows, Index cols, Index depth) {
    Sizes z{depth, rows, cols, 0, 0};
    Eigen::internal::computeProductBlockingSizes<Scalar, Scalar, 1, Index>(z.kc, z.mc, z.nc,
                                                                           Index(1));
    // Round each block to a whole number of SIMD-aligned packets.
    const Index align = EIGEN_MAX_ALIGN_BYTES / Index(sizeof(Scalar));
    z.a = (z.kc * z.mc + align - 1) / align * align;
    z.b = (z.kc * z.nc + align - 1) / align * align;
    return z;
  }
};

template <int LhsOrder, int RhsOrder, class Scalar>
void run_gemm(Index m, Index n, Index k, const Scalar* a, Index lda, const Scalar* b, Index ldb,
              Scalar* c, Index ldc, Scalar alpha, GemmScratch<Scalar>& scratch) {
  if (m == 0 || n == 0 || k == 0) return;
  // A row-major destination is computed by Eigen as the transposed
  // column-major product, so its blocking sees (n, m) as (rows, cols).
  ScratchBlocking<Scalar> blocking(n, m, k, scratch);
  Eigen::internal::general_matrix_matrix_product<Index, Scalar, LhsOrder, false, Scalar, RhsOrder,
                                                 false, Eigen::RowMajor, 1>::run(m, n, k, a, lda, b,
                                                                                 ldb, c, 1, ldc,
                                                                                 alpha, blocking);
}

// How a product's output [m, n] is cut into tiles: a function of the shape
// (and of the build's SIMD width) only, never of the thread count.
struct GemmTiling {
  Index tile_m = 0, tile_n = 0;    // tile shape (the last row / column of tiles may be smaller)
  Index tiles_m = 0, tiles_n = 0;  // tiles down and across
  Index count() const { return tiles_m * tiles_n; }
};

template <class Scalar>
GemmTiling gemm_tiling(Index m, Index n, Index k) {
  using Traits = Eigen::internal::gebp_traits<Scalar, Scalar>;
  auto ceil_div = [](Index x, Index y) { return (x + y - 1) / y; };
  auto round_up = [&](Index x, Index y) { return ceil_div(x, y) * y; };
  GemmTiling t;
  if (m == 0 || n == 0) return t;
  // Under about 0.1 ms of work (e.g. one attention head) a product is one tile.
  constexpr Index small = Index(1) << 23;  // multiply-adds
  if (m * n * std::max<Index>(k, 1) <= small) {
    t.tile_m = m;
    t.tile_n = n;
    t.tiles_m = t.tiles_n = 1;
    return t;
  }
  // Rows (tokens): whole up to 512, else near-equal blocks of at most 512
  // rows, in Eigen's register-block width (nr).
  constexpr Index max_rows = 512;
  t.tile_m = round_up(ceil_div(m, ceil_div(m, max_rows)), Index(Traits::nr));
  t.tiles_m = ceil_div(m, t.tile_m);
  // Columns (weight rows): about 12 tiles in all, enough for a fair share
  // between threads of unequal speed; whole multiples of Eigen's lhs panel
  // (mr rows of the weight), at most 384 wide to keep packed panels small.
  constexpr Index target_tiles = 12, max_cols = 384;
  const Index mr = Traits::mr;
  const Index widest = std::max(mr, max_cols / mr * mr);
  const Index want = ceil_div(target_tiles, t.tiles_m);
  t.tile_n = std::min(widest, round_up(ceil_div(n, want), mr));
  t.tiles_n = ceil_div(n, t.tile_n);
  return t;
}

// Scalars of scratch the largest tile of an [m, n] by depth k product takes
// (the last row and column of tiles may be smaller than the others).
template <class Scalar>
std::size_t tiled_scratch_size(Index m, Index n, Index k) {
  if (m == 0 || n == 0 || k == 0) return 0;
  const GemmTiling t = gemm_tiling<Scalar>(m, n, k);
  const Index rows[] = {t.tile_m, m - (t.tiles_m - 1) * t.tile_m};
  const Index cols[] = {t.tile_n, n - (t.tiles_n - 1) * t.tile_n};
  std::size_t size = 0;
  for (Index r : rows)
    for (Index c : cols)  // run_gemm's blocking sees (cols, rows), see there
      size = std::max(size, ScratchBlocking<Scalar>::scratch_size(c, r, k));
  return size;
}

// c = prepare(c) + alpha * op(a) * op(b), then finish(c), tile by tile on
// ctx's threads: prepare(tile, col0) and finish(tile, col0) get a tile of c
// and the column of c where it starts. a is [m, k] (LhsOrder RowMajor: a) or
// [k, m] (ColMajor: a^T); b is [n, k] (RhsOrder ColMajor: b^T) or [k, n]
// (RowMajor: b).
template <int LhsOrder, int RhsOrder, class Scalar, class Prepare, class Finish>
void tiled_gemm(const MatrixCRef<Scalar>& a, const MatrixCRef<Scalar>& b, MatrixRef<Scalar> c,
                const GemmContext<Scalar>& ctx, Scalar alpha, Prepare&& prepare, Finish&& finish) {
  const Index m = c.rows(), n = c.cols();
  const Index k = LhsOrder == Eigen::RowMajor ? a.cols() : a.rows();
  const GemmTiling t = gemm_tiling<Scalar>(m, n, k);
  ctx.run(t.count(), [&](Index task, int thread) {
    const Index i0 = (task / t.tiles_n) * t.tile_m, j0 = (task % t.tiles_n) * t.tile_n;
    const Index rows = std::min(t.tile_m, m - i0), cols = std::min(t.tile_n, n - j0);
    MatrixRef<Scalar> tile = c.block(i0, j0, rows, cols);
    prepare(tile, j0);
    // a's part: rows i0.. of op(a); b's part: columns j0.. of op(b).
    const Scalar* a0 =
        LhsOrder == Eigen::RowMajor ? a.data() + i0 * a.outerStride() : a.data() + i0;
    const Scalar* b0 =
        RhsOrder == Eigen::ColMajor ? b.data() + j0 * b.outerStride() : b.data() + j0;
    run_gemm<LhsOrder, RhsOrder>(rows, cols, k, a0, a.outerStride(), b0, b.outerStride(),
                                 tile.data(), tile.outerStride(), alpha, ctx.scratch(thread));
    finish(tile, j0);
  });
}

// The tile hooks of a plain product: zero the tile first, or keep it (accumulate).
template <class Scalar>
struct ZeroUnless {
  bool accumulate;
  void operator()(MatrixRef<Scalar> tile, Index) const {
    if (!accumulate) tile.setZero();
  }
};
struct NoOp {
  template <class... T>
  void operator()(T&&...) const {}
};

}  // namespace detail

/// c = alpha * a * b^T, or c += alpha * a * b^T when accumulate.
/// a: [m, k], b: [n, k], c: [m, n]; all row-major with unit inner stride.
template <class Scalar>
void gemm_nt(const MatrixCRef<Scalar>& a, const MatrixCRef<Scalar>& b, MatrixRef<Scalar> c,
             const GemmContext<Scalar>& ctx, Scalar alpha = Scalar(1), bool accumulate = false) {
  eigen_assert(a.cols() == b.cols() && c.rows() == a.rows() && c.cols() == b.rows());
  detail::tiled_gemm<Eigen::RowMajor, Eigen::ColMajor>(
      a, b, c, ctx, alpha, detail::ZeroUnless<Scalar>{accumulate}, detail::NoOp{});
}

/// c = alpha * a * b, or c += alpha * a * b when accumulate.
/// a: [m, k], b: [k, n], c: [m, n]; all row-major with unit inner stride.
template <class Scalar>
void gemm_nn(const MatrixCRef<Scalar>& a, const MatrixCRef<Scalar>& b, MatrixRef<Scalar> c,
             const GemmContext<Scalar>& ctx, Scalar alpha = Scalar(1), bool accumulate = false) {
  eigen_assert(a.cols() == b.rows() && c.rows() == a.rows() && c.cols() == b.cols());
  detail::tiled_gemm<Eigen::RowMajor, Eigen::RowMajor>(
      a, b, c, ctx, alpha, detail::ZeroUnless<Scalar>{accumulate}, detail::NoOp{});
}

/// c = alpha * a^T * b, or c += alpha * a^T * b when accumulate (e.g. a
/// weight gradient dy^T x). a: [k, m], b: [k, n], c: [m, n]; all row-major
/// with unit inner stride.
template <class Scalar>
void gemm_tn(const MatrixCRef<Scalar>& a, const MatrixCRef<Scalar>& b, MatrixRef<Scalar> c,
             const GemmContext<Scalar>& ctx, Scalar alpha = Scalar(1), bool accumulate = false) {
  eigen_assert(a.rows() == b.rows() && c.rows() == a.cols() && c.cols() == b.cols());
  detail::tiled_gemm<Eigen::ColMajor, Eigen::RowMajor>(
      a, b, c, ctx, alpha, detail::ZeroUnless<Scalar>{accumulate}, detail::NoOp{});
}

/// gemm_nt with work fused into each output tile, on the thread that computes
/// it: for every tile c_t of c (a block whose first column is col0 in c),
/// prepare(c_t, col0); c_t += alpha * (its part of a * b^T); finish(c_t, col0).
/// prepare sets the starting value (zero, a bias, or the residual as it is);
/// finish applies e.g. an activation. Both take (MatrixRef<Scalar>, Index).
template <class Scalar, class Prepare, class Finish>
void gemm_nt_fused(const MatrixCRef<Scalar>& a, const MatrixCRef<Scalar>& b, MatrixRef<Scalar> c,
                   const GemmContext<Scalar>& ctx, Scalar alpha, Prepare&& prepare,
                   Finish&& finish) {
  eigen_assert(a.cols() == b.cols() && c.rows() == a.rows() && c.cols() == b.rows());
  detail::tiled_gemm<Eigen::RowMajor, Eigen::ColMajor>(a, b, c, ctx, alpha, prepare, finish);
}

/// Scalars of GemmScratch any thread needs to run an [m, k] by [k, n]
/// product (gemm_nt, gemm_nn, gemm_nt_fused): reserving it up front means the
/// product allocates nothing on whichever thread picks up which tile.
template <class Scalar>
std::size_t gemm_scratch_size(Index m, Index n, Index k) {
  return detail::tiled_scratch_size<Scalar>(m, n, k);
}

}  // namespace vit::nn
