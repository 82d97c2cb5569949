// vit-eval: accuracy of a classifier checkpoint on a labelled data set.
//
//   vit-eval --model PATH --data PATH [--json] [--batch N] [--threads N] [--no-check-finite]
//
// --data: a CIFAR-10 binary file, a Fashion-MNIST IDX image file (labels
// beside it) or an image folder (one sub-folder per class, sorted names =
// class indices). Prints top-1, top-5 and the confusion matrix; with --json,
// one object on stdout: {"top1": ..., "top5": ..., "n": ..., "skipped": ...}.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "data_source.hpp"
#include "vit/data/augment.hpp"
#include "vit/io/checkpoint.hpp"
#include "vit/precision.hpp"
#include "vit/train/evaluate.hpp"
#include "vit/vit.hpp"

int main(int argc, char** argv) {
  CLI::App app{"Accuracy of a Vision Transformer classifier on a labelled data set."};
  std::string model_path, data_path, precision = "fp32";
  int batch = 64, threads = 1;
  bool json = false, no_check_finite = false;
  app.add_option("--model", model_path, "checkpoint: a model folder or .safetensors file")
      ->required();
  app.add_option("--data", data_path, "CIFAR-10 .bin, IDX images, or a folder of class folders")
      ->required();
  app.add_option("--batch", batch)->check(CLI::Range(1, 4096));
  app.add_option("--threads", threads)->check(CLI::Range(1, 256));
  app.add_option("--precision", precision, "fp32, bf16 or int8")
      ->check(CLI::IsMember({"fp32", "bf16", "int8"}));
  app.add_flag("--json", json, "one JSON object on stdout");
  app.add_flag("--no-check-finite", no_check_finite,
               "do not check the weights for NaN / Inf when loading (the check reads every "
               "weight once more: skip it to load a large, trusted model faster, or to measure "
               "a broken one anyway)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "vit-eval: error: %s (see --help)\n", e.what());
    return 2;
  }
  try {
    vit::LoadOptions lo;
    lo.precision = vit::parse_precision(precision);
    lo.check_finite = !no_check_finite;  // a NaN weight would only show as a wrong accuracy
    const auto loaded = vit::load_model<float>(model_path, lo);
    const auto ds = vit_examples::open_dataset(data_path);
    const int classes = loaded.model.architecture().num_classes;
    if (ds->num_classes() != classes)
      throw vit::argument_error(data_path + ": " + std::to_string(ds->num_classes()) +
                                " classes, but the model's head has " + std::to_string(classes));
    vit::DataConfig data = loaded.info.data;
    data.input_size = loaded.model.architecture().image_size;
    vit::data::BatchOptions bo = vit::data::BatchOptions::from(data);
    bo.skip_corrupt = true;
    bo.on_skip = [](int, const std::string& msg) {
      std::fprintf(stderr, "vit-eval: warning: skipped %s\n", msg.c_str());
    };
    const vit::train::Evaluation e =
        vit::train::evaluate(loaded.model, *ds, vit::data::make_eval_transform(data), bo, batch,
                             threads, [json](int done, int total) {
                               if (!json) std::fprintf(stderr, "\r%d/%d", done, total);
                             });
    if (e.n == 0) throw vit::io_error(data_path + ": no image could be read");
    if (json) {
      std::printf(
          "%s\n",
          nlohmann::json{{"top1", e.top1}, {"top5", e.top5}, {"n", e.n}, {"skipped", e.skipped}}
              .dump()
              .c_str());
      return 0;
    }
    std::fprintf(stderr, "\n");
    std::printf("%s on %s: %d images", model_path.c_str(), data_path.c_str(), e.n);
    if (e.skipped) std::printf(" (%d unreadable, skipped)", e.skipped);
    std::printf("\ntop-1 %.2f%%  top-5 %.2f%%  loss %.4f\n", 100 * e.top1, 100 * e.top5, e.loss);
    // Confusion matrix: rows = true class, columns = predicted class.
    const auto& names = ds->class_names();
    std::size_t w = 5;
    for (const auto& n : names) w = std::max(w, std::min<std::size_t>(n.size(), 16));
    std::printf("\nconfusion (rows: true class, columns: predicted)\n%*s", int(w), "");
    for (int j = 0; j < classes; ++j) std::printf(" %5d", j);
    std::printf("\n");
    for (int i = 0; i < classes; ++i) {
      std::printf("%*.*s", int(w), 16, names[std::size_t(i)].c_str());
      for (int j = 0; j < classes; ++j) std::printf(" %5lld", (long long)e.count(i, j));
      std::printf("\n");
    }
    return 0;
  } catch (const vit::argument_error& e) {
    std::fprintf(stderr, "vit-eval: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vit-eval: error: %s\n", e.what());
    return 1;
  }
}
