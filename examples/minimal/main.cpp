// vit-minimal: load a ViT checkpoint (timm, Hugging Face or torchvision
// safetensors), run it on one image that already has the model's input size,
// and print the top-5 classes. The README's usage snippet is this file.
//
//   vit-minimal MODEL IMAGE
//     MODEL  a .safetensors file, or a folder with model.safetensors (+ config.json)
//     IMAGE  an S x S image (PNG, JPEG, ...), S = the model's input size
#include <algorithm>
#include <cstdio>
#include <exception>
#include <numeric>
#include <string>
#include <vector>

#include <vit/io/image_io.hpp>
#include <vit/vit.hpp>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s MODEL IMAGE\n", argv[0]);
    return 2;
  }
  try {
    // 1. The architecture is read from the checkpoint and its config.json.
    auto loaded = vit::load_model<float>(argv[1]);
    const vit::Architecture& arch = loaded.model.architecture();
    const int s = arch.image_size;

    // 2. Decode to 8-bit RGB (vit::image) and normalise with the checkpoint's
    //    mean/std, channel planes one after another (NCHW) in a single row.
    const vit::Image rgb = vit::load_image(argv[2]);
    if (rgb.width != s || rgb.height != s) {
      std::fprintf(stderr, "error: %s: image is %dx%d, the model takes %dx%d\n", argv[2], rgb.width,
                   rgb.height, s, s);
      return 1;
    }
    vit::Matrix<float> image(1, 3 * s * s);
    const auto& mean = loaded.info.data.mean;
    const auto& std = loaded.info.data.std;
    for (int c = 0; c < 3; ++c)
      for (int i = 0; i < s * s; ++i)
        image(0, c * s * s + i) =
            float((rgb.pixels[std::size_t(3 * i + c)] / 255.0f - float(mean[c])) / float(std[c]));

    // 3. Forward pass: logits, the image embedding, and the tokens.
    vit::Output<float> out;
    loaded.model.forward(image, out);

    // 4. Softmax over the classes, top 5.
    const Eigen::ArrayXf logits = out.logits.row(0).transpose().array();
    const Eigen::ArrayXf prob =
        (logits - logits.maxCoeff()).exp() / (logits - logits.maxCoeff()).exp().sum();
    std::vector<int> order(std::size_t(prob.size()));
    std::iota(order.begin(), order.end(), 0);
    const std::size_t k = std::min<std::size_t>(5, order.size());
    std::partial_sort(order.begin(), order.begin() + long(k), order.end(),
                      [&](int a, int b) { return prob(a) > prob(b); });
    std::printf("%s: %s naming, %d blocks, width %d, %d classes; embedding of %ld values\n",
                argv[1], vit::io::naming_name(loaded.info.naming), arch.depth, arch.embed_dim,
                arch.num_classes, long(out.pre_logits.cols()));
    for (std::size_t i = 0; i < k; ++i) {
      const int c = order[i];
      const std::string label =
          loaded.info.labels.empty() ? "class " + std::to_string(c) : loaded.info.labels[c];
      std::printf("%8.4f%%  %s\n", 100.0 * prob(c), label.c_str());
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
