// vit-classify: classify photos with any supported ViT checkpoint.
//
//   vit-classify [--model PATH] [--image-size N] [--crop-pct F] [--top-k K] [--labels FILE]
//                [--threads N] [--batch N] [--precision fp32|bf16|int8] [--json] [--logits]
//                [--attention-map OUT.png] [--no-check-finite]
//                IMAGE...
//
// Exit status: 0 all images classified; 1 some image could not be read (the
// others are still classified); 2 bad arguments; 3 the model could not be loaded
// (also when a weight is NaN or infinite, unless --no-check-finite).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "vit/attention_map.hpp"
#include "vit/io/image_io.hpp"
#include "vit/io/labels.hpp"
#include "vit/preprocess.hpp"
#include "vit/vit.hpp"

// The ImageNet-1k class names, compiled in (generated from imagenet_classes.txt).
extern const char* const vit_imagenet_classes;

namespace {

struct Options {
  std::string model;
  int image_size = 0;
  std::optional<double> crop_pct;
  std::optional<std::string> crop_mode, interpolation;
  std::vector<double> mean, std;
  int top_k = 5;
  std::string labels;
  int threads = 1;
  int batch = 8;
  std::string precision = "fp32";
  bool json = false;
  bool logits = false;
  std::string attention_map;
  bool no_check_finite = false;
  std::int64_t max_pixels = vit::kDefaultMaxImagePixels;
  std::vector<std::string> images;
};

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Where the attention map of image k goes: OUT.png itself for one image,
// OUT-<k>.png (k = position on the command line) for several.
std::string attention_path(const std::string& out, std::size_t k, std::size_t count) {
  if (count == 1) return out;
  namespace fs = std::filesystem;
  const fs::path p(out);
  return (p.parent_path() / (p.stem().string() + "-" + std::to_string(k) + p.extension().string()))
      .string();
}

// Class names by priority: --labels, the checkpoint's, ImageNet-1k for 1000 classes.
std::vector<std::string> class_names(const Options& o, const vit::io::CheckpointInfo& info,
                                     int num_classes) {
  std::vector<std::string> names;
  if (!o.labels.empty()) {
    names = vit::io::read_labels(o.labels);
    if (names.size() != std::size_t(num_classes))
      throw vit::argument_error("--labels " + o.labels + ": has " + std::to_string(names.size()) +
                                " lines, the model has " + std::to_string(num_classes) +
                                " classes");
  } else if (!info.labels.empty()) {
    names = info.labels;
  } else if (num_classes == 1000) {
    names = vit::io::parse_labels(vit_imagenet_classes);
  }
  return names;
}

struct Item {
  std::size_t index;  // position on the command line
  std::string path;
  vit::Image input;  // the model-size crop the network sees
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "Classify images with a Vision Transformer checkpoint (timm, Hugging Face or "
      "torchvision safetensors).",
      "vit-classify"};
  app.add_option("--model", o.model,
                 "a .safetensors file, or a folder with model.safetensors and its config files "
                 "(default: the bundled CIFAR-10 model, " VIT_DEFAULT_MODEL ")");
  app.add_option("--image-size", o.image_size,
                 "run the model at this input size (resamples the position table)")
      ->check(CLI::Range(1, 16384));
  app.add_option("--crop-pct", o.crop_pct,
                 "resize the shorter side to size / crop_pct before the centre crop (1.0: no "
                 "margin)")
      ->check(CLI::Range(0.01, 1.0));
  app.add_option("--crop-mode", o.crop_mode, "center (timm) or squash (Hugging Face)")
      ->check(CLI::IsMember({"center", "squash"}));
  app.add_option("--interpolation", o.interpolation, "resize filter (default: the checkpoint's)")
      ->check(CLI::IsMember({"bicubic", "bilinear", "nearest", "lanczos", "box", "hamming"}));
  app.add_option("--mean", o.mean, "normalisation mean, 3 values (default: the checkpoint's)")
      ->expected(3);
  app.add_option("--std", o.std, "normalisation std, 3 values (default: the checkpoint's)")
      ->expected(3);
  app.add_option("--top-k", o.top_k, "classes to print per image")->check(CLI::Range(1, 1000000));
  app.add_option("--labels", o.labels, "class names, one per line (line i = class i)");
  app.add_option("--threads", o.threads, "threads for decoding and for the batch")
      ->check(CLI::Range(1, 256));
  app.add_option("--batch", o.batch, "images per forward pass")->check(CLI::Range(1, 4096));
  app.add_option("--precision", o.precision,
                 "weights for the fast kernels: fp32 (default), bf16 or int8 (faster, "
                 "~1-3% logit error)")
      ->check(CLI::IsMember({"fp32", "bf16", "int8"}));
  app.add_flag("--json", o.json, "one JSON object per image per line on stdout");
  app.add_flag("--logits", o.logits, "with --json: include all logits");
  app.add_option("--attention-map", o.attention_map,
                 "write the attention rollout over the image as PNG (several images: "
                 "OUT-<k>.png)");
  app.add_flag("--no-check-finite", o.no_check_finite,
               "do not check the weights for NaN / Inf when loading (the check reads every "
               "weight once more: skip it to load a large, trusted model faster, or to run a "
               "broken one anyway)");
  app.add_option("--max-pixels", o.max_pixels,
                 "refuse images with more pixels than this (read from the file header, before "
                 "decoding)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{vit::kMaxImageSide} * vit::kMaxImageSide));
  app.add_option("images", o.images, "images to classify (PNG, JPEG, BMP, TGA, GIF, PNM)")
      ->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "vit-classify: error: %s (see --help)\n", e.what());
    return 2;
  }
  if (o.logits && !o.json) {
    std::fprintf(stderr, "vit-classify: error: --logits needs --json\n");
    return 2;
  }

  // Without --model: the bundled model, from the source tree or where it was installed.
  if (o.model.empty()) {
    std::error_code ec;
    for (const char* dir : {VIT_DEFAULT_MODEL, VIT_INSTALLED_MODEL})
      if (std::filesystem::exists(std::string(dir) + "/model.safetensors", ec)) {
        o.model = dir;
        break;
      }
    if (o.model.empty()) {
      std::fprintf(stderr,
                   "vit-classify: error: no --model given, and the bundled model is neither in "
                   "%s nor in %s\n",
                   VIT_DEFAULT_MODEL, VIT_INSTALLED_MODEL);
      return 2;
    }
  }

  // The model, its preprocessing and its class names.
  std::optional<vit::io::LoadedModel<float>> loaded;
  vit::DataConfig data;
  std::vector<std::string> names;
  try {
    vit::LoadOptions lo;
    lo.image_size = o.image_size;
    lo.precision = vit::parse_precision(o.precision);
    lo.check_finite = !o.no_check_finite;  // a NaN weight would only show as NaN logits
    loaded.emplace(vit::load_model<float>(o.model, lo));
    data = loaded->info.data;
    data.input_size = loaded->model.architecture().image_size;
    if (o.crop_pct) data.crop_pct = *o.crop_pct;
    if (o.crop_mode) data.crop_mode = *o.crop_mode;
    if (o.interpolation) data.interpolation = *o.interpolation;
    if (!o.mean.empty()) std::copy(o.mean.begin(), o.mean.end(), data.mean.begin());
    if (!o.std.empty()) std::copy(o.std.begin(), o.std.end(), data.std.begin());
  } catch (const vit::argument_error& e) {
    std::fprintf(stderr, "vit-classify: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vit-classify: error: %s\n", e.what());
    return 3;
  }
  try {
    vit::parse_interpolation(data.interpolation);  // fail now, not per image
    names = class_names(o, loaded->info, loaded->model.architecture().num_classes);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vit-classify: error: %s\n", e.what());
    return 2;
  }
  const vit::VisionTransformer<vit::DynamicConfig<float>>& model = loaded->model;
  const vit::Architecture& arch = model.architecture();
  if (arch.num_classes == 0) {
    std::fprintf(stderr, "vit-classify: error: %s has no classifier head\n", o.model.c_str());
    return 3;
  }
  const int s = arch.image_size;
  const Eigen::Index row_size = 3 * Eigen::Index(s) * s;
  const int k = std::min(o.top_k, arch.num_classes);
  const bool want_attention = !o.attention_map.empty();
  const std::size_t total = o.images.size();
  const unsigned threads = unsigned(o.threads);

  int failed = 0;
  std::size_t done = 0;
  double model_ms = 0;
  const auto t_start = Clock::now();
  vit::ImageLimits limits;
  limits.max_pixels = o.max_pixels;
  // One Output per worker thread, reused across batches.
  std::vector<vit::Output<float>> outputs(threads);

  for (std::size_t first = 0; first < total; first += std::size_t(o.batch)) {
    const std::size_t last = std::min(total, first + std::size_t(o.batch));
    // Decode and preprocess in parallel; a bad image is reported and skipped.
    std::vector<std::optional<Item>> slots(last - first);
    std::vector<std::string> errors(last - first);
    auto prepare = [&](unsigned worker) {
      for (std::size_t i = worker; i < slots.size(); i += threads) {
        try {
          const std::string& path = o.images[first + i];
          slots[i] =
              Item{first + i, path, vit::eval_transform(vit::load_image(path, limits), data)};
        } catch (const std::exception& e) {
          errors[i] = e.what();
        }
      }
    };
    {
      std::vector<std::thread> pool;
      for (unsigned w = 1; w < threads; ++w) pool.emplace_back(prepare, w);
      prepare(0);
      for (auto& t : pool) t.join();
    }
    std::vector<Item> items;
    for (std::size_t i = 0; i < slots.size(); ++i) {
      if (slots[i]) {
        items.push_back(std::move(*slots[i]));
      } else {
        ++failed;
        std::fprintf(stderr, "vit-classify: error: %s\n", errors[i].c_str());
      }
    }
    if (items.empty()) continue;

    vit::Matrix<float> images(Eigen::Index(items.size()), row_size);
    for (std::size_t i = 0; i < items.size(); ++i)
      vit::to_tensor<float>(items[i].input, data.mean, data.std,
                            images.row(Eigen::Index(i)).data());

    // Split the batch into one contiguous share per thread.
    const auto t0 = Clock::now();
    const Eigen::Index n = images.rows();
    const Eigen::Index shares = std::min<Eigen::Index>(n, threads);
    std::vector<vit::Matrix<float>> logits(static_cast<std::size_t>(shares));
    std::vector<std::optional<vit::AttentionMaps<float>>> maps(items.size());
    std::vector<std::string> run_errors(static_cast<std::size_t>(shares));
    auto run = [&](Eigen::Index share) {
      const Eigen::Index begin = n * share / shares, end = n * (share + 1) / shares;
      try {
        vit::Output<float>& out = outputs[std::size_t(share)];
        model.forward(images.middleRows(begin, end - begin), out, {want_attention, false});
        logits[std::size_t(share)] = out.logits;
        if (want_attention)
          for (Eigen::Index i = begin; i < end; ++i)
            maps[std::size_t(i)] = vit::attention_maps(out, arch, i - begin);
      } catch (const std::exception& e) {
        run_errors[std::size_t(share)] = e.what();
      }
    };
    {
      std::vector<std::thread> pool;
      for (Eigen::Index w = 1; w < shares; ++w) pool.emplace_back(run, w);
      run(0);
      for (auto& t : pool) t.join();
    }
    model_ms += ms_since(t0);
    for (const auto& e : run_errors)
      if (!e.empty()) {
        std::fprintf(stderr, "vit-classify: error: %s\n", e.c_str());
        return 3;
      }

    for (Eigen::Index share = 0, i = 0; share < shares; ++share)
      for (Eigen::Index r = 0; r < logits[std::size_t(share)].rows(); ++r, ++i) {
        const Item& item = items[std::size_t(i)];
        const Eigen::VectorXf z = logits[std::size_t(share)].row(r).transpose();
        // Softmax in double: probabilities of far-behind classes stay > 0.
        const Eigen::VectorXd e = (z.cast<double>().array() - double(z.maxCoeff())).exp();
        const Eigen::VectorXd prob = e / e.sum();
        std::vector<int> order(std::size_t(z.size()));
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + k, order.end(),
                          [&](int a, int b) { return prob(a) > prob(b); });
        auto label = [&](int c) {
          return names.empty() ? "class " + std::to_string(c) : names[std::size_t(c)];
        };
        if (o.json) {
          nlohmann::json j;
          j["image"] = item.path;
          j["top_k"] = nlohmann::json::array();
          for (int t = 0; t < k; ++t)
            j["top_k"].push_back({{"index", order[std::size_t(t)]},
                                  {"label", label(order[std::size_t(t)])},
                                  {"probability", prob(order[std::size_t(t)])}});
          if (o.logits) {
            std::vector<double> all(z.data(), z.data() + z.size());  // exact float values
            j["logits"] = all;
          }
          std::printf("%s\n",
                      j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
        } else {
          std::printf("%s\n", item.path.c_str());
          for (int t = 0; t < k; ++t) {
            const int c = order[std::size_t(t)];
            std::printf("  %7.3f%%  %-32s (class %d)\n", 100.0 * prob(c), label(c).c_str(), c);
          }
        }
        if (want_attention) {
          const std::string out_path = attention_path(o.attention_map, item.index, total);
          try {
            const vit::Matrix<float> grid = maps[std::size_t(i)]->rollout;
            vit::write_png(out_path, vit::heatmap_overlay(item.input, grid));
            std::fprintf(stderr, "vit-classify: attention map of %s written to %s\n",
                         item.path.c_str(), out_path.c_str());
          } catch (const std::exception& e) {
            std::fprintf(stderr, "vit-classify: error: %s\n", e.what());
            ++failed;
          }
        }
        ++done;
      }
    std::fflush(stdout);
    if (total > std::size_t(o.batch))
      std::fprintf(stderr, "vit-classify: %zu/%zu images, %.1f images/s\n", last, total,
                   double(last) / (ms_since(t_start) / 1000.0));
  }
  if (done > 0)
    std::fprintf(stderr,
                 "vit-classify: %zu image(s), %.2f ms per image in the model (%d thread%s)\n", done,
                 model_ms / double(done), o.threads, o.threads == 1 ? "" : "s");
  if (failed > 0) {
    std::fprintf(stderr, "vit-classify: %d of %zu image(s) failed\n", failed, total);
    return 1;
  }
  return 0;
}
