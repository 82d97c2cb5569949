// vit-train: trains a Vision Transformer from scratch, or fine-tunes a
// checkpoint, on CIFAR-10, Fashion-MNIST or a folder of images.
//
//   vit-train --data TRAIN --val VAL --out DIR [--model CHECKPOINT] [options]
//
// Writes DIR/model.safetensors + DIR/config.json (timm layout, loadable by
// vit-classify and timm) after every epoch, DIR/optimizer.safetensors and
// DIR/train_state.json (to --resume), DIR/log.csv and DIR/curves.png.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data_source.hpp"
#include "plot.hpp"
#include "vit/data/augment.hpp"
#include "vit/io/checkpoint.hpp"
#include "vit/train/backprop.hpp"
#include "vit/train/evaluate.hpp"
#include "vit/train/init.hpp"
#include "vit/train/loss.hpp"
#include "vit/train/mixup.hpp"
#include "vit/train/optimizer.hpp"
#include "vit/train/schedule.hpp"
#include "vit/vit.hpp"

namespace {

using Model = vit::VisionTransformer<vit::DynamicConfig<float>>;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

struct Options {
  std::string data, val, out, model, resume;
  int num_classes = 0;
  bool linear_probe = false;
  double backbone_lr_scale = 1.0;
  // Architecture when training from scratch.
  int image_size = 0, patch_size = 4, embed_dim = 192, depth = 6, heads = 3;
  double mlp_ratio = 2.0;
  std::string pool = "token";
  // Recipe.
  int epochs = 30, batch = 128, warmup_epochs = 2, threads = 2;
  double lr = 1e-3, min_lr = 1e-5, weight_decay = 0.05, label_smoothing = 0.1, clip_grad = 1.0;
  std::string optimizer = "adamw";
  double momentum = 0.9;
  // Regularisation: random erasing probability, Mixup / CutMix alphas (0: off).
  double random_erase = 0.0, mixup = 0.0, cutmix = 0.0, mix_prob = 1.0;
  // Smallest area fraction of a random resized crop (0: the data's default,
  // 0.08 for folders, pad-and-crop for the fixed-size sets).
  double crop_scale = 0.0;
  std::uint64_t seed = 0;
  int limit_train = 0, limit_val = 0;
  int stop_after = 0;  // end this invocation after that epoch (0: run to --epochs)
  std::vector<double> mean, std;
  std::set<std::string> given;  // options set on the command line ("--lr", ...)
};

// The recipe options, by their command-line names: saved in train_state.json
// so that --resume continues with them unless given again.
template <class F>
void for_each_recipe_option(Options& o, F&& f) {
  f("--epochs", o.epochs);
  f("--batch", o.batch);
  f("--warmup-epochs", o.warmup_epochs);
  f("--lr", o.lr);
  f("--min-lr", o.min_lr);
  f("--weight-decay", o.weight_decay);
  f("--label-smoothing", o.label_smoothing);
  f("--clip-grad", o.clip_grad);
  f("--optimizer", o.optimizer);
  f("--momentum", o.momentum);
  f("--random-erase", o.random_erase);
  f("--crop-scale", o.crop_scale);
  f("--mixup", o.mixup);
  f("--cutmix", o.cutmix);
  f("--mix-prob", o.mix_prob);
  f("--seed", o.seed);
  f("--backbone-lr-scale", o.backbone_lr_scale);
  f("--linear-probe", o.linear_probe);
  f("--limit-train", o.limit_train);
}

nlohmann::json recipe_json(Options o) {
  nlohmann::json j;
  for_each_recipe_option(o, [&j](const char* name, const auto& v) { j[name] = v; });
  return j;
}

// Takes the saved recipe of a run being resumed, except what the command line sets.
void restore_recipe(Options& o, const nlohmann::json& saved) {
  for_each_recipe_option(o, [&](const char* name, auto& v) {
    if (o.given.count(name) == 0 && saved.contains(name)) saved.at(name).get_to(v);
  });
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string clock_string(double s) {
  const long t = long(std::max(0.0, s) + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  return buf;
}

// A view of the first `limit` items of a data set (all when limit is 0).
class Prefix : public vit::data::Dataset {
 public:
  Prefix(const vit::data::Dataset& base, int limit)
      : base_(base), n_(limit > 0 ? std::min(limit, base.size()) : base.size()) {}
  int size() const override { return n_; }
  const std::vector<std::string>& class_names() const override { return base_.class_names(); }
  const std::string& source() const override { return base_.source(); }

 private:
  int label_at(int i) const override { return base_.label(i); }
  vit::Image load_at(int i) const override { return base_.load(i); }
  const vit::data::Dataset& base_;
  int n_;
};

// Normalisation and crop defaults for a data set trained from scratch.
vit::DataConfig scratch_data_config(const vit::data::Dataset& ds, int size) {
  vit::DataConfig d;
  d.input_size = size;
  d.crop_pct = 1.0;
  d.interpolation = "bilinear";
  if (dynamic_cast<const vit::data::Cifar10*>(&ds)) {
    d.mean = {0.4914, 0.4822, 0.4465};
    d.std = {0.2470, 0.2435, 0.2616};
  } else if (dynamic_cast<const vit::data::FashionMnist*>(&ds)) {
    d.mean = {0.2860, 0.2860, 0.2860};
    d.std = {0.3530, 0.3530, 0.3530};
  } else {
    d.mean = {0.485, 0.456, 0.406};  // ImageNet's, the usual choice for photos
    d.std = {0.229, 0.224, 0.225};
    d.crop_pct = 0.875;
  }
  return d;
}

// Training augmentation: folders get random resized crops (area fraction from
// crop_scale, default 0.08); the small fixed-size sets are brought to the
// model's size, then padded-and-cropped (1/8 of the side), or given random
// resized crops too when crop_scale is set.
vit::data::Transform train_transform(const vit::data::Dataset& ds, const vit::DataConfig& d,
                                     double erase_p, double crop_scale) {
  const int s = d.input_size;
  const bool folder = dynamic_cast<const vit::data::ImageFolder*>(&ds) != nullptr;
  const std::array<double, 2> ratio = {3.0 / 4.0, 4.0 / 3.0};
  if (folder)
    return vit::data::make_train_transform(s, vit::parse_interpolation(d.interpolation),
                                           {crop_scale > 0 ? crop_scale : 0.08, 1.0}, ratio,
                                           erase_p);
  vit::DataConfig resize = d;
  resize.crop_pct = 1.0;
  const vit::data::Transform to_size = vit::data::make_eval_transform(resize);
  const vit::data::Transform augment =
      crop_scale > 0
          ? vit::data::make_train_transform(s, vit::Interpolation::bilinear, {crop_scale, 1.0},
                                            ratio, erase_p)
          : vit::data::make_cifar_train_transform(s, s / 8, vit::Interpolation::bilinear, erase_p);
  return [to_size, augment, s](const vit::Image& im, std::mt19937_64& rng) {
    if (im.width == s && im.height == s) return augment(im, rng);
    return augment(to_size(im, rng), rng);
  };
}

// A model from scratch, from Options' architecture.
Model scratch_model(const Options& o, int classes, std::uint64_t seed) {
  vit::Architecture a;
  a.image_size = o.image_size;
  a.patch_size = o.patch_size;
  a.embed_dim = o.embed_dim;
  a.depth = o.depth;
  a.num_heads = o.heads;
  a.mlp_hidden = int(std::lround(o.embed_dim * o.mlp_ratio));
  a.num_classes = classes;
  if (o.pool == "avg") {
    a.pooling = vit::Pooling::avg;
    a.final_norm = false;
    a.fc_norm = true;
  }
  if (const char* p = a.problem()) throw vit::argument_error(std::string("architecture: ") + p);
  Model m(a);
  vit::train::init_weights(m, seed);
  return m;
}

// The checkpoint's model with a new head of `classes` outputs (trunc-normal
// weights, zero bias), every other parameter kept.
Model with_new_head(const Model& old, int classes, std::uint64_t seed) {
  vit::Architecture a = old.architecture();
  a.num_classes = classes;
  Model m(a);
  vit::train::init_weights(m, seed);
  auto dst = m.named_parameters();
  auto src = const_cast<Model&>(old).named_parameters();
  for (std::size_t i = 0; i < dst.size(); ++i) {
    if (dst[i].name.rfind("head", 0) == 0) continue;
    std::size_t count = 1;
    for (auto d : dst[i].shape) count *= std::size_t(d);
    std::copy(src[i].data, src[i].data + count, dst[i].data);
  }
  m.update_position_table();
  return m;
}

struct EpochRecord {
  int epoch;
  double train_loss, train_top1, val_loss, val_top1, val_top5, lr, images_per_s, seconds;
};

void write_csv(const std::string& path, const std::vector<EpochRecord>& log) {
  std::ofstream out(path, std::ios::trunc);
  out << "epoch,train_loss,train_top1,val_loss,val_top1,val_top5,lr,images_per_s,seconds\n";
  for (const EpochRecord& r : log)
    out << r.epoch << ',' << r.train_loss << ',' << r.train_top1 << ',' << r.val_loss << ','
        << r.val_top1 << ',' << r.val_top5 << ',' << r.lr << ',' << r.images_per_s << ','
        << r.seconds << '\n';
  if (!out) throw vit::io_error(path + ": cannot write the training log");
}

int run(Options o) {
  const Clock::time_point start = Clock::now();
  nlohmann::json resume_state;
  if (!o.resume.empty()) {
    resume_state = vit::io::detail::read_json_file(o.resume + "/train_state.json");
    if (resume_state.contains("recipe")) restore_recipe(o, resume_state.at("recipe"));
  }
  if (o.warmup_epochs > o.epochs)  // checked after a resumed run's recipe is restored
    throw vit::argument_error("--warmup-epochs " + std::to_string(o.warmup_epochs) +
                              " is more than --epochs " + std::to_string(o.epochs));
  // Data.
  const std::unique_ptr<vit::data::Dataset> train_full = vit_examples::open_dataset(o.data);
  const std::unique_ptr<vit::data::Dataset> val_full = vit_examples::open_dataset(o.val);
  const Prefix train(*train_full, o.limit_train), val(*val_full, o.limit_val);
  if (train.num_classes() < 2)
    throw vit::argument_error(o.data + ": training needs at least 2 classes, found " +
                              std::to_string(train.num_classes()));
  if (val.num_classes() != train.num_classes())
    throw vit::argument_error(o.val + ": " + std::to_string(val.num_classes()) +
                              " classes, the training data has " +
                              std::to_string(train.num_classes()));
  if (train.size() < o.batch)
    throw vit::argument_error(o.data + ": " + std::to_string(train.size()) +
                              " images, fewer than one batch of " + std::to_string(o.batch));
  const int classes = train.num_classes();

  // Model: resumed, fine-tuned from a checkpoint, or new.
  std::optional<Model> model;
  vit::DataConfig data;
  int first_epoch = 0;
  const std::string resume_dir = o.resume;
  if (!resume_dir.empty()) {
    auto loaded = vit::load_model<float>(resume_dir);
    loaded.model.unpack_weights();
    model.emplace(std::move(loaded.model));
    data = loaded.info.data;
    first_epoch = resume_state.at("epoch").get<int>();
    if (first_epoch >= o.epochs)
      throw vit::argument_error(resume_dir + ": the run already did " +
                                std::to_string(first_epoch) + " epochs; pass a larger --epochs " +
                                "to train further");
  } else if (!o.model.empty()) {
    vit::LoadOptions lo;
    lo.image_size = o.image_size;
    auto loaded = vit::load_model<float>(o.model, lo);
    loaded.model.unpack_weights();
    data = loaded.info.data;
    const int head = loaded.model.architecture().num_classes;
    if (head != classes) {
      if (o.num_classes == 0)
        throw vit::argument_error(o.model + ": the checkpoint's head has " + std::to_string(head) +
                                  " classes, the data " + std::to_string(classes) +
                                  ": pass --num-classes " + std::to_string(classes) +
                                  " to replace the head");
      if (o.num_classes != classes)
        throw vit::argument_error("--num-classes " + std::to_string(o.num_classes) +
                                  " but the data has " + std::to_string(classes) + " classes");
      model.emplace(with_new_head(loaded.model, classes, o.seed));
    } else {
      model.emplace(std::move(loaded.model));
    }
    model->resize_position_table();
  } else {
    Options so = o;
    if (so.image_size == 0) {
      const vit::Image first = train.load(0);
      so.image_size = first.width;
    }
    model.emplace(scratch_model(so, classes, o.seed));
    data = scratch_data_config(*train_full, so.image_size);  // the reader, not the Prefix view
  }
  data.input_size = model->architecture().image_size;
  if (!o.mean.empty()) std::copy(o.mean.begin(), o.mean.end(), data.mean.begin());
  if (!o.std.empty()) std::copy(o.std.begin(), o.std.end(), data.std.begin());
  const vit::Architecture& arch = model->architecture();

  // Optimizer: AdamW with timm's decay groups; fine-tuning options.
  vit::train::Backprop<vit::DynamicConfig<float>> bp(*model, o.threads);
  auto params = model->named_parameters();
  auto grads = bp.grads().named_parameters();
  auto settings = vit::train::param_settings(
      params, [&](const vit::ParameterRef<float>& p, vit::train::ParamSettings& s) {
        const bool head = p.name.rfind("head", 0) == 0;
        if (!head && o.linear_probe) s.frozen = true;
        if (!head) s.lr_scale = o.backbone_lr_scale;
      });
  std::unique_ptr<vit::train::Optimizer<float>> optimizer;
  if (o.optimizer == "sgd") {
    vit::train::SGDOptions so;
    so.momentum = o.momentum;
    so.weight_decay = o.weight_decay;
    optimizer = std::make_unique<vit::train::SGD<float>>(params, grads, so, settings);
  } else {
    vit::train::AdamWOptions ao;
    ao.weight_decay = o.weight_decay;
    optimizer = std::make_unique<vit::train::AdamW<float>>(params, grads, ao, settings);
  }
  vit::train::Optimizer<float>& opt = *optimizer;
  if (!resume_dir.empty())
    opt.load_state(vit::io::SafeTensors::open(resume_dir + "/optimizer.safetensors"));
  vit::train::MixOptions mix;
  mix.mixup_alpha = o.mixup;
  mix.cutmix_alpha = o.cutmix;
  mix.prob = o.mix_prob;
  mix.smoothing = o.label_smoothing;
  mix.validate();

  const int steps_per_epoch = train.size() / o.batch;  // the last partial batch is dropped
  vit::train::CosineSchedule sched;
  sched.base_lr = o.lr;
  sched.min_lr = o.min_lr;
  sched.warmup_steps = std::int64_t(o.warmup_epochs) * steps_per_epoch;
  sched.total_steps = std::int64_t(o.epochs) * steps_per_epoch;
  sched.warmup_prefix = true;
  sched.validate();

  const vit::data::Transform augment =
      train_transform(*train_full, data, o.random_erase, o.crop_scale);
  vit::DataConfig eval_cfg = data;
  const vit::data::Transform eval_tf = vit::data::make_eval_transform(eval_cfg);
  // Folder images are decoded on every use, so an unreadable file comes back every epoch:
  // warn once per file and count files, not encounters (--data and --val may be one folder).
  std::set<std::pair<std::string, int>> unreadable;
  const auto report_skips = [&unreadable](const vit::data::Dataset& ds) {
    return [&unreadable, &ds](int i, const std::string& msg) {
      if (unreadable.emplace(ds.source(), i).second)
        std::fprintf(stderr, "\nvit-train: warning: skipped %s\n", msg.c_str());
    };
  };
  vit::data::BatchOptions bo = vit::data::BatchOptions::from(data);
  bo.skip_corrupt = true;
  bo.on_skip = report_skips(train);
  vit::data::BatchOptions val_bo = bo;
  val_bo.on_skip = report_skips(val);
  std::fprintf(
      stderr,
      "vit-train: %d train / %d val images, %d classes; model %dx%d patch %d, width %d, "
      "depth %d, heads %d, mlp %d (%lld parameters); %d epochs of %d steps, batch %d, "
      "%d threads%s\n",
      train.size(), val.size(), classes, arch.image_size, arch.image_size, arch.patch_size,
      arch.embed_dim, arch.depth, arch.num_heads, arch.mlp_hidden,
      [&] {
        long long n = 0;
        for (const auto& p : params) {
          long long c = 1;
          for (auto d : p.shape) c *= d;
          n += c;
        }
        return n;
      }(),
      o.epochs, steps_per_epoch, o.batch, o.threads,
      bp.packed_kernels() ? ", AVX-512 kernels" : "");

  fs::create_directories(o.out);
  std::vector<EpochRecord> log;
  if (!resume_dir.empty() && fs::exists(resume_dir + "/log.csv")) {
    std::ifstream in(resume_dir + "/log.csv");
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      EpochRecord r{};
      if (std::sscanf(line.c_str(), "%d,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf", &r.epoch, &r.train_loss,
                      &r.train_top1, &r.val_loss, &r.val_top1, &r.val_top5, &r.lr, &r.images_per_s,
                      &r.seconds) == 9)
        log.push_back(r);
    }
  }
  vit::Matrix<float> dlogits(o.batch, classes);
  double train_seconds = 0;
  const int last_epoch =
      o.stop_after > 0 ? std::min(o.epochs, std::max(first_epoch, o.stop_after)) : o.epochs;
  for (int epoch = first_epoch; epoch < last_epoch; ++epoch) {
    const std::vector<int> order = vit::data::shuffled(train.size(), o.seed, epoch);
    std::mt19937_64 rng = vit::data::make_rng(o.seed, 1000 + std::uint64_t(epoch));
    const Clock::time_point t0 = Clock::now();
    double loss_sum = 0, lr = 0;
    long correct = 0, seen = 0;
    for (int s = 0; s < steps_per_epoch; ++s) {
      const std::vector<int> idx(order.begin() + std::ptrdiff_t(s) * o.batch,
                                 order.begin() + std::ptrdiff_t(s + 1) * o.batch);
      vit::data::Batch b = vit::data::make_batch(train, idx, augment, rng, bo);  // mixed in place
      if (b.images.rows() == 0) continue;
      opt.zero_grad();
      vit::Matrix<float> targets;
      if (mix.enabled())
        targets = vit::train::mix_batch(b.images, arch.image_size, b.labels, classes, mix, rng);
      const vit::Matrix<float>& logits = bp.forward(*model, b.images);
      vit::MatrixRef<float> dl = dlogits.topRows(logits.rows());
      const double loss = mix.enabled() ? vit::train::cross_entropy<float>(logits, targets, &dl)
                                        : vit::train::cross_entropy<float>(logits, b.labels,
                                                                           o.label_smoothing, &dl);
      if (!std::isfinite(loss))
        throw vit::error("the loss became " + std::to_string(loss) + " at epoch " +
                         std::to_string(epoch + 1) + ", step " + std::to_string(s + 1) +
                         ": lower --lr");
      bp.backward(*model, dl);
      if (o.clip_grad > 0) opt.clip_grad_norm(o.clip_grad);
      lr = sched(opt.steps());
      opt.step(lr);
      const std::vector<int> pred = vit::train::argmax_rows<float>(logits);
      for (std::size_t i = 0; i < pred.size(); ++i) correct += pred[i] == b.labels[i];
      seen += long(pred.size());
      loss_sum += loss * double(pred.size());
      if (s % 5 == 4 || s + 1 == steps_per_epoch) {
        const double el = seconds_since(t0);
        const double ips = double(seen) / el;
        const double left = (double(o.epochs - epoch) * steps_per_epoch - (s + 1)) * o.batch / ips;
        const int width = 24, done = int(double(width) * (s + 1) / steps_per_epoch);
        std::fprintf(stderr, "\repoch %d/%d [%s%s] %d/%d  %.0f img/s  loss %.4f  lr %.2e  ETA %s ",
                     epoch + 1, o.epochs, std::string(std::size_t(done), '#').c_str(),
                     std::string(std::size_t(width - done), '.').c_str(), (s + 1) * o.batch,
                     steps_per_epoch * o.batch, ips, loss_sum / double(seen), lr,
                     clock_string(left).c_str());
      }
    }
    const double epoch_seconds = seconds_since(t0);
    train_seconds += epoch_seconds;
    // Validation on a packed copy (the fast inference kernels).
    Model eval_model = *model;
    eval_model.update_position_table();  // pos_embed changed since the last refresh
    eval_model.pack_weights();
    const vit::train::Evaluation ev =
        vit::train::evaluate(eval_model, val, eval_tf, val_bo, o.batch, o.threads);
    EpochRecord r{epoch + 1,
                  loss_sum / double(std::max(1L, seen)),
                  double(correct) / double(std::max(1L, seen)),
                  ev.loss,
                  ev.top1,
                  ev.top5,
                  lr,
                  double(seen) / epoch_seconds,
                  seconds_since(start)};
    log.push_back(r);
    std::fprintf(stderr,
                 "\repoch %d/%d  train loss %.4f top-1 %.2f%%  val loss %.4f top-1 %.2f%% top-5 "
                 "%.2f%%  %.0f img/s  %s elapsed\n",
                 r.epoch, o.epochs, r.train_loss, 100 * r.train_top1, r.val_loss, 100 * r.val_top1,
                 100 * r.val_top5, r.images_per_s, clock_string(r.seconds).c_str());
    // Everything needed to use or resume the model, after every epoch.
    vit::save_model(*model, o.out, data, train.class_names());
    opt.save_state(o.out + "/optimizer.safetensors");
    write_csv(o.out + "/log.csv", log);
    std::ofstream(o.out + "/train_state.json")
        << nlohmann::json{{"epoch", epoch + 1}, {"recipe", recipe_json(o)}}.dump(2) << "\n";
    vit_examples::plot_curves(o.out + "/curves.png", log);
  }
  const EpochRecord* last = log.empty() ? nullptr : &log.back();
  std::printf("%s\n", nlohmann::json{{"epochs", last ? last->epoch : 0},
                                     {"val_top1", last ? last->val_top1 : 0.0},
                                     {"val_top5", last ? last->val_top5 : 0.0},
                                     {"train_seconds", train_seconds},
                                     {"skipped", unreadable.size()},
                                     {"out", o.out}}
                          .dump()
                          .c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Train a Vision Transformer, or fine-tune a checkpoint, on CIFAR-10, "
      "Fashion-MNIST or a folder of images (one sub-folder per class)."};
  Options o;
  app.add_option("--data", o.data, "training data: CIFAR-10 .bin, IDX images, or a folder")
      ->required();
  app.add_option("--val", o.val, "validation data (same kinds)")->required();
  app.add_option("--out", o.out, "folder for the model, log and plot")->required();
  app.add_option("--model", o.model, "checkpoint to fine-tune (default: train from scratch)");
  app.add_option("--resume", o.resume, "continue the run saved in this folder");
  app.add_option("--num-classes", o.num_classes,
                 "replace the checkpoint's head with one of N classes");
  app.add_flag("--linear-probe", o.linear_probe, "train only the head");
  app.add_option("--backbone-lr-scale", o.backbone_lr_scale,
                 "learning-rate factor for everything but the head")
      ->check(CLI::Range(0.0, 1e3));
  app.add_option("--image-size", o.image_size, "input side (default: the data's, or the model's)")
      ->check(CLI::Range(0, 4096));
  app.add_option("--patch-size", o.patch_size)->check(CLI::Range(1, 256));
  app.add_option("--embed-dim", o.embed_dim)->check(CLI::Range(1, 8192));
  app.add_option("--depth", o.depth)->check(CLI::Range(1, 256));
  app.add_option("--heads", o.heads)->check(CLI::Range(1, 256));
  app.add_option("--mlp-ratio", o.mlp_ratio)->check(CLI::Range(0.01, 64.0));
  app.add_option("--pool", o.pool, "token or avg")->check(CLI::IsMember({"token", "avg"}));
  app.add_option("--epochs", o.epochs)->check(CLI::Range(1, 100000));
  app.add_option("--batch", o.batch)->check(CLI::Range(1, 65536));
  app.add_option("--lr", o.lr)->check(CLI::Range(0.0, 10.0));
  app.add_option("--min-lr", o.min_lr)->check(CLI::Range(0.0, 10.0));
  app.add_option("--warmup-epochs", o.warmup_epochs)->check(CLI::Range(0, 100000));
  app.add_option("--weight-decay", o.weight_decay)->check(CLI::Range(0.0, 10.0));
  app.add_option("--label-smoothing", o.label_smoothing)->check(CLI::Range(0.0, 0.99));
  app.add_option("--clip-grad", o.clip_grad, "max gradient norm (0: no clipping)")
      ->check(CLI::Range(0.0, 1e6));
  app.add_option("--optimizer", o.optimizer, "adamw or sgd")
      ->check(CLI::IsMember({"adamw", "sgd"}));
  app.add_option("--momentum", o.momentum, "SGD momentum")->check(CLI::Range(0.0, 1.0));
  app.add_option("--random-erase", o.random_erase, "random erasing probability (0: off)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--crop-scale", o.crop_scale,
                 "random resized crops of at least this area fraction (0: 0.08 for folders, "
                 "pad-and-crop for CIFAR-10 / Fashion-MNIST)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--mixup", o.mixup, "Mixup Beta alpha (0: off)")->check(CLI::Range(0.0, 100.0));
  app.add_option("--cutmix", o.cutmix, "CutMix Beta alpha (0: off)")->check(CLI::Range(0.0, 100.0));
  app.add_option("--mix-prob", o.mix_prob, "probability of mixing a batch")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--seed", o.seed);
  app.add_option("--threads", o.threads)->check(CLI::Range(1, 256));
  app.add_option("--limit-train", o.limit_train, "use the first N training images")
      ->check(CLI::Range(0, 1 << 30));
  app.add_option("--limit-val", o.limit_val, "use the first N validation images")
      ->check(CLI::Range(0, 1 << 30));
  app.add_option("--stop-after", o.stop_after,
                 "end this run after that epoch (continue later with --resume)")
      ->check(CLI::Range(0, 100000));
  app.add_option("--mean", o.mean, "normalisation mean, 3 values")->expected(3);
  app.add_option("--std", o.std, "normalisation std, 3 values")->expected(3);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "vit-train: error: %s (see --help)\n", e.what());
    return 2;
  }
  for (const CLI::Option* opt : app.get_options())
    if (opt->count() > 0) o.given.insert(opt->get_name());
  try {
    return run(o);
  } catch (const vit::argument_error& e) {
    std::fprintf(stderr, "\nvit-train: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nvit-train: error: %s\n", e.what());
    return 1;
  }
}
