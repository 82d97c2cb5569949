// vit/io/checkpoint.hpp - load a ViT from a timm, Hugging Face or torchvision
// safetensors checkpoint (and save one in timm naming).
//
//   auto loaded = vit::load_model<float>("vit_base_patch16_224/");  // folder or .safetensors
//   loaded.model.forward(images, out);
//
// The naming scheme is detected from the tensor names; the architecture is
// read from the tensors' shapes plus whatever the sidecar config files say.
// Loading is all-or-nothing: every tensor is checked by name, shape and dtype
// before the first one is copied, so a file that does not fit leaves the model
// as it was. Tensors are copied straight into the model, and a memory-mapped
// file's pages are released as they are copied: peak memory stays close to
// the model's own size.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "vit/config.hpp"
#include "vit/error.hpp"
#include "vit/io/hub_config.hpp"
#include "vit/io/safetensors.hpp"
#include "vit/vision_transformer.hpp"

namespace vit::io {

/// The key-name schemes of the libraries whose checkpoints we read.
enum class Naming { timm, torchvision, hf };

inline const char* naming_name(Naming n) {
  switch (n) {
    case Naming::timm:
      return "timm";
    case Naming::torchvision:
      return "torchvision";
    case Naming::hf:
      return "hf";
  }
  return "?";
}

namespace detail {

inline std::string join(const std::vector<std::string>& v, std::size_t max_items = 8) {
  std::string s;
  for (std::size_t i = 0; i < v.size() && i < max_items; ++i) s += (i ? ", " : "") + v[i];
  if (v.size() > max_items) s += ", ... (" + std::to_string(v.size()) + " in all)";
  return s;
}

inline std::string shape_str(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

inline bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

/// Maps timm parameter names (our canonical names) to the keys of one file.
class KeyMap {
 public:
  KeyMap(const SafeTensors& file) : file_(file) {
    if (file.contains("patch_embed.proj.weight")) {
      naming_ = Naming::timm;
    } else if (file.contains("conv_proj.weight")) {
      naming_ = Naming::torchvision;
    } else {
      for (const char* p : {"vit.", "deit.", ""})
        if (file.contains(std::string(p) + "embeddings.patch_embeddings.projection.weight")) {
          naming_ = Naming::hf;
          prefix_ = p;
          found_ = true;
          break;
        }
      if (!found_)
        throw checkpoint_error(file.source() +
                               ": not a ViT checkpoint in timm, torchvision or Hugging Face "
                               "naming (no patch_embed.proj.weight, conv_proj.weight or "
                               "embeddings.patch_embeddings.projection.weight)");
    }
  }

  Naming naming() const { return naming_; }

  /// File keys holding canonical tensor `name` (several for HF's split q/k/v,
  /// stacked in order); empty when the file does not have it.
  std::vector<std::string> keys(const std::string& name) const {
    std::vector<std::string> out;
    for (const std::string& k : candidates(name)) {
      if (file_.contains(k)) {
        out.push_back(k);
        if (naming_ != Naming::hf || name.find(".attn.qkv.") == std::string::npos) break;
      } else if (naming_ == Naming::hf && name.find(".attn.qkv.") != std::string::npos) {
        return {};  // q, k and v must all be there
      }
    }
    return out;
  }

  /// Keys the model does not use but that real checkpoints carry.
  bool ignorable(const std::string& key) const {
    if (naming_ == Naming::hf)
      return starts_with(key, prefix_ + "pooler.") || key == prefix_ + "embeddings.mask_token";
    return false;
  }

 private:
  std::vector<std::string> candidates(const std::string& name) const {
    if (naming_ == Naming::timm) return {name};
    // Split "blocks.<i>.<rest>".
    std::string block, rest;
    if (starts_with(name, "blocks.")) {
      const std::size_t dot = name.find('.', 7);
      block = name.substr(7, dot - 7);
      rest = name.substr(dot + 1);
    }
    if (naming_ == Naming::torchvision) {
      if (name == "cls_token") return {"class_token"};
      if (name == "pos_embed") return {"encoder.pos_embedding"};
      if (starts_with(name, "patch_embed.proj.")) return {"conv_proj." + name.substr(17)};
      if (starts_with(name, "norm.")) return {"encoder.ln." + name.substr(5)};
      if (starts_with(name, "head.")) return {"heads.head." + name.substr(5)};
      if (starts_with(name, "pre_logits.fc.")) return {"heads.pre_logits." + name.substr(14)};
      if (block.empty()) return {};
      const std::string b = "encoder.layers.encoder_layer_" + block + ".";
      if (starts_with(rest, "norm1.")) return {b + "ln_1." + rest.substr(6)};
      if (starts_with(rest, "norm2.")) return {b + "ln_2." + rest.substr(6)};
      if (rest == "attn.qkv.weight") return {b + "self_attention.in_proj_weight"};
      if (rest == "attn.qkv.bias") return {b + "self_attention.in_proj_bias"};
      if (starts_with(rest, "attn.proj."))
        return {b + "self_attention.out_proj." + rest.substr(10)};
      // torchvision renamed linear_1/linear_2 to mlp.0/mlp.3; files have either.
      if (starts_with(rest, "mlp.fc1."))
        return {b + "mlp.0." + rest.substr(8), b + "mlp.linear_1." + rest.substr(8)};
      if (starts_with(rest, "mlp.fc2."))
        return {b + "mlp.3." + rest.substr(8), b + "mlp.linear_2." + rest.substr(8)};
      return {};
    }
    // Hugging Face ViT / DeiT.
    const std::string& p = prefix_;
    if (name == "cls_token") return {p + "embeddings.cls_token"};
    if (name == "dist_token") return {p + "embeddings.distillation_token"};
    if (name == "pos_embed") return {p + "embeddings.position_embeddings"};
    if (starts_with(name, "patch_embed.proj."))
      return {p + "embeddings.patch_embeddings.projection." + name.substr(17)};
    if (starts_with(name, "norm.")) return {p + "layernorm." + name.substr(5)};
    if (starts_with(name, "head."))
      return {"classifier." + name.substr(5), "cls_classifier." + name.substr(5)};
    if (starts_with(name, "head_dist.")) return {"distillation_classifier." + name.substr(10)};
    if (block.empty()) return {};
    const std::string b = p + "encoder.layer." + block + ".";
    if (starts_with(rest, "norm1.")) return {b + "layernorm_before." + rest.substr(6)};
    if (starts_with(rest, "norm2.")) return {b + "layernorm_after." + rest.substr(6)};
    if (starts_with(rest, "attn.qkv.")) {
      const std::string what = rest.substr(9);
      return {b + "attention.attention.query." + what, b + "attention.attention.key." + what,
              b + "attention.attention.value." + what};
    }
    if (starts_with(rest, "attn.proj.")) return {b + "attention.output.dense." + rest.substr(10)};
    if (starts_with(rest, "mlp.fc1.")) return {b + "intermediate.dense." + rest.substr(8)};
    if (starts_with(rest, "mlp.fc2.")) return {b + "output.dense." + rest.substr(8)};
    return {};
  }

  const SafeTensors& file_;
  Naming naming_ = Naming::timm;
  std::string prefix_;
  bool found_ = false;
};

// Shape of canonical tensor `name` in the file (HF q/k/v stacked), or empty.
inline std::vector<std::int64_t> file_shape(const SafeTensors& f, const KeyMap& km,
                                            const std::string& name) {
  const std::vector<std::string> keys = km.keys(name);
  if (keys.empty()) return {};
  std::vector<std::int64_t> shape = f.info(keys[0]).shape;
  if (keys.size() > 1 && !shape.empty()) shape[0] *= std::int64_t(keys.size());
  return shape;
}

inline int checked_int(std::int64_t v, const std::string& source, const std::string& what) {
  if (v <= 0 || v > (std::int64_t(1) << 30))
    throw checkpoint_error(source + ": " + what + " = " + std::to_string(v) + " is out of range");
  return int(v);
}

inline int isqrt_exact(std::int64_t v) {
  if (v < 0) return -1;
  auto r = std::int64_t(std::llround(std::sqrt(double(v))));
  return r * r == v ? int(r) : -1;
}

// The usual head counts of ViT widths (timm / torchvision recipes), used when
// no config file says how many heads there are.
inline int default_heads(int dim) {
  switch (dim) {
    case 192:
      return 3;
    case 384:
      return 6;
    case 768:
      return 12;
    case 1024:
      return 16;
    case 1280:
      return 16;
    case 1408:
      return 16;
    case 1664:
      return 16;
    default:
      return dim % 64 == 0 ? dim / 64 : 1;
  }
}

}  // namespace detail

/// Where a model came from and how it expects its images prepared.
struct CheckpointInfo {
  std::string weights_path;
  std::vector<std::string> config_paths;  // sidecar files that were read
  Naming naming = Naming::timm;
  Architecture architecture;
  DataConfig data;
  std::vector<std::string> labels;  // class names, empty when no file names them
};

/// Options of load_model(); unset fields come from the files.
struct LoadOptions {
  std::string config_path;  ///< a config.json to read; default: config.json beside the weights
  std::string preprocessor_config_path;  ///< default: preprocessor_config.json beside the weights
  int image_size = 0;  ///< run at this size (resamples the position table); 0: as configured
  int num_heads = 0;   ///< override; needed for torchvision files of unusual width
  /// Arithmetic of the linear layers (float models): fp32 weights are packed
  /// for the AVX-512 kernel where the CPU has it; bf16 / int8 are always
  /// packed (see VisionTransformer::pack_weights).
  Precision precision = Precision::fp32;
  /// Refuse weights holding a NaN or an infinity (checkpoint_error naming
  /// the tensor and its first bad element; see check_finite()). Checked
  /// after conversion to the model's Scalar, so F64 values beyond float's
  /// range count too. Off by default because it costs one more pass over all
  /// the weights on every load; vit-classify and vit-eval turn it on.
  bool check_finite = false;
};

/// Reads the architecture of a checkpoint from its tensors and `hub`.
inline Architecture infer_architecture(const SafeTensors& f, const HubConfig& hub,
                                       Naming* naming = nullptr) {
  const detail::KeyMap km(f);
  if (naming) *naming = km.naming();
  const std::string& src = f.source();
  Architecture a;
  const auto pe = detail::file_shape(f, km, "patch_embed.proj.weight");
  if (pe.size() != 4 || pe[2] != pe[3])
    throw checkpoint_error(src + ": patch embedding weight must be [D, C, P, P], got " +
                           detail::shape_str(pe));
  a.embed_dim = detail::checked_int(pe[0], src, "embed_dim");
  a.in_chans = detail::checked_int(pe[1], src, "in_chans");
  a.patch_size = detail::checked_int(pe[2], src, "patch_size");

  a.depth = 0;
  while (!km.keys("blocks." + std::to_string(a.depth) + ".norm1.weight").empty()) ++a.depth;
  if (a.depth == 0) throw checkpoint_error(src + ": no encoder blocks found");
  const auto fc1 = detail::file_shape(f, km, "blocks.0.mlp.fc1.weight");
  if (fc1.size() != 2)
    throw checkpoint_error(src + ": missing or malformed MLP fc1 weight of block 0");
  a.mlp_hidden = detail::checked_int(fc1[0], src, "mlp hidden width");
  a.qkv_bias = !km.keys("blocks.0.attn.qkv.bias").empty();
  a.class_token = !km.keys("cls_token").empty();
  a.dist_token = !km.keys("dist_token").empty();
  a.final_norm = !km.keys("norm.weight").empty();
  a.fc_norm = !km.keys("fc_norm.weight").empty();
  a.layer_norm_eps = km.naming() == Naming::hf ? 1e-12 : 1e-6;
  if (hub.layer_norm_eps) a.layer_norm_eps = *hub.layer_norm_eps;
  if (hub.activation) a.activation = *hub.activation;

  const auto pre = detail::file_shape(f, km, "pre_logits.fc.weight");
  a.representation_size =
      pre.size() == 2 ? detail::checked_int(pre[0], src, "representation size") : 0;
  const auto head = detail::file_shape(f, km, "head.weight");
  a.num_classes = head.size() == 2 ? detail::checked_int(head[0], src, "num_classes") : 0;

  // Pooling: the config says, else what the norms imply (timm drops the final
  // norm and adds fc_norm for average pooling), else the class token.
  if (hub.pooling)
    a.pooling = *hub.pooling;
  else
    a.pooling = (!a.class_token || (a.fc_norm && !a.final_norm)) ? Pooling::avg : Pooling::cls;

  // Position table: rows = prefix + grid^2, or grid^2 alone (no_embed_class).
  const auto pos = detail::file_shape(f, km, "pos_embed");
  const int prefix = a.num_prefix_tokens();
  if (!pos.empty()) {
    if (pos.size() != 3 || pos[0] != 1 || pos[2] != a.embed_dim)
      throw checkpoint_error(src + ": position embedding must be [1, T, " +
                             std::to_string(a.embed_dim) + "], got " + detail::shape_str(pos));
    a.pos_embed = PosEmbedKind::learned;
    int g = detail::isqrt_exact(pos[1] - prefix);
    a.pos_embed_prefix = true;
    if (g <= 0 && prefix > 0) {
      g = detail::isqrt_exact(pos[1]);
      a.pos_embed_prefix = false;
    }
    if (g <= 0)
      throw checkpoint_error(src + ": position embedding has " + std::to_string(pos[1]) +
                             " rows, which is not " + std::to_string(prefix) +
                             " prefix rows plus a square grid");
    a.pos_embed_grid = g;
  } else {
    if (!hub.pos_embed)
      throw checkpoint_error(src +
                             ": no position embedding tensor, and no config says the model uses "
                             "a fixed one (pos_embed 'sincos' or 'none')");
    if (*hub.pos_embed == PosEmbedKind::learned)
      throw checkpoint_error(src + ": missing tensor pos_embed (the config says it is learned)");
    a.pos_embed = *hub.pos_embed;
  }

  const int table_grid = a.pos_embed_grid;
  a.image_size = hub.image_size.value_or(
      hub.input_size.value_or(table_grid > 0 ? table_grid * a.patch_size : 224));
  if (a.pos_embed != PosEmbedKind::learned) a.pos_embed_grid = 0;

  // Heads are not visible in any shape: config, architecture name, or the usual recipe.
  if (hub.num_heads)
    a.num_heads = *hub.num_heads;
  else if (!hub.architecture.empty()) {
    const std::string base = hub.architecture.substr(0, hub.architecture.find('.'));
    try {
      a.num_heads = preset_architecture(base).num_heads;
    } catch (const config_error&) {
      a.num_heads = detail::default_heads(a.embed_dim);
    }
  } else {
    a.num_heads = detail::default_heads(a.embed_dim);
  }
  // Facts the config states must agree with the tensors.
  auto agree = [&](const std::optional<int>& said, int seen, const char* what) {
    if (said && *said != seen)
      throw checkpoint_error(src + ": config says " + what + " = " + std::to_string(*said) +
                             " but the tensors have " + std::to_string(seen));
  };
  agree(hub.embed_dim, a.embed_dim, "embed_dim");
  agree(hub.depth, a.depth, "depth");
  agree(hub.patch_size, a.patch_size, "patch_size");
  agree(hub.mlp_hidden, a.mlp_hidden, "mlp hidden width");
  if (hub.num_classes && a.num_classes != 0) agree(hub.num_classes, a.num_classes, "num_classes");
  if (const char* p = a.problem())
    throw checkpoint_error(src + ": the checkpoint describes an unsupported architecture: " + p);
  return a;
}

namespace detail {

// load_weights() for the model's plain (unpacked) parameters: checks every
// tensor, then copies them all. Nothing is written unless everything fits.
template <class Config>
void load_plain_weights(VisionTransformer<Config>& model, const SafeTensors& file) {
  using Scalar = typename Config::Scalar;
  const detail::KeyMap km(file);
  const std::string& src = file.source();
  // The model's own parameters give the names, shapes and destinations; no
  // second model is needed because nothing is written until all are checked.
  struct Copy {
    const std::string* key;  // into file.tensors(), which outlives the plan
    Scalar* to;
    std::size_t count;
  };
  std::vector<Copy> plan;
  std::set<std::string> used;
  std::vector<std::string> missing;
  for (const ParameterRef<Scalar>& p : model.named_parameters()) {
    const std::vector<std::string> keys = km.keys(p.name);
    if (keys.empty()) {
      missing.push_back(p.name);
      continue;
    }
    std::uint64_t expected = 1;
    for (auto d : p.shape) expected *= std::uint64_t(d);
    std::vector<std::int64_t> got = file.info(keys[0]).shape;
    if (keys.size() > 1 && !got.empty()) got[0] *= std::int64_t(keys.size());
    for (std::size_t i = 1; i < keys.size(); ++i)
      if (file.info(keys[i]).shape != file.info(keys[0]).shape)
        throw checkpoint_error(src + ": tensor '" + keys[i] + "' has shape " +
                               detail::shape_str(file.info(keys[i]).shape) + ", expected " +
                               detail::shape_str(file.info(keys[0]).shape) + " like '" + keys[0] +
                               "'");
    if (got != p.shape)
      throw checkpoint_error(src + ": tensor '" + keys[0] + "' has shape " +
                             detail::shape_str(got) + ", expected " + detail::shape_str(p.shape) +
                             (keys[0] != p.name ? " (for " + p.name + ")" : std::string()));
    const std::size_t part = std::size_t(expected / keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) {
      const TensorInfo& t = file.check_read(keys[i], part);  // dtype, as read() would
      plan.push_back({&t.name, p.data + i * part, part});
      used.insert(keys[i]);
    }
  }
  if (!missing.empty())
    throw checkpoint_error(src + ": missing tensor(s) for this architecture (" +
                           naming_name(km.naming()) + " naming): " + detail::join(missing));
  std::vector<std::string> unknown;
  for (const TensorInfo& t : file.tensors())
    if (!used.count(t.name) && !km.ignorable(t.name)) unknown.push_back(t.name);
  if (!unknown.empty())
    throw checkpoint_error(
        src + ": unknown tensor(s) not used by this architecture: " + detail::join(unknown));

  // Everything fits: from here on read() cannot fail, so the model is never
  // left half-loaded.
  for (const Copy& c : plan) {
    file.read(*c.key, c.to, c.count);
    file.release(*c.key);
  }
  model.update_position_table();
}

// Index of the first NaN or infinity among `count` values; count when there is none.
template <class Scalar>
std::size_t first_non_finite(const Scalar* data, std::size_t count) {
  // One vectorised pass for the usual, clean tensor; the element by element
  // search only for a bad one.
  using Values = Eigen::Array<Scalar, Eigen::Dynamic, 1>;
  if (Eigen::Map<const Values>(data, Index(count)).allFinite()) return count;
  std::size_t i = 0;
  while (i < count && std::isfinite(data[i])) ++i;
  return i;
}

inline const char* non_finite_name(double v) {
  return std::isnan(v) ? "nan" : v > 0 ? "inf" : "-inf";
}

// "[i, j, ...]": the position of flat element `at` in a row-major tensor.
inline std::string position_str(std::size_t at, const std::vector<std::int64_t>& shape) {
  std::vector<std::int64_t> index(shape.size());
  for (std::size_t d = shape.size(); d-- > 0;) {
    const auto extent = std::size_t(std::max<std::int64_t>(shape[d], 1));
    index[d] = std::int64_t(at % extent);
    at /= extent;
  }
  return shape_str(index);
}

// check_finite() on a model whose plain parameters can be read; km: the
// naming of the file they came from, to report the file's key (null: timm
// names).
template <class Config>
void check_plain_finite(VisionTransformer<Config>& model, const std::string& source,
                        const KeyMap* km) {
  for (const auto& p : model.named_parameters()) {
    std::size_t count = 1;
    for (auto d : p.shape) count *= std::size_t(d);
    const std::size_t bad = first_non_finite(p.data, count);
    if (bad == count) continue;
    std::string name = p.name;
    std::vector<std::int64_t> shape = p.shape;
    std::size_t at = bad;
    const std::vector<std::string> keys = km ? km->keys(p.name) : std::vector<std::string>();
    if (!keys.empty()) {
      // Hugging Face's q, k and v are stacked along the first axis.
      const std::size_t part = count / keys.size();
      name = keys[at / part];
      at %= part;
      if (keys.size() > 1) shape[0] /= std::int64_t(keys.size());
    }
    throw checkpoint_error(source + ": tensor '" + name + "' has a non-finite value (" +
                           non_finite_name(double(p.data[bad])) + ") at element " +
                           std::to_string(at) +
                           (shape.size() > 1 ? " " + position_str(at, shape) : std::string()) +
                           (name != p.name ? " (for " + p.name + ")" : std::string()));
  }
}

}  // namespace detail

/// Throws checkpoint_error if any parameter of `model` holds a NaN or an
/// infinity, naming `source` (the file the weights came from), the tensor
/// (timm name) and the first bad element, e.g. "<source>: tensor
/// 'blocks.0.attn.qkv.weight' has a non-finite value (nan) at element 17
/// [0, 17]". One pass over the weights; a model with packed weights is
/// checked on an unpacked copy (memory for a second model meanwhile).
/// load_model() does this before packing when LoadOptions::check_finite is
/// set, naming the tensor as the file does.
template <class Config>
void check_finite(const VisionTransformer<Config>& model, const std::string& source) {
  if (model.weights_packed()) {
    VisionTransformer<Config> copy(model);
    detail::check_plain_finite(copy, source, nullptr);
  } else {
    // named_parameters() of an unpacked model only hands out pointers: the
    // model is read, never written.
    detail::check_plain_finite(const_cast<VisionTransformer<Config>&>(model), source, nullptr);
  }
}

/// Reads every parameter of `model` from `file` (any supported naming),
/// converting F16/BF16/F64 to the model's scalar type. All tensors are
/// checked first; the model is only changed when all of them fit, and
/// tensors the model does not have are an error. Tensors are copied straight
/// into the model, and the file's pages of each are released
/// (SafeTensors::release) once copied. A model with packed weights is packed
/// again at its precision afterwards, also when loading fails. (Running out
/// of memory after the copy, while recomputing the position table or
/// repacking, is the one failure that leaves the new weights in place.)
/// Values are not checked for NaN / Inf: call check_finite() afterwards (the
/// model then already holds them), or load with LoadOptions::check_finite.
template <class Config>
void load_weights(VisionTransformer<Config>& model, const SafeTensors& file) {
  // named_parameters() unpacks packed weights to hand out plain tensors.
  const bool packed = model.weights_packed();
  const Precision precision = model.precision();
  try {
    detail::load_plain_weights(model, file);
  } catch (...) {
    if (packed) {
      try {
        model.pack_weights(precision);
      } catch (...) {
        // Still the same weights, only unpacked; the load error is the one to report.
      }
    }
    throw;
  }
  if (packed) model.pack_weights(precision);
}

/// load_weights from a file path.
template <class Config>
void load_weights(VisionTransformer<Config>& model, const std::string& path) {
  load_weights(model, SafeTensors::open(path));
}

/// A model whose architecture was read from its checkpoint, with what the
/// files said about it.
template <class Scalar>
struct LoadedModel {
  VisionTransformer<DynamicConfig<Scalar>> model;
  CheckpointInfo info;
};

namespace detail {
inline std::string existing(const std::filesystem::path& p) {
  std::error_code ec;
  return std::filesystem::is_regular_file(p, ec) ? p.string() : std::string();
}
}  // namespace detail

/// Loads a checkpoint whose architecture is known only at run time.
/// `path`: a .safetensors file, or a folder holding model.safetensors; the
/// config.json / preprocessor_config.json beside it are read when present.
template <class Scalar = float>
LoadedModel<Scalar> load_model(const std::string& path, const LoadOptions& options = {}) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path weights = path;
  if (fs::is_directory(weights, ec)) weights /= "model.safetensors";
  const SafeTensors file = SafeTensors::open(weights.string());

  CheckpointInfo info;
  info.weights_path = weights.string();
  HubConfig hub;
  const std::string config = !options.config_path.empty()
                                 ? options.config_path
                                 : detail::existing(weights.parent_path() / "config.json");
  if (!config.empty()) {
    read_config_file(config, hub);
    info.config_paths.push_back(config);
  }
  const std::string pre =
      !options.preprocessor_config_path.empty()
          ? options.preprocessor_config_path
          : detail::existing(weights.parent_path() / "preprocessor_config.json");
  if (!pre.empty()) {
    read_preprocessor_config(pre, hub);
    info.config_paths.push_back(pre);
  }
  if (options.num_heads > 0) hub.num_heads = options.num_heads;

  Architecture arch;
  try {
    arch = infer_architecture(file, hub, &info.naming);
  } catch (const checkpoint_error& e) {
    // The sizes may have come from a sidecar file: name it too.
    if (info.config_paths.empty()) throw;
    throw checkpoint_error(std::string(e.what()) + " (with " + detail::join(info.config_paths) +
                           ")");
  }
  if (options.image_size > 0) {
    arch.image_size = options.image_size;
    if (const char* p = arch.problem())
      throw argument_error("image_size " + std::to_string(options.image_size) + ": " + p);
  }
  info.architecture = arch;
  info.data.input_size = arch.image_size;
  if (info.naming == Naming::torchvision) {
    // torchvision's ViT weights are trained with ImageNet statistics.
    info.data.mean = {0.485, 0.456, 0.406};
    info.data.std = {0.229, 0.224, 0.225};
    info.data.interpolation = "bilinear";
    info.data.crop_pct = 224.0 / 256.0;
  }
  if (hub.mean) info.data.mean = *hub.mean;
  if (hub.std) info.data.std = *hub.std;
  if (hub.interpolation) info.data.interpolation = *hub.interpolation;
  if (hub.crop_pct) info.data.crop_pct = *hub.crop_pct;
  if (hub.crop_mode) info.data.crop_mode = *hub.crop_mode;
  if (hub.input_size && options.image_size == 0) info.data.input_size = *hub.input_size;
  info.labels = hub.labels;
  if (!info.labels.empty() && arch.num_classes != 0 &&
      info.labels.size() != std::size_t(arch.num_classes))
    throw checkpoint_error(config + ": has " + std::to_string(info.labels.size()) +
                           " class names but the head has " + std::to_string(arch.num_classes) +
                           " outputs");

  LoadedModel<Scalar> loaded{VisionTransformer<DynamicConfig<Scalar>>(arch), std::move(info)};
  load_weights(loaded.model, file);
  if (options.check_finite) {
    // Before packing: the plain weights are at hand, in the file's order.
    const detail::KeyMap km(file);
    detail::check_plain_finite(loaded.model, file.source(), &km);
  }
  if constexpr (std::is_same_v<Scalar, float>) {
    if (options.precision != Precision::fp32 || nn::gemm_packed_uses_avx512())
      loaded.model.pack_weights(options.precision);
  } else if (options.precision != Precision::fp32) {
    throw argument_error(std::string("load_model: precision ") + precision_name(options.precision) +
                         " needs a float model");
  }
  return loaded;
}

/// Writes the model's parameters as a safetensors file in timm naming
/// (float32 unless `dtype` says otherwise), atomically.
template <class Config>
void save_weights(const VisionTransformer<Config>& model, const std::string& path,
                  DType dtype = DType::F32) {
  SafeTensorsWriter w;
  w.set_metadata("format", "pt");
  // named_parameters() hands out writable pointers (and unpacks packed
  // weights): a packed model is saved from an unpacked copy, so the caller's
  // model is never changed.
  auto& m = const_cast<VisionTransformer<Config>&>(model);
  std::optional<VisionTransformer<Config>> copy;
  if (model.weights_packed()) copy.emplace(model);
  for (const auto& p : (copy ? *copy : m).named_parameters()) w.add(p.name, p.shape, p.data, dtype);
  w.write(path);
}

/// The timm-style config.json of a model: architecture name, num_classes,
/// global_pool, model_args (what timm's VisionTransformer takes), the
/// preprocessing as pretrained_cfg, and the class names as label_names.
template <class Config>
nlohmann::json model_config_json(const VisionTransformer<Config>& model, const DataConfig& data,
                                 const std::vector<std::string>& labels,
                                 const std::string& architecture = "vit_custom") {
  const Architecture& a = model.architecture();
  const std::string pool = a.pooling == Pooling::avg ? "avg" : "token";
  const char* pos = a.pos_embed == PosEmbedKind::learned  ? "learn"
                    : a.pos_embed == PosEmbedKind::sincos ? "sincos"
                                                          : "none";
  nlohmann::json j;
  j["architecture"] = architecture;
  j["num_classes"] = a.num_classes;
  j["global_pool"] = pool;
  j["model_args"] = {{"img_size", a.image_size},
                     {"patch_size", a.patch_size},
                     {"in_chans", a.in_chans},
                     {"embed_dim", a.embed_dim},
                     {"depth", a.depth},
                     {"num_heads", a.num_heads},
                     {"mlp_ratio", double(a.mlp_hidden) / double(a.embed_dim)},
                     {"num_classes", a.num_classes},
                     {"global_pool", pool},
                     {"class_token", a.class_token},
                     {"qkv_bias", a.qkv_bias},
                     {"fc_norm", a.fc_norm},
                     {"no_embed_class", !a.pos_embed_prefix},
                     {"pos_embed", pos}};
  j["pretrained_cfg"] = {{"input_size", {a.in_chans, a.image_size, a.image_size}},
                         {"mean", data.mean},
                         {"std", data.std},
                         {"interpolation", data.interpolation},
                         {"crop_pct", data.crop_pct},
                         {"crop_mode", data.crop_mode},
                         {"num_classes", a.num_classes}};
  if (!labels.empty()) j["label_names"] = labels;
  return j;
}

/// Writes a model folder that load_model(dir) (and timm) read back:
/// dir/model.safetensors and dir/config.json (model_config_json), each
/// written to a temporary file first and renamed, so an interrupted save
/// never leaves a half-written file under either name.
template <class Config>
void save_model(const VisionTransformer<Config>& model, const std::string& dir,
                const DataConfig& data, const std::vector<std::string>& labels,
                const std::string& architecture = "vit_custom") {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir)) throw io_error(dir + ": cannot create the model folder");
  if (!labels.empty() && int(labels.size()) != model.architecture().num_classes)
    throw argument_error("save_model: " + std::to_string(labels.size()) + " class names for " +
                         std::to_string(model.architecture().num_classes) + " classes");
  save_weights(model, (fs::path(dir) / "model.safetensors").string());
  const std::string path = (fs::path(dir) / "config.json").string();
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << model_config_json(model, data, labels, architecture).dump(2) << "\n";
    out.flush();
    if (!out) {
      fs::remove(tmp, ec);
      throw io_error(tmp + ": cannot write");
    }
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw io_error(path + ": cannot rename the written config into place");
  }
}

}  // namespace vit::io

namespace vit {
using io::check_finite;
using io::load_model;
using io::load_weights;
using io::LoadOptions;
using io::save_model;
using io::save_weights;
}  // namespace vit
