// vit/io/hub_config.hpp - what the sidecar JSON files of a checkpoint say.
//
// Understood files:
//   * timm's config.json: "architecture", "num_classes", "global_pool",
//     "model_args", "pretrained_cfg" (input_size, mean, std, interpolation,
//     crop_pct), "label_names";
//   * Hugging Face's config.json ("model_type": "vit" or "deit"): hidden_size,
//     num_attention_heads, layer_norm_eps, hidden_act, qkv_bias, image_size,
//     id2label; and preprocessor_config.json (image_mean, image_std, size,
//     resample, do_resize);
//   * this library's neutral description (what the conformance fixtures
//     carry): "naming", "heads", "layer_norm_eps", "pooling", "image_size".
// Every field is optional: what a file does not say is left unset and the
// loader falls back to what the tensors imply.
#pragma once

#include <array>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "vit/config.hpp"
#include "vit/error.hpp"

namespace vit::io {

/// Facts gathered from sidecar files; unset = not stated.
struct HubConfig {
  std::string architecture;  // timm model name, e.g. "vit_base_patch16_224"
  std::optional<int> num_heads, image_size, patch_size, embed_dim, depth, mlp_hidden;
  std::optional<int> num_classes;
  std::optional<double> layer_norm_eps;
  std::optional<Activation> activation;
  std::optional<Pooling> pooling;
  std::optional<bool> class_token, qkv_bias, fc_norm;
  std::optional<PosEmbedKind> pos_embed;
  std::vector<std::string> labels;  // class names by index, when the file has them
  // Preprocessing (timm pretrained_cfg / HF preprocessor_config).
  std::optional<int> input_size;
  std::optional<std::array<double, 3>> mean, std;
  std::optional<std::string> interpolation;
  std::optional<double> crop_pct;
  std::optional<std::string> crop_mode;
};

namespace detail {

inline nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw io_error(path + ": cannot open for reading");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    throw config_error(path + ": not valid JSON (" + e.what() + ")");
  }
}

// Typed access that names the file and field when the value has the wrong type.
template <class T>
std::optional<T> get(const nlohmann::json& j, const char* key, const std::string& source) {
  if (!j.is_object() || !j.contains(key) || j.at(key).is_null()) return std::nullopt;
  const nlohmann::json& v = j.at(key);
  try {
    if constexpr (std::is_same_v<T, int>) {
      if (!v.is_number_integer()) throw config_error("");
      const auto x = v.get<long long>();
      if (x < -1000000000LL || x > 1000000000LL) throw config_error("");
      return int(x);
    } else if constexpr (std::is_same_v<T, double>) {
      if (!v.is_number()) throw config_error("");
      return v.get<double>();
    } else if constexpr (std::is_same_v<T, bool>) {
      if (!v.is_boolean()) throw config_error("");
      return v.get<bool>();
    } else {
      if (!v.is_string()) throw config_error("");
      return v.get<std::string>();
    }
  } catch (const error&) {
    throw config_error(source + ": field '" + key + "' has the wrong type (" + v.dump() + ")");
  }
}

inline std::optional<std::array<double, 3>> get_triple(const nlohmann::json& j, const char* key,
                                                       const std::string& source) {
  if (!j.is_object() || !j.contains(key) || j.at(key).is_null()) return std::nullopt;
  const nlohmann::json& v = j.at(key);
  if (v.is_number())
    return std::array<double, 3>{v.get<double>(), v.get<double>(), v.get<double>()};
  if (!v.is_array() || v.size() != 3 || !v[0].is_number() || !v[1].is_number() || !v[2].is_number())
    throw config_error(source + ": field '" + key + "' must be 3 numbers, got " + v.dump());
  return std::array<double, 3>{v[0].get<double>(), v[1].get<double>(), v[2].get<double>()};
}

inline Pooling parse_pooling(const std::string& s, const std::string& source) {
  if (s == "token" || s == "cls") return Pooling::cls;
  if (s == "avg") return Pooling::avg;
  throw config_error(source + ": global_pool '" + s +
                     "' is not supported (supported: 'token', 'avg')");
}

inline Activation parse_activation(const std::string& s, const std::string& source) {
  if (s == "gelu" || s == "gelu_erf") return Activation::gelu_erf;
  if (s == "gelu_new" || s == "gelu_pytorch_tanh" || s == "gelu_tanh" || s == "gelu_fast")
    return Activation::gelu_tanh;
  if (s == "quick_gelu") return Activation::quick_gelu;
  if (s == "relu") return Activation::relu;
  throw config_error(source + ": activation '" + s + "' is not supported");
}

// Reads "id2label" ({"0": "tench", ...}) into a vector; gaps are an error.
inline std::vector<std::string> parse_id2label(const nlohmann::json& j, const std::string& source) {
  std::vector<std::string> labels;
  if (!j.is_object()) throw config_error(source + ": id2label must be an object");
  labels.resize(j.size());
  for (const auto& [key, value] : j.items()) {
    std::size_t pos = 0;
    unsigned long idx = 0;
    try {
      idx = std::stoul(key, &pos);
    } catch (const std::exception&) {
      pos = 0;
    }
    if (pos != key.size() || idx >= labels.size() || !value.is_string())
      throw config_error(source + ": id2label entry '" + key + "' is not a class index below " +
                         std::to_string(labels.size()) + " with a string label");
    labels[idx] = value.get<std::string>();
  }
  return labels;
}

inline void read_pretrained_cfg(const nlohmann::json& pc, const std::string& src, HubConfig& h) {
  if (!pc.is_object()) return;
  if (pc.contains("input_size")) {
    const auto& is = pc.at("input_size");
    if (!is.is_array() || is.size() != 3 || !is[1].is_number_integer() ||
        !is[2].is_number_integer() || is[1] != is[2])
      throw config_error(src + ": pretrained_cfg.input_size must be [C, S, S], got " + is.dump());
    h.input_size = is[1].get<int>();
  }
  h.mean = get_triple(pc, "mean", src);
  h.std = get_triple(pc, "std", src);
  h.interpolation = get<std::string>(pc, "interpolation", src);
  h.crop_pct = get<double>(pc, "crop_pct", src);
  h.crop_mode = get<std::string>(pc, "crop_mode", src);
}

inline void read_timm(const nlohmann::json& j, const std::string& src, HubConfig& h) {
  h.architecture = get<std::string>(j, "architecture", src).value_or("");
  h.num_classes = get<int>(j, "num_classes", src);
  if (auto gp = get<std::string>(j, "global_pool", src)) h.pooling = parse_pooling(*gp, src);
  if (j.contains("model_args")) {
    const nlohmann::json& a = j.at("model_args");
    h.image_size = get<int>(a, "img_size", src);
    h.patch_size = get<int>(a, "patch_size", src);
    h.embed_dim = get<int>(a, "embed_dim", src);
    h.depth = get<int>(a, "depth", src);
    h.num_heads = get<int>(a, "num_heads", src);
    if (auto r = get<double>(a, "mlp_ratio", src); r && h.embed_dim) {
      // Range-check before the conversion: a double beyond int is undefined behaviour.
      const double hidden = *h.embed_dim * *r;
      if (!(hidden >= 1 && hidden <= 1e9))
        throw config_error(src + ": model_args.mlp_ratio " + a.at("mlp_ratio").dump() +
                           " with embed_dim " + std::to_string(*h.embed_dim) +
                           " gives no usable MLP width");
      h.mlp_hidden = int(hidden);
    }
    if (auto n = get<int>(a, "num_classes", src)) h.num_classes = n;
    if (auto gp = get<std::string>(a, "global_pool", src)) h.pooling = parse_pooling(*gp, src);
    h.class_token = get<bool>(a, "class_token", src);
    h.qkv_bias = get<bool>(a, "qkv_bias", src);
    h.fc_norm = get<bool>(a, "fc_norm", src);
    if (auto pe = get<std::string>(a, "pos_embed", src)) {
      if (*pe == "learn" || *pe == "learned")
        h.pos_embed = PosEmbedKind::learned;
      else if (*pe == "sincos")
        h.pos_embed = PosEmbedKind::sincos;
      else if (*pe == "none")
        h.pos_embed = PosEmbedKind::none;
      else
        throw config_error(src + ": model_args.pos_embed '" + *pe + "' is not supported");
    }
  }
  if (j.contains("pretrained_cfg")) read_pretrained_cfg(j.at("pretrained_cfg"), src, h);
  if (j.contains("label_names") && j.at("label_names").is_array())
    for (const auto& l : j.at("label_names"))
      if (l.is_string()) h.labels.push_back(l.get<std::string>());
}

inline void read_hf(const nlohmann::json& j, const std::string& src, HubConfig& h) {
  h.embed_dim = get<int>(j, "hidden_size", src);
  h.depth = get<int>(j, "num_hidden_layers", src);
  h.num_heads = get<int>(j, "num_attention_heads", src);
  h.mlp_hidden = get<int>(j, "intermediate_size", src);
  h.layer_norm_eps = get<double>(j, "layer_norm_eps", src);
  h.image_size = get<int>(j, "image_size", src);
  h.patch_size = get<int>(j, "patch_size", src);
  h.qkv_bias = get<bool>(j, "qkv_bias", src);
  if (auto act = get<std::string>(j, "hidden_act", src)) h.activation = parse_activation(*act, src);
  if (j.contains("id2label")) h.labels = parse_id2label(j.at("id2label"), src);
}

inline void read_neutral(const nlohmann::json& j, const std::string& src, HubConfig& h) {
  h.num_heads = get<int>(j, "heads", src);
  h.image_size = get<int>(j, "image_size", src);
  h.layer_norm_eps = get<double>(j, "layer_norm_eps", src);
  h.num_classes = get<int>(j, "num_classes", src);
  h.qkv_bias = get<bool>(j, "qkv_bias", src);
  h.class_token = get<bool>(j, "class_token", src);
  if (auto p = get<std::string>(j, "pooling", src)) h.pooling = parse_pooling(*p, src);
  if (auto a = get<std::string>(j, "activation", src)) h.activation = parse_activation(*a, src);
  if (auto pe = get<std::string>(j, "pos_embed", src))
    h.pos_embed = *pe == "sincos" ? PosEmbedKind::sincos
                  : *pe == "none" ? PosEmbedKind::none
                                  : PosEmbedKind::learned;
  if (j.contains("preprocess")) {
    const auto& pp = j.at("preprocess");
    h.mean = get_triple(pp, "mean", src);
    h.std = get_triple(pp, "std", src);
  }
}

}  // namespace detail

/// Adds what the config file at `path` says to `h` (timm, HF or neutral
/// schema, told apart by their keys). Throws io_error / config_error naming
/// the file.
inline void read_config_file(const std::string& path, HubConfig& h) {
  const nlohmann::json j = detail::read_json_file(path);
  if (!j.is_object()) throw config_error(path + ": expected a JSON object");
  if (j.contains("architecture") || j.contains("pretrained_cfg"))
    detail::read_timm(j, path, h);
  else if (j.contains("model_type") || j.contains("hidden_size"))
    detail::read_hf(j, path, h);
  else if (j.contains("naming") || j.contains("heads"))
    detail::read_neutral(j, path, h);
  else
    throw config_error(path +
                       ": not a timm, Hugging Face or vit model config (no 'architecture', "
                       "'model_type' or 'heads')");
}

/// Adds what a Hugging Face preprocessor_config.json says to `h`.
inline void read_preprocessor_config(const std::string& path, HubConfig& h) {
  const nlohmann::json j = detail::read_json_file(path);
  if (!j.is_object()) throw config_error(path + ": expected a JSON object");
  h.mean = detail::get_triple(j, "image_mean", path);
  h.std = detail::get_triple(j, "image_std", path);
  if (j.contains("size")) {
    const auto& s = j.at("size");
    if (s.is_number_integer())
      h.input_size = s.get<int>();
    else if (s.is_object() && s.contains("height"))
      h.input_size = detail::get<int>(s, "height", path);
    else if (s.is_object() && s.contains("shortest_edge"))
      h.input_size = detail::get<int>(s, "shortest_edge", path);
  }
  // HF ViTImageProcessor resizes straight to size (no crop).
  if (detail::get<bool>(j, "do_resize", path).value_or(true)) {
    h.crop_pct = 1.0;
    h.crop_mode = "squash";
  }
  if (auto r = detail::get<int>(j, "resample", path)) {
    // PIL.Image resampling codes.
    switch (*r) {
      case 0:
        h.interpolation = "nearest";
        break;
      case 2:
        h.interpolation = "bilinear";
        break;
      case 3:
        h.interpolation = "bicubic";
        break;
      case 1:
        h.interpolation = "lanczos";
        break;
      default:
        throw config_error(path + ": unknown resample code " + std::to_string(*r));
    }
  }
}

}  // namespace vit::io
