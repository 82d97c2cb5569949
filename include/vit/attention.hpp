// vit/attention.hpp - multi-head self-attention.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>
#include <vector>

#include "vit/nn/gemm.hpp"
#include "vit/nn/gemm_avx512.hpp"
#include "vit/nn/linear.hpp"
#include "vit/nn/softmax.hpp"
#include "vit/tensor.hpp"

namespace vit {

/// Scaled dot-product attention over each image's tokens, num_heads heads.
///   qkv.weight:  [3D, D], rows laid out as [3, heads, head_dim] (q, k, v)
///   qkv.bias:    [3D] (empty when the model has no qkv bias)
///   proj.weight: [D, D], proj.bias: [D]
/// Per head h: softmax(q_h k_h^T * head_dim^-0.5) v_h; the heads' outputs are
/// concatenated head after head before the output projection.
template <class Scalar>
struct MultiHeadSelfAttention {
  int num_heads = 1;
  nn::Linear<Scalar> qkv;
  nn::Linear<Scalar> proj;

  MultiHeadSelfAttention() = default;
  MultiHeadSelfAttention(Index dim, int heads, bool qkv_bias)
      : num_heads(heads), qkv(3 * dim, dim, qkv_bias), proj(dim, dim, true) {}

  Index dim() const { return proj.out_features(); }
  Index head_dim() const { return dim() / num_heads; }

  /// Workspace the forward pass needs, kept by the caller.
  struct Buffers {
    Matrix<Scalar> qkv;                  // (N*T, 3D)
    std::vector<Matrix<Scalar>> scores;  // one (T, T) per thread: the head it is working on
    Matrix<Scalar> context;              // (N*T, D)
    // Packed kernels (float on AVX-512 CPUs): one head's k and v per thread,
    // packed as the "weights" of q k^T and p v; reused, so no allocation
    // once they have held a head.
    std::vector<nn::PackedWeight> keys, values;
  };

  /// Scalars of GemmScratch each thread needs for forward_add() of `rows`
  /// rows of `tokens` tokens per image on `threads` threads.
  std::size_t scratch_size(Index rows, Index tokens, int threads) const {
    const Index t = tokens, hd = head_dim();
    std::size_t head;  // one head's q k^T and p v, on the thread that runs it
    if (std::is_same_v<Scalar, float> && nn::gemm_packed_uses_avx512())
      head = std::max(nn::gemm_packed_scratch_size(t, hd), nn::gemm_packed_scratch_size(t, t));
    else
      head = std::max(nn::gemm_scratch_size<Scalar>(t, t, hd),
                      nn::gemm_scratch_size<Scalar>(t, hd, t));
    return std::max({head, qkv.scratch_size(rows, threads), proj.scratch_size(rows, threads)});
  }

  /// Sizes buf's per-thread parts (scores, packed keys and values) for
  /// `tokens` tokens per image on `threads` threads, so that forward_add()
  /// allocates nothing on any thread.
  void reserve(Buffers& buf, Index tokens, int threads) const {
    const auto per_thread = std::size_t(threads);
    buf.scores.resize(std::max(buf.scores.size(), per_thread));
    for (Matrix<Scalar>& s : buf.scores)
      if (s.rows() < tokens || s.cols() < tokens) s.resize(tokens, tokens);
    if (std::is_same_v<Scalar, float> && nn::gemm_packed_uses_avx512()) {
      buf.keys.resize(std::max(buf.keys.size(), per_thread));
      buf.values.resize(std::max(buf.values.size(), per_thread));
      for (nn::PackedWeight& k : buf.keys) k.reserve(tokens, head_dim());
      for (nn::PackedWeight& v : buf.values) v.reserve(head_dim(), tokens);
    }
  }

  /// residual += proj(attention(x)).
  /// x, residual: [N*T, D] with `tokens` = T rows per image.
  /// probs: null, or [N*heads*T, T] to receive the attention probabilities,
  /// row (n*heads + h)*T + query, column key.
  /// buf.scores needs ctx.threads() matrices of at least T rows and T columns.
  void forward_add(const MatrixCRef<Scalar>& x, Index tokens, Buffers& buf,
                   MatrixRef<Scalar> residual, const nn::GemmContext<Scalar>& ctx,
                   Matrix<Scalar>* probs = nullptr) const {
    const Index rows = x.rows(), d = dim(), hd = head_dim(), t = tokens;
    const Index batch = rows / t;
    const Scalar scale = Scalar(1) / std::sqrt(Scalar(hd));
    qkv.forward(x, buf.qkv.topRows(rows), ctx);
    const bool packed = std::is_same_v<Scalar, float> && nn::gemm_packed_uses_avx512();
    if (packed && buf.keys.size() < std::size_t(ctx.threads())) {
      buf.keys.resize(std::size_t(ctx.threads()));
      buf.values.resize(std::size_t(ctx.threads()));
    }
    // One task per (image, head), task = n * heads + h; the thread running it
    // uses its own scores matrix and scratch. (Each thread's scores matrix is
    // a separate aligned allocation, so a head's arithmetic does not depend
    // on which thread runs it.)
    ctx.run(batch * num_heads, [&](Index task, int thread) {
      const Index r0 = (task / num_heads) * t, h = task % num_heads;
      // Views into the packed projection: q, k, v thirds, head h's columns.
      const MatrixCRef<Scalar> q = buf.qkv.block(r0, h * hd, t, hd);
      const MatrixCRef<Scalar> k = buf.qkv.block(r0, d + h * hd, t, hd);
      const MatrixCRef<Scalar> v = buf.qkv.block(r0, 2 * d + h * hd, t, hd);
      MatrixRef<Scalar> s =
          probs ? MatrixRef<Scalar>(probs->middleRows(task * t, t))
                : MatrixRef<Scalar>(buf.scores[std::size_t(thread)].topLeftCorner(t, t));
      nn::GemmScratch<Scalar>& scratch = ctx.scratch(thread);
      MatrixRef<Scalar> out = buf.context.block(r0, h * hd, t, hd);  // (T, hd)
      if constexpr (std::is_same_v<Scalar, float>) {
        if (packed) {
          nn::PackedWeight& pk = buf.keys[std::size_t(thread)];
          nn::PackedWeight& pv = buf.values[std::size_t(thread)];
          pk.pack(k);
          pv.pack_transposed(v);
          float* sc = scratch.reserve(
              std::max(nn::gemm_packed_scratch_size(t, hd), nn::gemm_packed_scratch_size(t, t)));
          nn::gemm_packed(q, pk, s, nullptr, nn::Epilogue::store, sc);  // (T, T) = q k^T
          nn::softmax_rows<Scalar>(s, scale);
          nn::gemm_packed(s, pv, out, nullptr, nn::Epilogue::store, sc);
          return;
        }
      }
      nn::gemm_nt<Scalar>(q, k, s, scratch, scale);  // (T, T) = scale * q k^T
      nn::softmax_rows<Scalar>(s);
      nn::gemm_nn<Scalar>(s, v, out, scratch);
    });
    proj.forward_add(buf.context.topRows(rows), residual, ctx);
  }
};

}  // namespace vit
