// vit/vision_transformer.hpp - the whole model: patch embedding, prefix
// tokens, position table, encoder blocks, final norm, pooling and head.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "vit/config.hpp"
#include "vit/encoder_block.hpp"
#include "vit/nn/gemm.hpp"
#include "vit/nn/layer_norm.hpp"
#include "vit/nn/linear.hpp"
#include "vit/parallel.hpp"
#include "vit/patch_embedding.hpp"
#include "vit/position_embedding.hpp"
#include "vit/precision.hpp"
#include "vit/tensor.hpp"

namespace vit {

/// What forward() computes besides logits, pre_logits and tokens.
struct ForwardOptions {
  bool attention = false;      ///< keep every block's attention probabilities
  bool hidden_states = false;  ///< keep the embeddings and every block's output
  /// Threads of the forward pass: the caller's plus threads - 1 workers that
  /// the Output's workspace keeps (made on first use, remade only when this
  /// changes). Results are bit-identical for every thread count.
  int threads = 1;
};

namespace detail {

// The Workspace's thread pool, remade only when the thread count changes. A
// copied Workspace starts without one: threads are never shared.
class WorkspacePool {
 public:
  WorkspacePool() = default;
  WorkspacePool(const WorkspacePool&) noexcept {}
  WorkspacePool& operator=(const WorkspacePool&) noexcept { return *this; }
  WorkspacePool(WorkspacePool&&) noexcept = default;
  WorkspacePool& operator=(WorkspacePool&&) noexcept = default;
  ~WorkspacePool() = default;

  // A pool of `threads` threads; none (null) for one thread.
  ThreadPool* get(int threads) {
    if (threads <= 1) {
      pool_.reset();
      return nullptr;
    }
    if (!pool_ || pool_->threads() != threads) {
      pool_.reset();
      pool_ = std::make_unique<ThreadPool>(threads);
    }
    return pool_.get();
  }

 private:
  std::unique_ptr<ThreadPool> pool_;
};

}  // namespace detail

/// Activation memory of a forward pass, reused from call to call, and the
/// threads that run it (ForwardOptions::threads).
template <class Scalar>
struct Workspace {
  Matrix<Scalar> patches;       // (N*P, C*p*p) unrolled patches
  Matrix<Scalar> patch_tokens;  // (N*P, D)
  Matrix<Scalar> x;             // (N*T, D) residual stream
  Matrix<Scalar> pooled;        // (N, D) pooled tokens (token 0 for distilled models)
  Matrix<Scalar> pooled_dist;   // (N, D) token 1 of distilled models
  Matrix<Scalar> logits_dist;   // (N, C) head_dist output
  typename EncoderBlock<Scalar>::Buffers block;
  std::vector<nn::GemmScratch<Scalar>> gemm;  // one per thread, indexed by pool thread number
  detail::WorkspacePool pool;                 // threads - 1 workers; none for one thread
};

/// Results of forward(); keep one per thread and reuse it: once it has seen a
/// batch size, later calls with that size allocate nothing.
template <class Scalar>
struct Output {
  Matrix<Scalar> logits;      // (N, num_classes); distilled: mean of both heads
  Matrix<Scalar> pre_logits;  // (N, num_features) the image embedding fed to the head
  Matrix<Scalar> tokens;      // (N*T, D) all tokens after the final norm, image after image
  Matrix<Scalar> embeddings;  // (N*T, D) input of block 0 (with ForwardOptions::hidden_states)
  std::vector<Matrix<Scalar>>
      hidden_states;                      // depth x (N*T, D) block outputs, before the final norm
  std::vector<Matrix<Scalar>> attention;  // depth x (N*heads*T, T): row (n*heads + h)*T + query
  Workspace<Scalar> workspace;
};

/// A named parameter tensor: its timm name and shape, and where it lives.
template <class Scalar>
struct ParameterRef {
  std::string name;                 // timm key, e.g. "blocks.3.attn.qkv.weight"
  std::vector<std::int64_t> shape;  // timm shape, e.g. {2304, 768}
  Scalar* data;                     // row-major, prod(shape) values
};

/// A Vision Transformer (Dosovitskiy et al., 2020) as timm builds it.
///
/// Config: a preset from vit::presets (or a struct like them) fixes the
/// architecture at compile time; DynamicConfig<Scalar> takes it at run time.
/// Scalar is float or double. The parameter members are named like timm's
/// modules (and so like the timm checkpoint keys).
///
/// Input: images [N, C*S*S], each row one image, channels then rows then
/// columns (NCHW flattened), already normalised. S = architecture().image_size.
template <class Config>
class VisionTransformer {
 public:
  using Scalar = typename Config::Scalar;
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "VisionTransformer: Config::Scalar must be float or double");

  /// A model with the Config's architecture, weights zero (LayerNorms one).
  VisionTransformer() : VisionTransformer(static_architecture()) {}

  /// A model of the given architecture. With a compile-time Config, `arch`
  /// must be the Config's (it may differ only in image_size, which resamples
  /// the position table).
  explicit VisionTransformer(const Architecture& arch) : arch_(arch) {
    arch_.validate();
    if constexpr (Config::is_static) {
      Architecture expected = Config::architecture();
      expected.image_size = arch.image_size;
      expected.pos_embed_grid = arch.table_grid();
      if (arch != expected)
        throw config_error("VisionTransformer: architecture differs from the compile-time Config");
    }
    if (arch_.pos_embed_grid == 0) arch_.pos_embed_grid = arch_.grid_size();
    const Index d = arch_.embed_dim;
    patch_embed = PatchEmbedding<Scalar>(arch_.patch_size, arch_.in_chans, arch_.embed_dim);
    if (arch_.class_token) cls_token = RowVector<Scalar>::Zero(d);
    if (arch_.dist_token) dist_token = RowVector<Scalar>::Zero(d);
    if (arch_.pos_embed == PosEmbedKind::learned)
      pos_embed = Matrix<Scalar>::Zero(arch_.table_rows(), d);
    blocks.assign(std::size_t(arch_.depth), EncoderBlock<Scalar>(arch_));
    if (arch_.final_norm) norm = nn::LayerNorm<Scalar>(d, arch_.layer_norm_eps);
    if (arch_.representation_size > 0)
      pre_logits = nn::Linear<Scalar>(arch_.representation_size, d, true);
    if (arch_.fc_norm) fc_norm = nn::LayerNorm<Scalar>(arch_.num_features(), arch_.layer_norm_eps);
    if (arch_.num_classes > 0) {
      head = nn::Linear<Scalar>(arch_.num_classes, arch_.num_features(), true);
      if (arch_.dist_token) head_dist = nn::Linear<Scalar>(arch_.num_classes, d, true);
    }
    update_position_table();
  }

  const Architecture& architecture() const { return arch_; }

  // --- parameters (timm names; shapes in comments) ---
  PatchEmbedding<Scalar> patch_embed;  // proj: (D, C*P*P) + (D)
  RowVector<Scalar> cls_token;         // (D), empty without class token
  RowVector<Scalar> dist_token;        // (D), empty unless distilled
  Matrix<Scalar> pos_embed;            // (table_rows, D) learned table as stored; empty otherwise
  std::vector<EncoderBlock<Scalar>> blocks;  // depth
  nn::LayerNorm<Scalar> norm;                // (D), empty without final norm
  nn::Linear<Scalar> pre_logits;  // (R, D) + tanh, torchvision representation layer, or empty
  nn::LayerNorm<Scalar> fc_norm;  // (F), empty without fc_norm
  nn::Linear<Scalar> head;        // (num_classes, F)
  nn::Linear<Scalar> head_dist;   // (num_classes, D), distilled models only

  /// Runs the model at another input size. The learned table is resampled
  /// from the stored one (antialiased bicubic, as timm does when loading);
  /// a sin-cos table is recomputed.
  void set_image_size(int image_size) {
    Architecture a = arch_;
    a.image_size = image_size;
    if (const char* p = a.problem())
      throw argument_error("set_image_size(" + std::to_string(image_size) + "): " + p);
    arch_ = a;
    update_position_table();
  }

  /// Recomputes the table added to the tokens, (T, D): prefix rows first
  /// (zero when the stored table has none), then the patch grid at the run
  /// size. Call after changing pos_embed by hand; loading does it.
  void update_position_table() { compute_position_table(pos_table_); }

  /// Writes that table, from pos_embed as it is now, into `table` (resized
  /// to (T, D); no allocation when it has that size and the stored grid is
  /// the run grid). Training calls it after each optimizer step.
  void compute_position_table(Matrix<Scalar>& table) const {
    const Index d = arch_.embed_dim, prefix = arch_.num_prefix_tokens();
    const Index grid = arch_.grid_size();
    table.setZero(arch_.num_tokens(), d);
    if (arch_.pos_embed == PosEmbedKind::learned) {
      const Index stored_prefix = arch_.pos_embed_prefix ? prefix : 0;
      const Index from = arch_.table_grid();
      table.topRows(stored_prefix) = pos_embed.topRows(stored_prefix);
      if (from == grid)
        table.bottomRows(grid * grid) = pos_embed.bottomRows(grid * grid);
      else
        table.bottomRows(grid * grid) =
            resample_grid<Scalar>(pos_embed.bottomRows(from * from), from, grid);
    } else if (arch_.pos_embed == PosEmbedKind::sincos) {
      table.bottomRows(grid * grid) = sincos_table<Scalar>(grid, d);
    }
  }

  /// Makes the run-size table the stored one: pos_embed becomes the table
  /// resampled to the current grid (its prefix rows kept), so the model is
  /// saved, and trained, at the new size (as timm does when a model is made
  /// at another img_size). No-op unless the learned table was resampled.
  void resize_position_table() {
    if (arch_.pos_embed != PosEmbedKind::learned || arch_.table_grid() == arch_.grid_size()) return;
    const Index grid = arch_.grid_size();
    pos_embed =
        arch_.pos_embed_prefix ? pos_table_ : Matrix<Scalar>(pos_table_.bottomRows(grid * grid));
    arch_.pos_embed_grid = int(grid);
    update_position_table();
  }

  /// The position table added to the tokens at the current image size, (T, D).
  const Matrix<Scalar>& position_table() const { return pos_table_; }

  /// Forward pass of a batch; results in `out` (see Output). forward() is
  /// const and only reads the model: several threads may call it at once on
  /// one model, each with its own Output, and get the bits one thread would.
  void forward(const MatrixCRef<Scalar>& images, Output<Scalar>& out,
               const ForwardOptions& options = {}) const {
    const Index s = arch_.image_size, c = arch_.in_chans;
    if (images.cols() != c * s * s)
      throw argument_error("VisionTransformer::forward: images must have C*S*S = " +
                           std::to_string(c * s * s) + " columns (C=" + std::to_string(c) +
                           ", S=" + std::to_string(s) + "), got " + std::to_string(images.cols()));
    if (options.threads < 1)
      throw argument_error(
          "VisionTransformer::forward: ForwardOptions::threads must be >= 1, got " +
          std::to_string(options.threads));
    const Index n = images.rows(), t = arch_.num_tokens(), d = arch_.embed_dim;
    const Index p = arch_.num_patches(), prefix = arch_.num_prefix_tokens();
    Workspace<Scalar>& ws = out.workspace;
    reserve(ws, n, options.threads);
    const nn::GemmContext<Scalar> ctx(ws.pool.get(options.threads), ws.gemm.data());

    // Patch tokens, then [prefix tokens | patch tokens] per image, plus positions.
    patch_embed.forward(images, int(s), ws.patches.topRows(n * p), ws.patch_tokens.topRows(n * p),
                        ctx);
    MatrixRef<Scalar> x = ws.x.topRows(n * t);
    for (Index i = 0; i < n; ++i) {
      if (arch_.class_token) x.row(i * t) = cls_token;
      if (arch_.dist_token) x.row(i * t + 1) = dist_token;
      x.middleRows(i * t + prefix, p) = ws.patch_tokens.middleRows(i * p, p);
      x.middleRows(i * t, t) += pos_table_;
    }
    if (options.hidden_states) {
      out.embeddings = x;
      out.hidden_states.resize(blocks.size());
    }
    if (options.attention) out.attention.resize(blocks.size());

    for (std::size_t b = 0; b < blocks.size(); ++b) {
      Matrix<Scalar>* probs = nullptr;
      if (options.attention) {
        out.attention[b].resize(n * arch_.num_heads * t, t);
        probs = &out.attention[b];
      }
      blocks[b].forward(x, t, ws.block, ctx, probs);
      if (options.hidden_states) out.hidden_states[b] = x;
    }

    out.tokens.resize(n * t, d);
    if (arch_.final_norm)
      ctx.for_rows(n * t, [&](Index r0, Index count) {
        norm.forward(x.middleRows(r0, count), out.tokens.middleRows(r0, count));
      });
    else
      out.tokens = x;
    forward_head(out, n, ctx);
  }

  /// Convenience: the logits [N, num_classes] of a batch (allocates).
  Matrix<Scalar> operator()(const MatrixCRef<Scalar>& images) const {
    Output<Scalar> out;
    forward(images, out);
    return out.logits;
  }

  /// Holds every linear layer's weight (patch embedding, attention, MLP,
  /// heads) packed for the fast kernels, in precision `p`, releasing the
  /// plain matrices: the weights stay in memory once. load_model() does this
  /// (LoadOptions::precision); call it after building or changing a model by
  /// hand. Float models only; layer by layer, so memory peaks at the model
  /// plus one layer. fp32 results agree with the unpacked model to float
  /// rounding; bf16 and int8 trade accuracy for speed (see the README).
  void pack_weights(Precision p = Precision::fp32) {
    if constexpr (!std::is_same_v<Scalar, float>) {
      throw argument_error(
          std::string("VisionTransformer::pack_weights: packed weights need a float model (asked "
                      "for ") +
          precision_name(p) + ")");
    } else {
      // int8 keeps the patch embedding and the heads in fp32: quantising
      // the pixels and the pooled feature cost more accuracy than anything
      // else (ViT-S/32 fixture logits: 3.5% -> under 2% of their range),
      // for under 1% of the work.
      const Precision edge = p == Precision::int8 ? Precision::fp32 : p;
      for_each_linear(
          [p, edge](nn::Linear<Scalar>& l, bool is_edge) { l.pack(is_edge ? edge : p); });
    }
  }

  /// Back to plain weights (the values packed, so a bf16 / int8 model keeps
  /// its rounding). named_parameters() does this first.
  void unpack_weights() {
    for_each_linear([](nn::Linear<Scalar>& l, bool) { l.unpack(); });
  }

  /// True when the linear layers hold packed weights (see pack_weights()).
  bool weights_packed() const { return patch_embed.proj.packed(); }

  /// The encoder blocks' arithmetic: fp32 unless packed at lower precision.
  Precision precision() const {
    return blocks.empty() ? patch_embed.proj.precision() : blocks[0].attn.qkv.precision();
  }

  /// Every parameter tensor with its timm name and shape, in timm's order.
  /// The pointers are to plain tensors: packed weights are unpacked first
  /// (call pack_weights() again after changing them).
  std::vector<ParameterRef<Scalar>> named_parameters() {
    unpack_weights();
    using Shape = std::vector<std::int64_t>;
    const std::int64_t d = arch_.embed_dim, pch = arch_.patch_size;
    std::vector<ParameterRef<Scalar>> ps;
    auto add = [&ps](std::string name, Shape shape, Scalar* data) {
      ps.push_back({std::move(name), std::move(shape), data});
    };
    auto add_linear = [&](const std::string& name, nn::Linear<Scalar>& l) {
      add(name + ".weight", {l.weight.rows(), l.weight.cols()}, l.weight.data());
      if (l.has_bias()) add(name + ".bias", {l.bias.size()}, l.bias.data());
    };
    auto add_norm = [&](const std::string& name, nn::LayerNorm<Scalar>& l) {
      add(name + ".weight", {l.weight.size()}, l.weight.data());
      add(name + ".bias", {l.bias.size()}, l.bias.data());
    };
    if (arch_.class_token) add("cls_token", {1, 1, d}, cls_token.data());
    if (arch_.dist_token) add("dist_token", {1, 1, d}, dist_token.data());
    if (arch_.pos_embed == PosEmbedKind::learned)
      add("pos_embed", {1, pos_embed.rows(), d}, pos_embed.data());
    add("patch_embed.proj.weight", {d, arch_.in_chans, pch, pch}, patch_embed.proj.weight.data());
    add("patch_embed.proj.bias", {d}, patch_embed.proj.bias.data());
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      const std::string b = "blocks." + std::to_string(i) + ".";
      add_norm(b + "norm1", blocks[i].norm1);
      add_linear(b + "attn.qkv", blocks[i].attn.qkv);
      add_linear(b + "attn.proj", blocks[i].attn.proj);
      add_norm(b + "norm2", blocks[i].norm2);
      add_linear(b + "mlp.fc1", blocks[i].mlp.fc1);
      add_linear(b + "mlp.fc2", blocks[i].mlp.fc2);
    }
    if (arch_.final_norm) add_norm("norm", norm);
    if (arch_.fc_norm) add_norm("fc_norm", fc_norm);
    if (arch_.representation_size > 0) add_linear("pre_logits.fc", pre_logits);
    if (arch_.num_classes > 0) {
      add_linear("head", head);
      if (arch_.dist_token) add_linear("head_dist", head_dist);
    }
    return ps;
  }

 private:
  // fn(layer, is_edge) for every linear layer; is_edge: the patch embedding
  // and the layers after the pooling (representation layer, heads).
  template <class F>
  void for_each_linear(F&& fn) {
    fn(patch_embed.proj, true);
    for (EncoderBlock<Scalar>& b : blocks) {
      fn(b.attn.qkv, false);
      fn(b.attn.proj, false);
      fn(b.mlp.fc1, false);
      fn(b.mlp.fc2, false);
    }
    if (arch_.representation_size > 0) fn(pre_logits, true);
    if (arch_.num_classes > 0) {
      fn(head, true);
      if (arch_.dist_token) fn(head_dist, true);
    }
  }

  static Architecture static_architecture() {
    static_assert(Config::is_static,
                  "VisionTransformer<DynamicConfig>: pass the Architecture to the constructor");
    if constexpr (Config::is_static) {
      constexpr Architecture a = Config::architecture();
      static_assert(a.image_size % a.patch_size == 0,
                    "Config: image_size must be a multiple of patch_size");
      static_assert(a.embed_dim % a.num_heads == 0,
                    "Config: embed_dim must be a multiple of num_heads");
      static_assert(a.problem() == nullptr, "Config: inconsistent architecture (see problem())");
      return a;
    } else {
      return Architecture{};
    }
  }

  // Grows the workspace to hold a batch of n images on `threads` threads
  // (no-op when it already can).
  void reserve(Workspace<Scalar>& ws, Index n, int threads) const {
    const Index t = arch_.num_tokens(), d = arch_.embed_dim, p = arch_.num_patches();
    const Index patch_len = Index(arch_.in_chans) * arch_.patch_size * arch_.patch_size;
    auto grow = [](Matrix<Scalar>& m, Index rows, Index cols) {
      if (m.rows() < rows || m.cols() != cols) m.resize(rows, cols);
    };
    grow(ws.patches, n * p, patch_len);
    grow(ws.patch_tokens, n * p, d);
    grow(ws.x, n * t, d);
    grow(ws.pooled, n, d);
    grow(ws.pooled_dist, n, d);
    grow(ws.logits_dist, n, arch_.num_classes);
    grow(ws.block.normed, n * t, d);
    grow(ws.block.hidden, n * t, arch_.mlp_hidden);
    grow(ws.block.attn.qkv, n * t, 3 * d);
    grow(ws.block.attn.context, n * t, d);
    // Per-thread parts, sized for the largest product any thread may pick
    // up: which thread runs which task changes from call to call.
    const auto per_thread = std::size_t(threads);
    if (ws.gemm.size() != per_thread) ws.gemm.resize(per_thread);
    std::size_t scratch = patch_embed.proj.scratch_size(n * p, threads);
    for (const EncoderBlock<Scalar>& b : blocks)
      scratch = std::max(scratch, b.scratch_size(n * t, t, threads));
    for (const nn::Linear<Scalar>* l : {&pre_logits, &head, &head_dist})
      scratch = std::max(scratch, l->scratch_size(n, threads));
    for (nn::GemmScratch<Scalar>& g : ws.gemm) g.reserve(scratch);
    if (!blocks.empty()) blocks.front().attn.reserve(ws.block.attn, t, threads);
  }

  // tokens -> pre_logits -> logits.
  void forward_head(Output<Scalar>& out, Index n, const nn::GemmContext<Scalar>& ctx) const {
    const Index t = arch_.num_tokens(), prefix = arch_.num_prefix_tokens();
    const Index p = arch_.num_patches();
    Workspace<Scalar>& ws = out.workspace;
    MatrixRef<Scalar> pooled = ws.pooled.topRows(n);
    for (Index i = 0; i < n; ++i) {
      if (arch_.pooling == Pooling::avg)
        pooled.row(i) = out.tokens.middleRows(i * t + prefix, p).colwise().sum() / Scalar(p);
      else
        pooled.row(i) = out.tokens.row(i * t);
      if (arch_.dist_token) ws.pooled_dist.row(i) = out.tokens.row(i * t + 1);
    }
    // pre_logits: the pooled feature (for distilled models, the mean of the
    // class and distillation tokens), through fc_norm / the representation layer.
    out.pre_logits.resize(n, arch_.num_features());
    if (arch_.representation_size > 0) {
      pre_logits.forward(pooled, out.pre_logits, ctx);
      out.pre_logits = out.pre_logits.array().tanh().matrix();
    } else if (arch_.dist_token) {
      out.pre_logits = (pooled + ws.pooled_dist.topRows(n)) * Scalar(0.5);
    } else {
      out.pre_logits = pooled;
    }
    if (arch_.fc_norm) fc_norm.forward(out.pre_logits, out.pre_logits);

    out.logits.resize(n, arch_.num_classes);
    if (arch_.num_classes == 0) return;
    if (arch_.dist_token) {
      // Eval-mode DeiT: the mean of the class head and the distillation head.
      head.forward(pooled, out.logits, ctx);
      head_dist.forward(ws.pooled_dist.topRows(n), ws.logits_dist.topRows(n), ctx);
      out.logits = (out.logits + ws.logits_dist.topRows(n)) * Scalar(0.5);
    } else {
      head.forward(out.pre_logits, out.logits, ctx);
    }
  }

  Architecture arch_;
  Matrix<Scalar> pos_table_;  // (T, D) added to the tokens at the run size
};

}  // namespace vit
