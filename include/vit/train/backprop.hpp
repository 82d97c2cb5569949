// vit/train/backprop.hpp - the training forward pass (keeping what the
// backward pass needs) and the backward pass of the whole model.
//
// Gradients live in a second VisionTransformer of the same architecture: its
// parameters are the gradients of the model's, so both models'
// named_parameters() line up name by name for the optimizer.
#pragma once

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "vit/error.hpp"
#include "vit/nn/gemm.hpp"
#include "vit/nn/softmax.hpp"
#include "vit/parallel.hpp"
#include "vit/train/layer_grad.hpp"
#include "vit/vision_transformer.hpp"

namespace vit::train {

/// Forward and backward passes of a VisionTransformer for training.
///
///   Backprop<Config> bp(model, threads);
///   bp.zero_grad();
///   const auto& logits = bp.forward(model, images);   // images [N, C*S*S]
///   cross_entropy(logits, labels, 0.1, &dlogits);
///   bp.backward(model, dlogits);                      // grads() += dL/dparams
///
/// Trainable architectures: class-token or average pooling, learned table
/// stored at the run size (or sin-cos, or none), with or without the final
/// norm / fc_norm, any of the three GELUs. Not trainable here: distilled
/// models, torchvision's representation layer, a learned table resampled to
/// another size (store it at the new size first, see resize_position_table).
/// The model's linear layers must hold plain weights (not packed).
template <class Config>
class Backprop {
 public:
  using Scalar = typename Config::Scalar;
  using Model = VisionTransformer<Config>;

  explicit Backprop(const Model& model, int threads = 1)
      : arch_(model.architecture()), grads_(model.architecture()), threads_(threads) {
    if (threads < 1) throw argument_error("Backprop: threads must be >= 1");
    if (arch_.dist_token)
      throw argument_error("Backprop: distilled models (dist_token) are not trainable here");
    if (arch_.representation_size > 0)
      throw argument_error("Backprop: the representation layer (pre_logits) is not trainable");
    if (arch_.num_classes <= 0) throw argument_error("Backprop: the model has no classifier head");
    if (arch_.pos_embed == PosEmbedKind::learned && arch_.table_grid() != arch_.grid_size())
      throw argument_error(
          "Backprop: the position table is stored for a " + std::to_string(arch_.table_grid()) +
          "x" + std::to_string(arch_.table_grid()) + " grid but runs at " +
          std::to_string(arch_.grid_size()) + "x" + std::to_string(arch_.grid_size()) +
          ": store it at the run size first (resize_position_table)");
    zero_grad();
  }

  /// The gradients: a model whose parameters hold d(loss)/d(parameter).
  Model& grads() { return grads_; }
  const Model& grads() const { return grads_; }

  /// Sets every gradient to zero.
  void zero_grad() {
    for (const ParameterRef<Scalar>& p : grads_.named_parameters()) {
      std::size_t count = 1;
      for (std::int64_t d : p.shape) count *= std::size_t(d);
      std::fill(p.data, p.data + count, Scalar(0));
    }
  }

  int threads() const { return threads_; }

  /// Float models run their linear layers on the packed AVX-512 kernels
  /// when the CPU has them (the default); off: Eigen's products, as double.
  void use_packed_kernels(bool on) {
    fast_ = on && std::is_same_v<Scalar, float> && nn::gemm_packed_uses_avx512();
  }
  bool packed_kernels() const { return fast_; }

  /// Forward pass of a batch, keeping the activations; returns the logits
  /// [N, num_classes] (valid until the next forward).
  const Matrix<Scalar>& forward(const Model& model, const MatrixCRef<Scalar>& images) {
    check_model(model);
    const Index s = arch_.image_size, chans = arch_.in_chans;
    if (images.cols() != chans * s * s)
      throw argument_error(
          "Backprop::forward: images must have C*S*S = " + std::to_string(chans * s * s) +
          " columns, got " + std::to_string(images.cols()));
    const Index n = images.rows(), t = arch_.num_tokens(), p = arch_.num_patches();
    const Index prefix = arch_.num_prefix_tokens();
    reserve(n);
    const nn::GemmContext<Scalar> ctx = context();
    n_ = n;
    if constexpr (std::is_same_v<Scalar, float>) {
      if (fast_) {
        packs_.resize(4 * model.blocks.size());
        for (std::size_t b = 0; b < model.blocks.size(); ++b) {
          packs_[4 * b + 0].refresh(model.blocks[b].attn.qkv);
          packs_[4 * b + 1].refresh(model.blocks[b].attn.proj);
          packs_[4 * b + 2].refresh(model.blocks[b].mlp.fc1);
          packs_[4 * b + 3].refresh(model.blocks[b].mlp.fc2);
        }
      }
    }
    model.patch_embed.forward(images, int(s), patches_.topRows(n * p), tokens_.topRows(n * p), ctx);
    // The position table from pos_embed as it is now: the model's cached
    // position_table() is refreshed only by update_position_table(), and the
    // optimizer changes pos_embed between steps. [T, D]
    const Matrix<Scalar>* table = &model.position_table();
    if (arch_.pos_embed == PosEmbedKind::learned) {
      model.compute_position_table(pos_table_);
      table = &pos_table_;
    }
    Matrix<Scalar>& x0 = blocks_[0].x;
    for (Index i = 0; i < n; ++i) {
      if (arch_.class_token) x0.row(i * t) = model.cls_token;
      x0.middleRows(i * t + prefix, p) = tokens_.middleRows(i * p, p);
      x0.middleRows(i * t, t) += *table;
    }
    for (std::size_t b = 0; b < model.blocks.size(); ++b)
      block_forward(model.blocks[b], blocks_[b], b + 1 < blocks_.size() ? blocks_[b + 1].x : x_out_,
                    pack(b), ctx);
    if (model.blocks.empty()) x_out_ = x0;

    // Final norm, pooling, fc_norm, head.
    if (arch_.final_norm)
      ctx.for_rows(n * t, [&](Index r0, Index count) {
        model.norm.forward(x_out_.middleRows(r0, count), normed_.middleRows(r0, count),
                           norm_stats_.middleRows(r0, count));
      });
    const Matrix<Scalar>& tok = arch_.final_norm ? normed_ : x_out_;
    for (Index i = 0; i < n; ++i) {
      if (arch_.pooling == Pooling::avg)
        pooled_.row(i) = tok.middleRows(i * t + prefix, p).colwise().sum() / Scalar(p);
      else
        pooled_.row(i) = tok.row(i * t);
    }
    if (arch_.fc_norm)
      model.fc_norm.forward(pooled_.topRows(n), features_.topRows(n), fc_stats_.topRows(n));
    else
      features_.topRows(n) = pooled_.topRows(n);
    logits_.resize(n, arch_.num_classes);
    model.head.forward(features_.topRows(n), logits_, ctx);
    return logits_;
  }

  /// Backward pass of the last forward: grads() += d(loss)/d(parameters),
  /// given dlogits = d(loss)/d(logits) [N, num_classes].
  void backward(const Model& model, const MatrixCRef<Scalar>& dlogits) {
    check_model(model);
    const Index n = n_, t = arch_.num_tokens(), p = arch_.num_patches();
    const Index prefix = arch_.num_prefix_tokens();
    if (n == 0 || dlogits.rows() != n || dlogits.cols() != arch_.num_classes)
      throw argument_error("Backprop::backward: dlogits must be [" + std::to_string(n) + ", " +
                           std::to_string(arch_.num_classes) + "] (the last forward's logits)");
    const nn::GemmContext<Scalar> ctx = context();

    // Head and fc_norm: d(features) then d(pooled).
    linear_backward<Scalar>(model.head, features_.topRows(n), dlogits, dfeatures_.topRows(n),
                            grads_.head, ctx);
    if (arch_.fc_norm) {
      layer_norm_param_grads<Scalar>(pooled_.topRows(n), fc_stats_.topRows(n),
                                     dfeatures_.topRows(n), grads_.fc_norm);
      layer_norm_backward_rows<Scalar>(model.fc_norm, pooled_.topRows(n), fc_stats_.topRows(n),
                                       dfeatures_.topRows(n), dpooled_.topRows(n));
    } else {
      dpooled_.topRows(n) = dfeatures_.topRows(n);
    }
    // Pooling: back onto the token rows.
    Matrix<Scalar>& dtok = dx_;
    dtok.topRows(n * t).setZero();
    for (Index i = 0; i < n; ++i) {
      if (arch_.pooling == Pooling::avg)
        dtok.middleRows(i * t + prefix, p).rowwise() += dpooled_.row(i) / Scalar(p);
      else
        dtok.row(i * t) = dpooled_.row(i);
    }
    // Final norm: dx_ becomes d(last block's output).
    if (arch_.final_norm) {
      ctx.for_rows(n * t, [&](Index r0, Index count) {
        layer_norm_backward_rows<Scalar>(
            model.norm, x_out_.middleRows(r0, count), norm_stats_.middleRows(r0, count),
            dtok.middleRows(r0, count), dnormed_.middleRows(r0, count));
      });
      layer_norm_param_grads<Scalar>(x_out_.topRows(n * t), norm_stats_.topRows(n * t),
                                     dtok.topRows(n * t), grads_.norm);
      dx_.topRows(n * t) = dnormed_.topRows(n * t);
    }
    for (std::size_t b = model.blocks.size(); b-- > 0;)
      block_backward(model.blocks[b], blocks_[b], grads_.blocks[b], pack(b), ctx);

    // Embedding: class token, position table, patch projection.
    const MatrixCRef<Scalar> dx0 = dx_.topRows(n * t);
    if (arch_.class_token)
      for (Index i = 0; i < n; ++i) grads_.cls_token += dx0.row(i * t);
    if (arch_.pos_embed == PosEmbedKind::learned) {
      // The stored table is the run table (checked at construction): prefix
      // rows only when it stores them.
      const Index stored_prefix = arch_.pos_embed_prefix ? prefix : 0;
      for (Index i = 0; i < n; ++i) {
        grads_.pos_embed.topRows(stored_prefix) += dx0.middleRows(i * t, stored_prefix);
        grads_.pos_embed.bottomRows(p) += dx0.middleRows(i * t + prefix, p);
      }
    }
    for (Index i = 0; i < n; ++i) dtokens_.middleRows(i * p, p) = dx0.middleRows(i * t + prefix, p);
    linear_param_grads<Scalar>(patches_.topRows(n * p), dtokens_.topRows(n * p),
                               grads_.patch_embed.proj, ctx, work());
  }

 private:
  // What one block keeps for the backward pass (rows N*T).
  struct BlockCache {
    Matrix<Scalar> x;        // (NT, D) block input
    Matrix<Scalar> ln1;      // (NT, D) norm1 output
    Matrix<Scalar> ln1_st;   // (NT, 2) norm1 mean, 1/std
    Matrix<Scalar> qkv;      // (NT, 3D)
    Matrix<Scalar> probs;    // (N*H*T, T) attention probabilities
    Matrix<Scalar> context;  // (NT, D) heads' outputs, before proj
    Matrix<Scalar> mid;      // (NT, D) x + attention
    Matrix<Scalar> ln2;      // (NT, D)
    Matrix<Scalar> ln2_st;   // (NT, 2)
    Matrix<Scalar> dact;     // (NT, hidden) act'(fc1 output)
    Matrix<Scalar> act;      // (NT, hidden) after it
  };

  void check_model(const Model& model) const {
    if (model.architecture() != arch_)
      throw argument_error("Backprop: the model's architecture is not the one it was made for");
    if (model.weights_packed())
      throw argument_error("Backprop: the model holds packed weights; call unpack_weights()");
  }

  nn::GemmContext<Scalar> context() {
    return nn::GemmContext<Scalar>(pool_.get(), scratch_.data());
  }

  void reserve(Index n) {
    if (!pool_ && threads_ > 1) pool_ = std::make_unique<ThreadPool>(threads_);
    scratch_.resize(std::size_t(threads_));
    head_scratch_.resize(std::size_t(threads_));
    head_work_.resize(std::size_t(threads_));
    if (n <= capacity_) return;
    const Index t = arch_.num_tokens(), p = arch_.num_patches(), d = arch_.embed_dim;
    const Index h = arch_.mlp_hidden, heads = arch_.num_heads, rows = n * t;
    const Index patch_len = Index(arch_.in_chans) * arch_.patch_size * arch_.patch_size;
    blocks_.resize(std::max<std::size_t>(1, std::size_t(arch_.depth)));
    for (BlockCache& c : blocks_) {
      c.x.resize(rows, d);
      c.ln1.resize(rows, d);
      c.ln1_st.resize(rows, 2);
      c.qkv.resize(rows, 3 * d);
      c.probs.resize(n * heads * t, t);
      c.context.resize(rows, d);
      c.mid.resize(rows, d);
      c.ln2.resize(rows, d);
      c.ln2_st.resize(rows, 2);
      c.dact.resize(rows, h);
      c.act.resize(rows, h);
    }
    patches_.resize(n * p, patch_len);
    tokens_.resize(n * p, d);
    dtokens_.resize(n * p, d);
    x_out_.resize(rows, d);
    normed_.resize(rows, d);
    norm_stats_.resize(rows, 2);
    dnormed_.resize(rows, d);
    pooled_.resize(n, d);
    dpooled_.resize(n, arch_.num_features());
    features_.resize(n, arch_.num_features());
    dfeatures_.resize(n, arch_.num_features());
    fc_stats_.resize(n, 2);
    dx_.resize(rows, d);
    dmid_.resize(rows, d);
    dln_.resize(rows, d);
    dqkv_.resize(rows, 3 * d);
    dcontext_.resize(rows, d);
    dhidden_.resize(rows, h);
    for (Matrix<Scalar>& m : head_scratch_) m.resize(t, t);
    capacity_ = n;
  }

  // The packed weights of block b's qkv, proj, fc1, fc2 (null: the plain path).
  const PackedLinear* pack(std::size_t b) const { return fast_ ? &packs_[4 * b] : nullptr; }
  GradWork* work() { return fast_ ? &work_ : nullptr; }
  HeadWork* head_work(int thread) { return fast_ ? &head_work_[std::size_t(thread)] : nullptr; }

  void block_forward(const EncoderBlock<Scalar>& blk, BlockCache& c, Matrix<Scalar>& out,
                     const PackedLinear* pk, const nn::GemmContext<Scalar>& ctx) {
    auto at = [pk](int i) { return pk ? pk + i : nullptr; };
    const Index rows = n_ * arch_.num_tokens();
    const Index t = arch_.num_tokens(), d = arch_.embed_dim, heads = arch_.num_heads;
    const Index hd = d / heads;
    const Scalar scale = Scalar(1) / std::sqrt(Scalar(hd));
    ctx.for_rows(rows, [&](Index r0, Index count) {
      blk.norm1.forward(c.x.middleRows(r0, count), c.ln1.middleRows(r0, count),
                        c.ln1_st.middleRows(r0, count));
    });
    linear_forward<Scalar>(blk.attn.qkv, at(0), c.ln1.topRows(rows), c.qkv.topRows(rows), ctx);
    ctx.run(n_ * heads, [&](Index task, int thread) {
      const Index r0 = (task / heads) * t, hh = task % heads;
      const MatrixCRef<Scalar> q = c.qkv.block(r0, hh * hd, t, hd);
      const MatrixCRef<Scalar> k = c.qkv.block(r0, d + hh * hd, t, hd);
      const MatrixCRef<Scalar> v = c.qkv.block(r0, 2 * d + hh * hd, t, hd);
      attention_head_forward<Scalar>(q, k, v, scale, c.probs.middleRows(task * t, t),
                                     c.context.block(r0, hh * hd, t, hd), ctx.scratch(thread),
                                     head_work(thread));
    });
    c.mid.topRows(rows) = c.x.topRows(rows);
    linear_forward<Scalar>(blk.attn.proj, at(1), c.context.topRows(rows), c.mid.topRows(rows), ctx,
                           nn::Epilogue::accumulate);
    ctx.for_rows(rows, [&](Index r0, Index count) {
      blk.norm2.forward(c.mid.middleRows(r0, count), c.ln2.middleRows(r0, count),
                        c.ln2_st.middleRows(r0, count));
    });
    linear_forward<Scalar>(blk.mlp.fc1, at(2), c.ln2.topRows(rows), c.dact.topRows(rows), ctx);
    const Activation act = blk.mlp.act;
    ctx.for_rows(rows, [&](Index r0, Index count) {
      activation_with_derivative<Scalar>(act, c.dact.middleRows(r0, count),
                                         c.act.middleRows(r0, count));
    });
    out.topRows(rows) = c.mid.topRows(rows);
    linear_forward<Scalar>(blk.mlp.fc2, at(3), c.act.topRows(rows), out.topRows(rows), ctx,
                           nn::Epilogue::accumulate);
  }

  // dx_ holds d(block output) on entry and d(block input) on return.
  void block_backward(const EncoderBlock<Scalar>& blk, const BlockCache& c, EncoderBlock<Scalar>& g,
                      const PackedLinear* pk, const nn::GemmContext<Scalar>& ctx) {
    auto at = [pk](int i) { return pk ? pk + i : nullptr; };
    const Index rows = n_ * arch_.num_tokens();
    const Index t = arch_.num_tokens(), d = arch_.embed_dim, heads = arch_.num_heads;
    const Index hd = d / heads;
    const Scalar scale = Scalar(1) / std::sqrt(Scalar(hd));
    // MLP: out = mid + fc2(act(fc1(ln2(mid)))).
    linear_backward<Scalar>(blk.mlp.fc2, c.act.topRows(rows), dx_.topRows(rows),
                            dhidden_.topRows(rows), g.mlp.fc2, ctx, at(3), work());
    ctx.for_rows(rows, [&](Index r0, Index count) {
      dhidden_.middleRows(r0, count).array() *= c.dact.middleRows(r0, count).array();
    });
    linear_backward<Scalar>(blk.mlp.fc1, c.ln2.topRows(rows), dhidden_.topRows(rows),
                            dln_.topRows(rows), g.mlp.fc1, ctx, at(2), work());
    norm_backward_residual(blk.norm2, c.mid, c.ln2_st, g.norm2, dx_, dmid_, ctx);
    // Attention: mid = x + proj(attention(ln1(x))).
    linear_backward<Scalar>(blk.attn.proj, c.context.topRows(rows), dmid_.topRows(rows),
                            dcontext_.topRows(rows), g.attn.proj, ctx, at(1), work());
    ctx.run(n_ * heads, [&](Index task, int thread) {
      const Index r0 = (task / heads) * t, hh = task % heads;
      const MatrixCRef<Scalar> q = c.qkv.block(r0, hh * hd, t, hd);
      const MatrixCRef<Scalar> k = c.qkv.block(r0, d + hh * hd, t, hd);
      const MatrixCRef<Scalar> v = c.qkv.block(r0, 2 * d + hh * hd, t, hd);
      attention_head_backward<Scalar>(
          q, k, v, c.probs.middleRows(task * t, t), dcontext_.block(r0, hh * hd, t, hd), scale,
          dqkv_.block(r0, hh * hd, t, hd), dqkv_.block(r0, d + hh * hd, t, hd),
          dqkv_.block(r0, 2 * d + hh * hd, t, hd), head_scratch_[std::size_t(thread)],
          ctx.scratch(thread), head_work(thread));
    });
    linear_backward<Scalar>(blk.attn.qkv, c.ln1.topRows(rows), dqkv_.topRows(rows),
                            dln_.topRows(rows), g.attn.qkv, ctx, at(0), work());
    norm_backward_residual(blk.norm1, c.x, c.ln1_st, g.norm1, dmid_, dx_, ctx);
  }

  // The pre-norm branch y = x + f(ln(x)) from d(ln output) in dln_ and dy:
  // dx = dy + ln'(dln_), and ln's parameter gradients accumulate into g.
  // x, dy, dx: [rows, D]; stats: ln's (mean, 1/std) per row, [rows, 2].
  void norm_backward_residual(const nn::LayerNorm<Scalar>& ln, const Matrix<Scalar>& x,
                              const Matrix<Scalar>& stats, nn::LayerNorm<Scalar>& g,
                              const Matrix<Scalar>& dy, Matrix<Scalar>& dx,
                              const nn::GemmContext<Scalar>& ctx) {
    const Index rows = n_ * arch_.num_tokens();
    layer_norm_param_grads<Scalar>(x.topRows(rows), stats.topRows(rows), dln_.topRows(rows), g);
    ctx.for_rows(rows, [&](Index r0, Index count) {
      layer_norm_backward_rows<Scalar>(ln, x.middleRows(r0, count), stats.middleRows(r0, count),
                                       dln_.middleRows(r0, count), dx.middleRows(r0, count));
      dx.middleRows(r0, count) += dy.middleRows(r0, count);
    });
  }

  Architecture arch_;
  Model grads_;
  int threads_ = 1;
  // Float on a CPU with the AVX-512 kernels: linear layers run packed.
  bool fast_ = std::is_same_v<Scalar, float> && nn::gemm_packed_uses_avx512();
  std::vector<PackedLinear> packs_;  // 4 per block: qkv, proj, fc1, fc2
  GradWork work_;
  std::vector<HeadWork> head_work_;  // one per thread
  Index n_ = 0, capacity_ = 0;
  std::unique_ptr<ThreadPool> pool_;
  std::vector<nn::GemmScratch<Scalar>> scratch_;
  std::vector<Matrix<Scalar>> head_scratch_;  // one (T, T) per thread
  std::vector<BlockCache> blocks_;
  Matrix<Scalar> patches_, tokens_, dtokens_;
  Matrix<Scalar> pos_table_;  // [T, D] from pos_embed at each forward (learned tables)
  Matrix<Scalar> x_out_, normed_, norm_stats_, dnormed_;
  Matrix<Scalar> pooled_, dpooled_, features_, dfeatures_, fc_stats_, logits_;
  Matrix<Scalar> dx_, dmid_, dln_, dqkv_, dcontext_, dhidden_;
};

}  // namespace vit::train
