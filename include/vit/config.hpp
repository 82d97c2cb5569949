// vit/config.hpp - the hyper-parameters of a Vision Transformer, and how a
// model type carries them.
//
// One implementation serves two kinds of configuration:
//   * a compile-time Config (the presets below, or your own struct) fixes the
//     architecture in the type: `VisionTransformer<presets::vit_base_patch16_224<>>`;
//   * `DynamicConfig<Scalar>` leaves it to run time: the architecture is passed
//     to the constructor, e.g. as read from a checkpoint by `vit::load_model`.
// Both are the same class template; a Config only says where the numbers come
// from. A Config is a struct with
//   using Scalar = float;                          // or double
//   static constexpr bool is_static = true;         // false: runtime architecture
//   static constexpr Architecture architecture();  // only when is_static
#pragma once

#include <array>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "vit/error.hpp"

namespace vit {

/// How the image feature is taken from the final tokens.
enum class Pooling {
  cls,  ///< token 0 (class token) after the final norm (timm global_pool='token')
  avg,  ///< mean of the patch tokens only (timm global_pool='avg')
};

/// Where the position embedding comes from.
enum class PosEmbedKind {
  learned,  ///< a learned table stored in the checkpoint
  sincos,   ///< fixed 2-D sin-cos table (MAE layout), computed, not stored
  none,     ///< no position embedding
};

/// The MLP non-linearity.
enum class Activation {
  gelu_erf,    ///< exact GELU 0.5 x (1 + erf(x / sqrt 2)), timm/torchvision/HF "gelu"
  gelu_tanh,   ///< tanh approximation (HF "gelu_new", "gelu_pytorch_tanh")
  quick_gelu,  ///< x * sigmoid(1.702 x) (HF "quick_gelu")
  relu,
};

/// Every number that fixes a ViT's shape and arithmetic. Field names follow
/// timm's `VisionTransformer` arguments.
struct Architecture {
  int image_size = 224;  ///< input side the model runs at (square images)
  int patch_size = 16;
  int in_chans = 3;
  int embed_dim = 768;
  int depth = 12;
  int num_heads = 12;
  int mlp_hidden = 3072;   ///< width of the MLP's hidden layer (embed_dim * mlp_ratio)
  int num_classes = 1000;  ///< 0: no classifier head, pre_logits is the output
  bool qkv_bias = true;
  double layer_norm_eps = 1e-6;  ///< of every LayerNorm (HF uses 1e-12)
  Activation activation = Activation::gelu_erf;
  bool class_token = true;
  bool dist_token = false;  ///< DeiT distillation token (+ head_dist)
  PosEmbedKind pos_embed = PosEmbedKind::learned;
  int pos_embed_grid = 0;  ///< grid the stored table was made for; 0: the run grid
  bool pos_embed_prefix =
      true;  ///< table has rows for the prefix tokens (timm no_embed_class=false)
  Pooling pooling = Pooling::cls;
  bool final_norm = true;       ///< LayerNorm over all tokens after the last block
  bool fc_norm = false;         ///< LayerNorm on the pooled feature (timm global_pool='avg')
  int representation_size = 0;  ///< torchvision pre_logits Linear + tanh before the head; 0: none

  constexpr int grid_size() const { return patch_size > 0 ? image_size / patch_size : 0; }
  constexpr int num_patches() const { return grid_size() * grid_size(); }
  constexpr int num_prefix_tokens() const { return (class_token ? 1 : 0) + (dist_token ? 1 : 0); }
  constexpr int num_tokens() const { return num_prefix_tokens() + num_patches(); }
  constexpr int head_dim() const { return num_heads > 0 ? embed_dim / num_heads : 0; }
  /// The grid of the stored position table (the run grid unless resampled).
  constexpr int table_grid() const { return pos_embed_grid > 0 ? pos_embed_grid : grid_size(); }
  /// Rows of the stored learned position table.
  constexpr int table_rows() const {
    return (pos_embed_prefix ? num_prefix_tokens() : 0) + table_grid() * table_grid();
  }
  /// Width of the pooled feature (pre_logits).
  constexpr int num_features() const {
    return representation_size > 0 ? representation_size : embed_dim;
  }

  /// nullptr when the architecture can be built, otherwise what is wrong.
  /// constexpr so compile-time Configs are checked by static_assert.
  constexpr const char* problem() const {
    if (image_size <= 0 || patch_size <= 0 || in_chans <= 0 || embed_dim <= 0 || depth < 0 ||
        num_heads <= 0 || mlp_hidden <= 0 || num_classes < 0 || representation_size < 0 ||
        pos_embed_grid < 0)
      return "sizes must be positive (depth, num_classes, representation_size >= 0)";
    if (image_size % patch_size != 0) return "image_size must be a multiple of patch_size";
    if (embed_dim % num_heads != 0) return "embed_dim must be a multiple of num_heads";
    if (!(layer_norm_eps > 0)) return "layer_norm_eps must be positive";
    if (dist_token && !class_token) return "a distillation token needs a class token";
    if (dist_token && pooling != Pooling::cls) return "a distilled model pools its tokens";
    if (pooling == Pooling::cls && !class_token) return "cls pooling needs a class token";
    if (pos_embed == PosEmbedKind::sincos && embed_dim % 4 != 0)
      return "a sin-cos position table needs embed_dim divisible by 4";
    if (pos_embed != PosEmbedKind::learned && pos_embed_grid != 0 && pos_embed_grid != grid_size())
      return "only a learned position table can be resampled";
    // Size limits that keep every buffer index (tokens x features) inside
    // 2^31 and reject absurd headers before anything is allocated.
    if (image_size > 16384 || embed_dim > 65536 || mlp_hidden > 262144 || depth > 1024 ||
        num_classes > 1000000 || in_chans > 64 || representation_size > 65536)
      return "a dimension is beyond the supported limits";
    // Attention memory grows with tokens^2: a 128 x 128 grid (2048 pixels at
    // patch 16) is far beyond any published ViT and still fits in memory.
    if (image_size / patch_size > 128)
      return "more than 128 x 128 patches (image_size / patch_size > 128)";
    return nullptr;
  }

  /// Throws config_error unless problem() is nullptr.
  void validate() const {
    if (const char* p = problem()) throw config_error(std::string("invalid architecture: ") + p);
  }

  friend constexpr bool operator==(const Architecture& a, const Architecture& b) {
    return a.image_size == b.image_size && a.patch_size == b.patch_size &&
           a.in_chans == b.in_chans && a.embed_dim == b.embed_dim && a.depth == b.depth &&
           a.num_heads == b.num_heads && a.mlp_hidden == b.mlp_hidden &&
           a.num_classes == b.num_classes && a.qkv_bias == b.qkv_bias &&
           a.layer_norm_eps == b.layer_norm_eps && a.activation == b.activation &&
           a.class_token == b.class_token && a.dist_token == b.dist_token &&
           a.pos_embed == b.pos_embed && a.table_grid() == b.table_grid() &&
           a.pos_embed_prefix == b.pos_embed_prefix && a.pooling == b.pooling &&
           a.final_norm == b.final_norm && a.fc_norm == b.fc_norm &&
           a.representation_size == b.representation_size;
  }
  friend constexpr bool operator!=(const Architecture& a, const Architecture& b) {
    return !(a == b);
  }
};

/// Configuration whose architecture is chosen at run time (constructor argument).
template <class S = float>
struct DynamicConfig {
  using Scalar = S;
  static constexpr bool is_static = false;
};

namespace detail {

/// The timm base recipe: width, depth, heads, MLP ratio 4, class token, qkv bias.
constexpr Architecture vit_arch(int image, int patch, int dim, int depth, int heads) {
  Architecture a;
  a.image_size = image;
  a.patch_size = patch;
  a.embed_dim = dim;
  a.depth = depth;
  a.num_heads = heads;
  a.mlp_hidden = 4 * dim;
  return a;
}

constexpr Architecture distilled(Architecture a) {
  a.dist_token = true;
  return a;
}

constexpr Architecture avg_pooled(Architecture a) {
  a.pooling = Pooling::avg;
  a.final_norm = false;
  a.fc_norm = true;
  return a;
}

struct PresetEntry {
  const char* name;
  Architecture arch;
};

// Architectures of timm's model names (weights not implied: load a checkpoint).
inline constexpr PresetEntry preset_table[] = {
    {"vit_tiny_patch16_224", vit_arch(224, 16, 192, 12, 3)},
    {"vit_tiny_patch16_384", vit_arch(384, 16, 192, 12, 3)},
    {"vit_small_patch16_224", vit_arch(224, 16, 384, 12, 6)},
    {"vit_small_patch16_384", vit_arch(384, 16, 384, 12, 6)},
    {"vit_small_patch32_224", vit_arch(224, 32, 384, 12, 6)},
    {"vit_small_patch32_384", vit_arch(384, 32, 384, 12, 6)},
    {"vit_base_patch16_224", vit_arch(224, 16, 768, 12, 12)},
    {"vit_base_patch16_384", vit_arch(384, 16, 768, 12, 12)},
    {"vit_base_patch32_224", vit_arch(224, 32, 768, 12, 12)},
    {"vit_base_patch32_384", vit_arch(384, 32, 768, 12, 12)},
    {"vit_base_patch8_224", vit_arch(224, 8, 768, 12, 12)},
    {"vit_large_patch16_224", vit_arch(224, 16, 1024, 24, 16)},
    {"vit_large_patch16_384", vit_arch(384, 16, 1024, 24, 16)},
    {"vit_large_patch32_384", vit_arch(384, 32, 1024, 24, 16)},
    {"vit_huge_patch14_224", vit_arch(224, 14, 1280, 32, 16)},
    {"vit_medium_patch16_gap_256", avg_pooled(vit_arch(256, 16, 512, 12, 8))},
    {"deit_tiny_patch16_224", vit_arch(224, 16, 192, 12, 3)},
    {"deit_small_patch16_224", vit_arch(224, 16, 384, 12, 6)},
    {"deit_base_patch16_224", vit_arch(224, 16, 768, 12, 12)},
    {"deit_base_patch16_384", vit_arch(384, 16, 768, 12, 12)},
    {"deit_tiny_distilled_patch16_224", distilled(vit_arch(224, 16, 192, 12, 3))},
    {"deit_small_distilled_patch16_224", distilled(vit_arch(224, 16, 384, 12, 6))},
    {"deit_base_distilled_patch16_224", distilled(vit_arch(224, 16, 768, 12, 12))},
    {"deit_base_distilled_patch16_384", distilled(vit_arch(384, 16, 768, 12, 12))},
};

constexpr bool same_name(const char* a, const char* b) {
  while (*a != '\0' && *a == *b) ++a, ++b;
  return *a == *b;
}

constexpr Architecture preset_or_throw(const char* name) {
  for (const auto& e : preset_table)
    if (same_name(e.name, name)) return e.arch;
  throw "unknown preset";  // only reachable at compile time from a typo below
}

}  // namespace detail

/// Names of all presets, in table order.
inline std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const auto& e : detail::preset_table) names.emplace_back(e.name);
  return names;
}

/// The architecture of a preset by name (e.g. "vit_base_patch16_224");
/// throws config_error listing the known names otherwise.
inline Architecture preset_architecture(std::string_view name) {
  std::string known;
  for (const auto& e : detail::preset_table) {
    if (name == e.name) return e.arch;
    known += known.empty() ? "" : ", ";
    known += e.name;
  }
  throw config_error("unknown model preset '" + std::string(name) + "' (known: " + known + ")");
}

/// Compile-time presets named like timm's models, e.g.
/// `VisionTransformer<presets::vit_base_patch16_224<float>>`.
namespace presets {
#define VIT_DEFINE_PRESET(NAME)                                                             \
  template <class S = float>                                                                \
  struct NAME {                                                                             \
    using Scalar = S;                                                                       \
    static constexpr bool is_static = true;                                                 \
    static constexpr const char* name = #NAME;                                              \
    static constexpr Architecture architecture() { return detail::preset_or_throw(#NAME); } \
  };
VIT_DEFINE_PRESET(vit_tiny_patch16_224)
VIT_DEFINE_PRESET(vit_tiny_patch16_384)
VIT_DEFINE_PRESET(vit_small_patch16_224)
VIT_DEFINE_PRESET(vit_small_patch16_384)
VIT_DEFINE_PRESET(vit_small_patch32_224)
VIT_DEFINE_PRESET(vit_small_patch32_384)
VIT_DEFINE_PRESET(vit_base_patch16_224)
VIT_DEFINE_PRESET(vit_base_patch16_384)
VIT_DEFINE_PRESET(vit_base_patch32_224)
VIT_DEFINE_PRESET(vit_base_patch32_384)
VIT_DEFINE_PRESET(vit_base_patch8_224)
VIT_DEFINE_PRESET(vit_large_patch16_224)
VIT_DEFINE_PRESET(vit_large_patch16_384)
VIT_DEFINE_PRESET(vit_large_patch32_384)
VIT_DEFINE_PRESET(vit_huge_patch14_224)
VIT_DEFINE_PRESET(vit_medium_patch16_gap_256)
VIT_DEFINE_PRESET(deit_tiny_patch16_224)
VIT_DEFINE_PRESET(deit_small_patch16_224)
VIT_DEFINE_PRESET(deit_base_patch16_224)
VIT_DEFINE_PRESET(deit_base_patch16_384)
VIT_DEFINE_PRESET(deit_tiny_distilled_patch16_224)
VIT_DEFINE_PRESET(deit_small_distilled_patch16_224)
VIT_DEFINE_PRESET(deit_base_distilled_patch16_224)
VIT_DEFINE_PRESET(deit_base_distilled_patch16_384)
#undef VIT_DEFINE_PRESET
}  // namespace presets

/// How a checkpoint says its images were prepared (timm pretrained_cfg,
/// HF preprocessor_config). Used by the image pipeline; defaults are timm's
/// for ViT (mean = std = 0.5, bicubic, crop_pct 0.9).
struct DataConfig {
  int input_size = 224;
  std::array<double, 3> mean{0.5, 0.5, 0.5};
  std::array<double, 3> std{0.5, 0.5, 0.5};
  std::string interpolation = "bicubic";
  double crop_pct = 0.9;
  /// "center": resize the shorter side to input_size / crop_pct, then centre
  /// crop (timm, torchvision); "squash": resize both sides straight to
  /// input_size, no crop (Hugging Face ViTImageProcessor).
  std::string crop_mode = "center";
};

}  // namespace vit
