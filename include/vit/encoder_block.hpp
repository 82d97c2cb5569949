// vit/encoder_block.hpp - one pre-norm transformer encoder block.
#pragma once

#include "vit/attention.hpp"
#include "vit/config.hpp"
#include "vit/mlp.hpp"
#include "vit/nn/layer_norm.hpp"

namespace vit {

/// x += attn(norm1(x)); x += mlp(norm2(x))   (x: [N*T, D])
template <class Scalar>
struct EncoderBlock {
  nn::LayerNorm<Scalar> norm1;
  MultiHeadSelfAttention<Scalar> attn;
  nn::LayerNorm<Scalar> norm2;
  Mlp<Scalar> mlp;

  EncoderBlock() = default;
  explicit EncoderBlock(const Architecture& a)
      : norm1(a.embed_dim, a.layer_norm_eps),
        attn(a.embed_dim, a.num_heads, a.qkv_bias),
        norm2(a.embed_dim, a.layer_norm_eps),
        mlp(a.embed_dim, a.mlp_hidden, a.activation) {}

  struct Buffers {
    Matrix<Scalar> normed;  // (N*T, D)
    Matrix<Scalar> hidden;  // (N*T, mlp_hidden)
    typename MultiHeadSelfAttention<Scalar>::Buffers attn;
  };

  /// Scalars of GemmScratch each thread needs for `rows` rows of `tokens`
  /// tokens per image.
  std::size_t scratch_size(Index rows, Index tokens, int threads) const {
    return std::max(attn.scratch_size(rows, tokens, threads), mlp.scratch_size(rows, threads));
  }

  /// x: [N*T, D] residual stream, updated in place; probs as in attention.
  /// Runs on ctx's threads: the LayerNorms by blocks of rows, the rest as
  /// attention and the MLP split their work.
  void forward(MatrixRef<Scalar> x, Index tokens, Buffers& buf, const nn::GemmContext<Scalar>& ctx,
               Matrix<Scalar>* probs = nullptr) const {
    const Index rows = x.rows();
    ctx.for_rows(rows, [&](Index r0, Index count) {
      norm1.forward(x.middleRows(r0, count), buf.normed.middleRows(r0, count));
    });
    attn.forward_add(buf.normed.topRows(rows), tokens, buf.attn, x, ctx, probs);
    ctx.for_rows(rows, [&](Index r0, Index count) {
      norm2.forward(x.middleRows(r0, count), buf.normed.middleRows(r0, count));
    });
    mlp.forward_add(buf.normed.topRows(rows), buf.hidden.topRows(rows), x, ctx);
  }
};

}  // namespace vit
