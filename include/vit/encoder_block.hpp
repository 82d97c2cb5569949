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

  /// x: [N*T, D] residual stream, updated in place; probs as in attention.
  void forward(MatrixRef<Scalar> x, Index tokens, Buffers& buf, nn::GemmScratch<Scalar>& scratch,
               Matrix<Scalar>* probs = nullptr) const {
    const Index rows = x.rows();
    norm1.forward(x, buf.normed.topRows(rows));
    attn.forward_add(buf.normed.topRows(rows), tokens, buf.attn, x, scratch, probs);
    norm2.forward(x, buf.normed.topRows(rows));
    mlp.forward_add(buf.normed.topRows(rows), buf.hidden.topRows(rows), x, scratch);
  }
};

}  // namespace vit
