// The README's usage snippet, compiled and run by the tests. The lines
// between the snippet markers must appear verbatim in README.md (a test
// checks it), so the README cannot drift from code that builds.
//
//   vit-usage MODEL   (a .safetensors file or a folder with model.safetensors)
#include <cstdio>
#include <exception>

#include <vit/vit.hpp>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MODEL\n", argv[0]);
    return 2;
  }
  try {
    const Eigen::Index N = 2;
    // [snippet]
    // Architecture from the checkpoint's tensors and config.json: no recompiling per model.
    auto loaded = vit::load_model<float>(argv[1]);  // folder or .safetensors
    const vit::Architecture& arch = loaded.model.architecture();

    // A batch of N images, one per row, NCHW-flattened and normalised with
    // loaded.info.data.mean / .std: shape [N, 3 * S * S], S = arch.image_size.
    vit::Matrix<float> images = vit::Matrix<float>::Zero(N, 3 * arch.image_size * arch.image_size);

    vit::Output<float> out;  // reuse it: after the first call, forward() allocates nothing
    loaded.model.forward(images, out, {/*attention=*/true});
    // out.logits      [N, num_classes]
    // out.pre_logits  [N, embed_dim]  the image embedding (retrieval, clustering, ...)
    // out.tokens      [N * T, embed_dim] all tokens after the final norm
    // out.attention   depth x [N * heads * T, T] attention probabilities
    // [/snippet]
    std::printf("logits %ldx%ld, pre_logits %ldx%ld, tokens %ldx%ld, %zu attention maps\n",
                long(out.logits.rows()), long(out.logits.cols()), long(out.pre_logits.rows()),
                long(out.pre_logits.cols()), long(out.tokens.rows()), long(out.tokens.cols()),
                out.attention.size());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
