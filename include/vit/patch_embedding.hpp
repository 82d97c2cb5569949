// vit/patch_embedding.hpp - cut the image into PxP patches and project each.
#pragma once

#include "vit/nn/gemm.hpp"
#include "vit/nn/linear.hpp"
#include "vit/tensor.hpp"

namespace vit {

/// The strided convolution (kernel = stride = patch) of the ViT stem,
/// computed as one GEMM: the patches are unrolled into rows (im2col) in the
/// same (channel, ky, kx) order as the flattened conv weight.
///   proj.weight: [embed_dim, in_chans * patch * patch]  (the conv's [D, C, P, P])
///   proj.bias:   [embed_dim]
template <class Scalar>
struct PatchEmbedding {
  int patch_size = 16;
  int in_chans = 3;
  nn::Linear<Scalar> proj;

  PatchEmbedding() = default;
  PatchEmbedding(int patch, int chans, int embed_dim)
      : patch_size(patch), in_chans(chans), proj(embed_dim, Index(chans) * patch * patch, true) {}

  /// images: [N, C*S*S], each row one image in CHW order (S = image side).
  /// patches: workspace [N * grid^2, C*P*P]; tokens: [N * grid^2, D], patch
  /// rows in row-major grid order, image after image.
  void forward(const MatrixCRef<Scalar>& images, int image_size, MatrixRef<Scalar> patches,
               MatrixRef<Scalar> tokens, const nn::GemmContext<Scalar>& ctx) const {
    const Index grid = image_size / patch_size;
    const Index p = patch_size;
    const Index plane = Index(image_size) * image_size;
    for (Index n = 0; n < images.rows(); ++n) {
      const Scalar* img = images.row(n).data();
      for (Index gy = 0; gy < grid; ++gy)
        for (Index gx = 0; gx < grid; ++gx) {
          Scalar* dst = patches.row((n * grid + gy) * grid + gx).data();
          for (Index c = 0; c < in_chans; ++c)
            for (Index ky = 0; ky < p; ++ky) {
              const Scalar* src = img + c * plane + (gy * p + ky) * image_size + gx * p;
              for (Index kx = 0; kx < p; ++kx) *dst++ = src[kx];
            }
        }
    }
    proj.forward(patches, tokens, ctx);
  }
};

}  // namespace vit
