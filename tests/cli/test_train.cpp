// End-to-end tests of vit-train and vit-eval: a tiny model trained on a
// synthetic CIFAR-10 file learns it, vit-eval and vit-classify read what it
// saved, an interrupted run resumed gives the same weights bit for bit,
// fine-tuning on an image folder (new head, corrupt file skipped), and the
// error paths (exit codes and messages naming the file or option).
#include <doctest/doctest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "test_support.hpp"
#include "vit/image.hpp"
#include "vit/io/image_io.hpp"

namespace fs = std::filesystem;
using vit_test::quote;
using vit_test::Run;
using vit_test::TempDir;

namespace {

Run train(const std::string& args) { return vit_test::run_program(VIT_TRAIN_EXE, args); }
Run eval(const std::string& args) { return vit_test::run_program(VIT_EVAL_EXE, args); }

// A CIFAR-10 binary file of n 32x32 images whose class is their colour:
// class k is a flat colour from a fixed palette, plus noise, so a small model
// can learn it in a few epochs.
void write_cifar(const std::string& path, int n, std::uint64_t seed) {
  static const int palette[10][3] = {{230, 30, 30},  {30, 230, 30},  {30, 30, 230}, {230, 230, 30},
                                     {230, 30, 230}, {30, 230, 230}, {120, 60, 10}, {250, 250, 250},
                                     {10, 10, 10},   {128, 128, 128}};
  std::mt19937_64 rng(seed);
  std::ofstream out(path, std::ios::binary);
  for (int i = 0; i < n; ++i) {
    const int k = int(rng() % 10);
    out.put(char(k));
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 32 * 32; ++p) {
        const int v = palette[k][c] + int(rng() % 41) - 20;
        out.put(char(std::uint8_t(std::clamp(v, 0, 255))));
      }
  }
}

// root/<class>/<i>.png: class "bright" light images, class "dark" dark ones.
void write_folder(const std::string& root, int per_class) {
  std::mt19937_64 rng(5);
  for (const char* cls : {"bright", "dark"}) {
    fs::create_directories(fs::path(root) / cls);
    for (int i = 0; i < per_class; ++i) {
      vit::Image im(20, 16);
      for (auto& b : im.pixels)
        b = std::uint8_t(std::string(cls) == "bright" ? 180 + rng() % 70 : rng() % 70);
      vit::write_png((fs::path(root) / cls / (std::to_string(i) + ".png")).string(), im);
    }
  }
}

nlohmann::json last_json_line(const std::string& out) {
  std::istringstream in(out);
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty()) last = line;
  return nlohmann::json::parse(last);
}

int count_lines(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) ++n;
  return n;
}

// A small, fast architecture and recipe for the synthetic files.
const std::string tiny =
    " --patch-size 8 --embed-dim 32 --depth 2 --heads 2 --mlp-ratio 2 --batch 32 --lr 3e-3"
    " --warmup-epochs 1 --threads 1 ";

}  // namespace

TEST_CASE("vit-train learns a synthetic CIFAR-10 file, vit-eval and vit-classify read the model") {
  TempDir tmp;
  write_cifar(tmp / "train.bin", 640, 1);
  write_cifar(tmp / "val.bin", 200, 2);
  const std::string out = tmp / "run";
  const Run r = train("--data " + quote(tmp / "train.bin") + " --val " + quote(tmp / "val.bin") +
                      " --out " + quote(out) + tiny + "--epochs 4");
  INFO(r.err);
  REQUIRE(r.status == 0);
  const nlohmann::json j = last_json_line(r.out);
  CHECK(j.at("epochs") == 4);
  const double top1 = j.at("val_top1").get<double>();
  CHECK(top1 > 0.6);  // chance is 0.1
  for (const char* f : {"model.safetensors", "config.json", "optimizer.safetensors",
                        "train_state.json", "log.csv", "curves.png"})
    CHECK(fs::exists(fs::path(out) / f));
  CHECK(count_lines(out + "/log.csv") == 5);  // header + one line per epoch
  const vit::Image plot = vit::load_image(out + "/curves.png");
  CHECK(plot.width > 100);
  CHECK(r.err.find("epoch 4/4") != std::string::npos);  // progress on stderr

  // vit-eval on the same validation file reproduces the last epoch's accuracy.
  const Run e = eval("--model " + quote(out) + " --data " + quote(tmp / "val.bin") + " --json");
  INFO(e.err);
  REQUIRE(e.status == 0);
  const nlohmann::json ej = nlohmann::json::parse(e.out);
  CHECK(ej.at("n") == 200);
  CHECK(ej.at("top1").get<double>() == doctest::Approx(top1).epsilon(1e-12));
  CHECK(ej.at("top5").get<double>() >= ej.at("top1").get<double>());
  // Text output: accuracy and a confusion matrix with the class names.
  const Run text = eval("--model " + quote(out) + " --data " + quote(tmp / "val.bin"));
  REQUIRE(text.status == 0);
  CHECK(text.out.find("top-1") != std::string::npos);
  CHECK(text.out.find("confusion") != std::string::npos);
  CHECK(text.out.find("airplane") != std::string::npos);

  // vit-classify loads the saved folder and uses its class names.
  vit::Image red(32, 32);
  for (int p = 0; p < 32 * 32; ++p) red.pixels[std::size_t(p) * 3] = 230;
  for (int p = 0; p < 32 * 32; ++p) red.pixels[std::size_t(p) * 3 + 1] = 30;
  for (int p = 0; p < 32 * 32; ++p) red.pixels[std::size_t(p) * 3 + 2] = 30;
  vit::write_png(tmp / "red.png", red);
  const Run c = vit_test::run_program(
      VIT_CLASSIFY_EXE, "--model " + quote(out) + " --json " + quote(tmp / "red.png"));
  INFO(c.err);
  REQUIRE(c.status == 0);
  const nlohmann::json cj = nlohmann::json::parse(c.out);
  CHECK(cj.at("top_k").at(0).at("label") == "airplane");  // class 0 is red
}

TEST_CASE("an interrupted run resumed with --resume ends with the same weights bit for bit") {
  TempDir tmp;
  write_cifar(tmp / "train.bin", 256, 3);
  write_cifar(tmp / "val.bin", 64, 4);
  const std::string data =
      " --data " + quote(tmp / "train.bin") + " --val " + quote(tmp / "val.bin") + " ";
  const std::string common = tiny + "--epochs 3 --random-erase 0.5 --mixup 0.8 --cutmix 1.0 ";
  const std::string recipe = common + "--crop-scale 0.5 ";
  Run r = train(data + "--out " + quote(tmp / "straight") + recipe);
  INFO(r.err);
  REQUIRE(r.status == 0);
  // The random resized crops do change the training (so the resume below has
  // to restore --crop-scale to end with the same weights).
  r = train(data + "--out " + quote(tmp / "pad_crop") + common);
  REQUIRE(r.status == 0);
  CHECK(vit_test::slurp(tmp / "pad_crop/model.safetensors") !=
        vit_test::slurp(tmp / "straight/model.safetensors"));
  r = train(data + "--out " + quote(tmp / "parts") + recipe + "--stop-after 1");
  REQUIRE(r.status == 0);
  CHECK(last_json_line(r.out).at("epochs") == 1);
  CHECK(count_lines(tmp / "parts/log.csv") == 2);
  // The recipe comes back from train_state.json: only data, folder and threads given.
  r = train(data + "--resume " + quote(tmp / "parts") + " --out " + quote(tmp / "parts") +
            " --threads 1");
  REQUIRE(r.status == 0);
  CHECK(last_json_line(r.out).at("epochs") == 3);
  CHECK(count_lines(tmp / "parts/log.csv") == 4);
  CHECK(vit_test::slurp(tmp / "parts/model.safetensors") ==
        vit_test::slurp(tmp / "straight/model.safetensors"));
  CHECK(vit_test::slurp(tmp / "parts/optimizer.safetensors") ==
        vit_test::slurp(tmp / "straight/optimizer.safetensors"));
  // Nothing left to do: a clear error.
  r = train(data + "--resume " + quote(tmp / "parts") + " --out " + quote(tmp / "parts"));
  CHECK(r.status == 2);
  CHECK(r.err.find("already did 3 epochs") != std::string::npos);
}

TEST_CASE("fine-tuning on an image folder: new head, corrupt image skipped and counted") {
  TempDir tmp;
  write_cifar(tmp / "train.bin", 128, 6);
  const std::string base = tmp / "base";
  Run r = train("--data " + quote(tmp / "train.bin") + " --val " + quote(tmp / "train.bin") +
                " --out " + quote(base) + tiny + "--epochs 1");
  REQUIRE(r.status == 0);
  write_folder(tmp / "folder", 24);
  std::ofstream(tmp / "folder/dark/broken.png") << "not a png";
  const std::string ft = " --data " + quote(tmp / "folder") + " --val " + quote(tmp / "folder") +
                         " --model " + quote(base) +
                         " --epochs 3 --batch 16 --lr 1e-3 --warmup-epochs 0 --threads 1";
  const std::string to_ft = " --out " + quote(tmp / "ft");
  // The checkpoint has 10 classes, the folder 2: the head must be replaced explicitly.
  r = train(ft + to_ft);
  CHECK(r.status == 2);
  CHECK(r.err.find("--num-classes 2") != std::string::npos);
  r = train(ft + to_ft + " --num-classes 3");
  CHECK(r.status == 2);
  r = train(ft + to_ft + " --num-classes 2 --backbone-lr-scale 0.1");
  INFO(r.err);
  REQUIRE(r.status == 0);
  // Met in every epoch's training and validation, but warned about (by name) and counted once.
  const std::size_t warned = r.err.find("broken.png");
  CHECK(warned != std::string::npos);
  CHECK(r.err.find("broken.png", warned + 1) == std::string::npos);
  const nlohmann::json j = last_json_line(r.out);
  CHECK(j.at("skipped").get<int>() == 1);
  CHECK(j.at("val_top1").get<double>() > 0.9);  // bright vs dark
  const nlohmann::json cfg = nlohmann::json::parse(vit_test::slurp(tmp / "ft/config.json"));
  CHECK(cfg.at("num_classes") == 2);
  CHECK(cfg.at("label_names") == nlohmann::json::array({"bright", "dark"}));
  // Linear probe: only the head changes.
  r = train(ft + " --num-classes 2 --linear-probe --out " + quote(tmp / "probe"));
  REQUIRE(r.status == 0);
}

TEST_CASE("errors: one clear message naming the file or option, non-zero exit") {
  TempDir tmp;
  write_cifar(tmp / "train.bin", 64, 7);
  const std::string ok = " --val " + quote(tmp / "train.bin") + " --out " + quote(tmp / "o") + " ";
  struct Case {
    std::string args, message;
    int status;
  };
  fs::create_directories(tmp / "one/cat");
  vit::write_png(tmp / "one/cat/a.png", vit::Image(8, 8));
  fs::create_directories(tmp / "empty/a");
  fs::create_directories(tmp / "empty/b");
  std::ofstream(tmp / "zero.bin").close();
  const std::vector<Case> cases = {
      {"--data " + quote(tmp / "missing.bin") + ok, "missing.bin", 1},
      {"--data " + quote(tmp / "zero.bin") + ok, "zero.bin", 1},
      {"--data " + quote(tmp / "one") + ok, "one class", 1},
      {"--data " + quote(tmp / "empty") + ok, "no images", 1},
      {"--data " + quote(tmp / "train.bin") + ok + "--batch 128", "fewer than one batch of 128", 2},
      {"--data " + quote(tmp / "train.bin") + ok + "--epochs 2 --warmup-epochs 3",
       "--warmup-epochs", 2},
      {"--data " + quote(tmp / "train.bin") + ok + "--pool max", "--pool", 2},
      {"--data " + quote(tmp / "train.bin") + ok + "--crop-scale 1.5", "--crop-scale", 2},
      {"--data " + quote(tmp / "train.bin") + ok + "--batch 32 --embed-dim 30 --heads 4", "heads",
       2},
      {"--data " + quote(tmp / "train.bin") + ok + "--resume " + quote(tmp / "nowhere"), "nowhere",
       1},
      {"--data " + quote(tmp / "train.bin") + ok + "--batch 32 --model " + quote(tmp / "nothing"),
       "nothing", 1},
  };
  for (const Case& c : cases) {
    INFO(c.args);
    const Run r = train(c.args);
    INFO(r.err);
    CHECK(r.status == c.status);
    CHECK(r.err.find(c.message) != std::string::npos);
    CHECK(r.out.empty());
  }
  // vit-eval: missing model, class count that does not match the head.
  Run r = eval("--model " + quote(tmp / "nothing") + " --data " + quote(tmp / "train.bin"));
  CHECK(r.status == 1);
  CHECK(r.err.find("nothing") != std::string::npos);
  r = train("--data " + quote(tmp / "train.bin") + ok + tiny + "--epochs 1");
  REQUIRE(r.status == 0);
  write_folder(tmp / "two", 2);
  r = eval("--model " + quote(tmp / "o") + " --data " + quote(tmp / "two"));
  CHECK(r.status == 2);
  CHECK(r.err.find("2 classes") != std::string::npos);
}

TEST_CASE(
    "vit-eval refuses a model with a NaN weight by name, and measures it with --no-check-finite") {
  TempDir tmp;
  write_cifar(tmp / "train.bin", 64, 11);
  const std::string data = quote(tmp / "train.bin");
  Run r = train("--data " + data + " --val " + data + " --out " + quote(tmp / "o") + tiny +
                "--epochs 1");
  REQUIRE(r.status == 0);
  // The saved weights again, with one NaN in block 0's first MLP layer.
  const std::string bad = "blocks.0.mlp.fc1.weight";
  vit_test::copy_with_value(tmp / "o/model.safetensors", tmp / "o/model.safetensors", bad, 7,
                            std::numeric_limits<float>::quiet_NaN());
  const std::string args = "--model " + quote(tmp / "o") + " --data " + data + " --json";
  r = eval(args);
  INFO(r.err);
  CHECK(r.status == 1);
  CHECK(r.out.empty());
  CHECK(r.err.find("vit-eval: error:") != std::string::npos);
  CHECK(r.err.find("'" + bad + "'") != std::string::npos);
  CHECK(r.err.find("(nan) at element 7") != std::string::npos);

  r = eval(args + " --no-check-finite");
  INFO(r.err);
  REQUIRE(r.status == 0);
  const nlohmann::json j = last_json_line(r.out);
  CHECK(j.at("n") == 64);
  CHECK(j.at("top1").get<double>() >= 0.0);
  CHECK(j.at("top1").get<double>() <= 1.0);
}
