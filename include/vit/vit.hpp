// vit/vit.hpp - includes the whole public API of the library.
//
//   #include <vit/vit.hpp>
//   auto loaded = vit::load_model<float>("path/to/model.safetensors");
//   vit::Output<float> out;
//   loaded.model.forward(images, out);   // images: [N, 3*S*S], normalised
//   out.logits, out.pre_logits, out.tokens, out.attention
#pragma once

#include "vit/attention.hpp"
#include "vit/config.hpp"
#include "vit/encoder_block.hpp"
#include "vit/error.hpp"
#include "vit/io/checkpoint.hpp"
#include "vit/io/hub_config.hpp"
#include "vit/io/safetensors.hpp"
#include "vit/mlp.hpp"
#include "vit/nn/activation.hpp"
#include "vit/nn/gemm.hpp"
#include "vit/nn/gemm_avx512.hpp"
#include "vit/nn/gemm_bf16.hpp"
#include "vit/nn/gemm_int8.hpp"
#include "vit/nn/layer_norm.hpp"
#include "vit/nn/linear.hpp"
#include "vit/nn/softmax.hpp"
#include "vit/parallel.hpp"
#include "vit/patch_embedding.hpp"
#include "vit/position_embedding.hpp"
#include "vit/precision.hpp"
#include "vit/tensor.hpp"
#include "vit/version.hpp"
#include "vit/vision_transformer.hpp"
