// vit/train/init.hpp - the initial weights of a model trained from scratch.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>

#include "vit/random.hpp"
#include "vit/vision_transformer.hpp"

namespace vit::train {

namespace detail {

inline bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace detail

/// timm's initialisation of a ViT trained from scratch: every linear weight
/// (the patch projection included) and the position table from a normal of
/// std 0.02 truncated to [-2, 2], biases zero, LayerNorms one and zero,
/// the class token normal with std 1e-6. Deterministic for a seed.
template <class Config>
void init_weights(VisionTransformer<Config>& model, std::uint64_t seed) {
  using Scalar = typename Config::Scalar;
  std::mt19937_64 rng(seed);
  // timm's trunc_normal_(std, a=-2, b=2): the bounds are absolute values,
  // so at std 0.02 they never cut (100 std away).
  auto truncated = [&rng](double std) {
    for (;;) {
      const double v = std * random_normal(rng);
      if (std::abs(v) <= 2.0) return v;
    }
  };
  for (const ParameterRef<Scalar>& p : model.named_parameters()) {
    std::size_t count = 1;
    for (std::int64_t d : p.shape) count *= std::size_t(d);
    const bool is_norm = p.name == "norm.weight" || p.name == "norm.bias" ||
                         p.name.find("norm1.") != std::string::npos ||
                         p.name.find("norm2.") != std::string::npos ||
                         p.name.rfind("fc_norm.", 0) == 0;
    for (std::size_t i = 0; i < count; ++i) {
      double v = 0.0;
      if (is_norm)
        v = detail::ends_with(p.name, ".weight") ? 1.0 : 0.0;
      else if (p.name == "cls_token" || p.name == "dist_token")
        v = 1e-6 * random_normal(rng);
      else if (detail::ends_with(p.name, ".weight") || p.name == "pos_embed")
        v = truncated(0.02);
      p.data[i] = Scalar(v);
    }
  }
  model.update_position_table();
}

}  // namespace vit::train
