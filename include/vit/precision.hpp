// vit/precision.hpp - the arithmetic the linear layers run in.
#pragma once

#include <string>

#include "vit/error.hpp"

namespace vit {

/// Storage and arithmetic of the linear layers' weights (everything else,
/// LayerNorm, softmax and the residual stream, stays in the model's Scalar).
///   fp32: float weights, float products.
///   bf16: bfloat16 weights and activations, float accumulation.
///   int8: int8 weights with one scale per output channel, activations
///         quantised per token on the fly, int32 accumulation.
enum class Precision { fp32, bf16, int8 };

inline const char* precision_name(Precision p) {
  switch (p) {
    case Precision::fp32:
      return "fp32";
    case Precision::bf16:
      return "bf16";
    case Precision::int8:
      return "int8";
  }
  return "?";
}

/// "fp32" | "bf16" | "int8"; argument_error naming the value otherwise.
inline Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::fp32;
  if (name == "bf16") return Precision::bf16;
  if (name == "int8") return Precision::int8;
  throw argument_error("unknown precision '" + name + "' (expected fp32, bf16 or int8)");
}

}  // namespace vit
