// vit-bench: time VisionTransformer::forward on a random batch.
//
//   vit-bench --model PRESET_OR_PATH [--batch N] [--threads T] [--precision fp32|bf16|int8]
//             [--runs R] [--warmup W] [--image-size S] [--json]
//   vit-bench --model PRESET_OR_PATH --flops      (matmul FLOP table of the model, no run)
//
// --model is a preset name from vit::preset_names() (random weights, fixed seed) or a
// checkpoint (a .safetensors file or a folder, read with vit::load_model).
//
// Prints the median/min/max time per batch of R timed calls (after W untimed ones),
// images/s, GFLOP/s (matmul FLOPs only, as ../shared/bench/peers.py counts them), peak
// RSS, load time, and the CPU time other processes used meanwhile (foreign_cores). With
// --json: one JSON object on stdout (the keys compare.py and peers.py use) and nothing
// else; messages go to stderr.
//
// Exit status: 0 measured; 2 bad arguments (unknown preset, unsupported precision or
// thread count); 3 the checkpoint could not be loaded or the run failed.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "vit/vit.hpp"

#ifndef VIT_BENCH_BUILD_INFO
#define VIT_BENCH_BUILD_INFO "unknown build flags"
#endif

namespace {

using Model = vit::VisionTransformer<vit::DynamicConfig<float>>;
using Clock = std::chrono::steady_clock;

constexpr int kExitArgs = 2;
constexpr int kExitRun = 3;

struct Options {
  std::string model;
  int batch = 1;
  int threads = 1;
  std::string precision = "fp32";
  int runs = 10;
  int warmup = 3;
  int image_size = 0;
  bool json = false;
  bool flops = false;
};

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// CPU time every process on the machine has used so far, in seconds: user + nice +
// system + irq + softirq + steal from the first line of /proc/stat (as peers.py counts
// it). nullopt where /proc/stat cannot be read.
std::optional<double> machine_busy_seconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  unsigned long long v[8] = {};
  if (!(in >> cpu) || cpu != "cpu") return std::nullopt;
  for (auto& x : v)
    if (!(in >> x)) return std::nullopt;
  const long tick = sysconf(_SC_CLK_TCK);
  if (tick <= 0) return std::nullopt;
  return double(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / double(tick);
}

// CPU time (user + system) of this process, all threads, in seconds.
double own_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto sec = [](const timeval& t) { return double(t.tv_sec) + double(t.tv_usec) * 1e-6; };
  return sec(u.ru_utime) + sec(u.ru_stime);
}

// Peak resident set size of this process in MB (ru_maxrss is in KiB on Linux).
double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;
}

// Matmul FLOPs per image of an architecture, 1 multiply-add = 2 FLOP. LayerNorm,
// softmax, GELU, bias and residual adds are not counted. For the timm ViT-Ti/S/B at 224
// this is exactly peers.py's count (2.507, 9.198, 35.128 GFLOP).
struct Flops {
  std::vector<std::pair<std::string, double>> parts;
  double total = 0;
};

Flops matmul_flops(const vit::Architecture& a) {
  const double d = a.embed_dim, depth = a.depth, hidden = a.mlp_hidden;
  const double p = a.num_patches(), t = a.num_tokens();
  const double patch_len = double(a.in_chans) * a.patch_size * a.patch_size;
  const double classes = a.num_classes, features = a.num_features();
  Flops f;
  f.parts = {
      {"patch_embed", 2 * p * patch_len * d},
      {"qkv", depth * 2 * t * d * 3 * d},
      {"attn_scores", depth * 2 * t * t * d},  // Q K^T, summed over heads
      {"attn_values", depth * 2 * t * t * d},  // softmax(.) V
      {"proj", depth * 2 * t * d * d},
      {"mlp_fc1", depth * 2 * t * d * hidden},
      {"mlp_fc2", depth * 2 * t * hidden * d},
      {"pre_logits", a.representation_size > 0 ? 2 * d * a.representation_size : 0.0},
      // one pooled feature per image; distilled models also run head_dist
      {"head", 2 * features * classes + (a.dist_token ? 2 * d * classes : 0.0)},
  };
  for (const auto& part : f.parts) f.total += part.second;
  return f;
}

bool is_layer_norm_weight(const std::string& name) {
  const std::string suffix = ".weight";
  if (name.size() <= suffix.size() ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return false;
  const std::string module = name.substr(0, name.size() - suffix.size());
  const std::string last = module.substr(module.rfind('.') + 1);  // npos + 1 == 0
  return last.find("norm") != std::string::npos;                  // norm, norm1, norm2, fc_norm
}

// Random weights: every parameter N(0, 0.02) from a fixed seed, LayerNorm gains 1.
void fill_random(Model& model, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (vit::ParameterRef<float>& p : model.named_parameters()) {
    std::int64_t count = 1;
    for (auto s : p.shape) count *= s;
    const bool gain = is_layer_norm_weight(p.name);
    for (std::int64_t i = 0; i < count; ++i) p.data[i] = gain ? 1.0f : normal(rng);
  }
  model.update_position_table();
}

// ForwardOptions::threads when the library has it (detected, so the benchmark follows
// the library as it changes).
template <class T, class = void>
struct has_threads_field : std::false_type {};
template <class T>
struct has_threads_field<T, std::void_t<decltype(std::declval<T&>().threads)>> : std::true_type {};
constexpr bool kLibraryThreads = has_threads_field<vit::ForwardOptions>::value;

template <class O>
void set_threads(O& options, int threads) {
  if constexpr (has_threads_field<O>::value) options.threads = threads;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double round_to(double v, int digits) {
  const double scale = std::pow(10.0, digits);
  return std::round(v * scale) / scale;
}

std::string build_info() {
  std::string s = std::string("vit ") + vit::version_string + ", Eigen " +
                  std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) +
                  "." + std::to_string(EIGEN_MINOR_VERSION) + " (" +
                  Eigen::SimdInstructionSetsInUse() + ")";
#if defined(__VERSION__)
#if defined(__clang__)
  s += ", clang " __VERSION__;
#elif defined(__GNUC__)
  s += ", g++ " __VERSION__;
#endif
#endif
  s += ", " VIT_BENCH_BUILD_INFO;
  return s;
}

void print_flops_table(const std::string& name, const vit::Architecture& a) {
  const Flops f = matmul_flops(a);
  std::printf(
      "Matmul GFLOP per image (1 multiply-add = 2 FLOP) of %s (%d, %d x %d heads, mlp %d, "
      "%d px, patch %d, %d tokens)\n",
      name.c_str(), a.embed_dim, a.depth, a.num_heads, a.mlp_hidden, a.image_size, a.patch_size,
      a.num_tokens());
  for (const auto& part : f.parts)
    std::printf("  %-12s %8.3f\n", part.first.c_str(), part.second / 1e9);
  std::printf("  %-12s %8.3f\n", "total", f.total / 1e9);
}

// Which kernels the linear layers run.
std::string kernels(const Model& model) {
  if (!model.weights_packed()) return "plain weights (Eigen kernels)";
  switch (model.precision()) {
    case vit::Precision::bf16:
      return vit::nn::gemm_packed_bf16_uses_avx512bf16()
                 ? "bf16 weights (AVX512-BF16 kernel)"
                 : "bf16 weights (portable kernel: no AVX512-BF16 here)";
    case vit::Precision::int8:
      return vit::nn::gemm_packed_int8_uses_avx512vnni()
                 ? "int8 weights (AVX512-VNNI kernel)"
                 : "int8 weights (portable kernel: no AVX512-VNNI here)";
    default:
      return vit::nn::gemm_packed_uses_avx512() ? "fp32 packed weights (AVX-512 kernel)"
                                                : "fp32 packed weights (portable kernel)";
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Time the Vision Transformer forward pass of vit on a random batch.", "vit-bench"};
  app.add_option("--model", o.model,
                 "a preset name (random weights; see the error message for the list) or a "
                 "checkpoint: a .safetensors file or a folder")
      ->required();
  app.add_option("--batch", o.batch, "images per forward call")->check(CLI::Range(1, 4096));
  app.add_option("--threads", o.threads, "threads of the forward pass")->check(CLI::Range(1, 1024));
  app.add_option("--precision", o.precision, "arithmetic of the forward pass")
      ->check(CLI::IsMember({"fp32", "bf16", "int8"}));
  app.add_option("--runs", o.runs, "timed forward calls")->check(CLI::Range(1, 1000000));
  app.add_option("--warmup", o.warmup, "untimed forward calls before them")
      ->check(CLI::Range(0, 1000000));
  app.add_option("--image-size", o.image_size,
                 "input side in pixels (default: the model's; a checkpoint's learned position "
                 "table is resampled)")
      ->check(CLI::Range(1, 16384));
  app.add_flag("--json", o.json, "print one JSON object on stdout and nothing else");
  app.add_flag("--flops", o.flops, "print the model's matmul FLOP table and exit (no run)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "vit-bench: error: %s (see --help)\n", e.what());
    return kExitArgs;
  }

  if (!kLibraryThreads && o.threads != 1) {
    std::fprintf(stderr,
                 "vit-bench: error: --threads %d: this vit has no vit::ForwardOptions::threads, "
                 "so the forward pass runs on one thread; only --threads 1 can be measured\n",
                 o.threads);
    return kExitArgs;
  }

  // The model: a checkpoint when the path exists, else a preset with random weights.
  namespace fs = std::filesystem;
  std::error_code ec;
  const bool from_file = fs::exists(o.model, ec);
  std::optional<Model> model;
  std::string weights;
  const auto load_start = Clock::now();
  try {
    if (from_file) {
      vit::LoadOptions lo;
      lo.image_size = o.image_size;
      model.emplace(std::move(vit::load_model<float>(o.model, lo).model));
      weights = "checkpoint";
    } else {
      vit::Architecture arch;
      try {
        arch = vit::preset_architecture(o.model);
      } catch (const vit::config_error& e) {
        std::fprintf(stderr,
                     "vit-bench: error: --model '%s' is not an existing file or folder, and %s\n",
                     o.model.c_str(), e.what());
        return kExitArgs;
      }
      if (o.image_size > 0) {
        arch.image_size = o.image_size;
        if (const char* p = arch.problem()) {
          std::fprintf(stderr, "vit-bench: error: --image-size %d: %s\n", o.image_size, p);
          return kExitArgs;
        }
      }
      if (o.flops) {
        print_flops_table(o.model, arch);
        return 0;
      }
      model.emplace(arch);
      fill_random(*model, 0);
      weights = "random (seed 0, N(0, 0.02), LayerNorm weights 1)";
    }
  } catch (const vit::argument_error& e) {
    std::fprintf(stderr, "vit-bench: error: %s\n", e.what());
    return kExitArgs;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vit-bench: error: cannot load '%s': %s\n", o.model.c_str(), e.what());
    return kExitRun;
  }
  const double load_ms = seconds_since(load_start) * 1e3;
  const vit::Architecture& arch = model->architecture();
  if (o.flops) {
    print_flops_table(o.model, arch);
    return 0;
  }

  // A random normalised batch: N(0, 1) values, like torch.randn.
  const vit::Index row = vit::Index(arch.in_chans) * arch.image_size * arch.image_size;
  vit::Matrix<float> images(o.batch, row);
  {
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (vit::Index i = 0; i < images.size(); ++i) images.data()[i] = normal(rng);
  }

  vit::ForwardOptions options;
  set_threads(options, o.threads);
  vit::Output<float> out;

  // The weights as the library runs them: packed at the chosen precision
  // (fp32: only where the AVX-512 kernel runs, as load_model does). Below
  // fp32, the float32 logits of the same batch are kept to report the error.
  const vit::Precision precision = vit::parse_precision(o.precision);
  std::optional<vit::Matrix<float>> fp32_logits;
  try {
    if (precision != vit::Precision::fp32) {
      model->unpack_weights();
      model->forward(images, out, options);
      fp32_logits = out.logits;
    }
    if (precision != vit::Precision::fp32 || vit::nn::gemm_packed_uses_avx512())
      model->pack_weights(precision);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vit-bench: error: float32 reference pass failed: %s\n", e.what());
    return kExitRun;
  }
  std::vector<double> samples;
  double wall = 0, own_cores = 0;
  std::optional<double> foreign_cores;
  try {
    for (int i = 0; i < o.warmup; ++i) model->forward(images, out, options);
    samples.reserve(std::size_t(o.runs));
    const std::optional<double> busy0 = machine_busy_seconds();
    const double cpu0 = own_cpu_seconds();
    const auto wall0 = Clock::now();
    for (int i = 0; i < o.runs; ++i) {
      const auto t0 = Clock::now();
      model->forward(images, out, options);
      samples.push_back(seconds_since(t0) * 1e3);
    }
    wall = seconds_since(wall0);
    own_cores = (own_cpu_seconds() - cpu0) / wall;
    const std::optional<double> busy1 = machine_busy_seconds();
    if (busy0 && busy1) foreign_cores = std::max(0.0, (*busy1 - *busy0) / wall - own_cores);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vit-bench: error: forward pass failed: %s\n", e.what());
    return kExitRun;
  }
  if (!out.logits.allFinite() || !out.pre_logits.allFinite()) {
    std::fprintf(stderr, "vit-bench: error: the forward pass produced non-finite outputs\n");
    return kExitRun;
  }

  // Error against float32: max |diff|, that over max |fp32 logit|, and how
  // many images keep their top-1 class.
  double maxabs = 0, rel = 0, agree = 0;
  if (fp32_logits && fp32_logits->size()) {
    maxabs = double((out.logits - *fp32_logits).cwiseAbs().maxCoeff());
    rel = maxabs / std::max(1e-30, double(fp32_logits->cwiseAbs().maxCoeff()));
    for (vit::Index i = 0; i < out.logits.rows(); ++i) {
      vit::Index a = 0, b = 0;
      out.logits.row(i).maxCoeff(&a);
      fp32_logits->row(i).maxCoeff(&b);
      agree += a == b;
    }
    agree /= double(out.logits.rows());
  }

  const Flops flops = matmul_flops(arch);
  const double gflop_image = flops.total / 1e9;
  const double med = median(samples);
  const double lo = *std::min_element(samples.begin(), samples.end());
  const double hi = *std::max_element(samples.begin(), samples.end());
  const double ips = o.batch / med * 1e3;
  const double rss = peak_rss_mb();
  const std::string info = build_info();
  const std::string threading =
      (kLibraryThreads ? "vit::ForwardOptions::threads = " + std::to_string(o.threads)
                       : std::string("single-threaded (no ForwardOptions::threads)")) +
      ", " + kernels(*model);

  if (o.json) {
    nlohmann::json j;
    j["peer"] = "vit";
    j["model"] = o.model;
    j["weights"] = from_file ? "checkpoint" : "random";
    j["batch"] = o.batch;
    j["threads"] = o.threads;
    j["precision"] = o.precision;
    j["image_size"] = arch.image_size;
    j["median_ms"] = round_to(med, 3);
    j["min_ms"] = round_to(lo, 3);
    j["max_ms"] = round_to(hi, 3);
    j["images_per_s"] = round_to(ips, 3);
    j["gflops"] = round_to(ips * gflop_image, 2);
    j["peak_rss_mb"] = round_to(rss, 1);
    j["load_ms"] = round_to(load_ms, 1);
    j["runs"] = o.runs;
    j["warmup"] = o.warmup;
    j["gflop_per_image"] = round_to(gflop_image, 4);
    nlohmann::json parts = nlohmann::json::object();
    for (const auto& part : flops.parts) parts[part.first] = round_to(part.second / 1e9, 4);
    j["gflop_parts"] = parts;
    if (foreign_cores)
      j["foreign_cores"] = round_to(*foreign_cores, 2);
    else
      j["foreign_cores"] = nullptr;
    j["own_cores"] = round_to(own_cores, 2);
    nlohmann::json s = nlohmann::json::array();
    for (double v : samples) s.push_back(round_to(v, 3));
    j["samples_ms"] = s;
    if (fp32_logits && fp32_logits->size()) {
      j["maxabs_vs_fp32"] = maxabs;
      j["relerr_vs_fp32"] = rel;
      j["top1_agreement_vs_fp32"] = agree;
    }
    j["version"] = info;
    j["settings"] = threading;
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }

  std::printf("vit-bench  %s  batch %d  threads %d  %s  runs %d (+%d warm-up)\n", o.model.c_str(),
              o.batch, o.threads, o.precision.c_str(), o.runs, o.warmup);
  std::printf("  weights: %s; %d px, %d tokens; loaded in %.1f ms\n", weights.c_str(),
              arch.image_size, arch.num_tokens(), load_ms);
  std::printf("  median %.2f ms/batch  [min %.2f, max %.2f]\n", med, lo, hi);
  std::printf("  %.2f images/s   %.1f GFLOP/s (%.3f GFLOP/image, matmul only)\n", ips,
              ips * gflop_image, gflop_image);
  std::printf("  peak RSS %.0f MB   own %.2f cores, foreign load ", rss, own_cores);
  if (foreign_cores)
    std::printf("%.2f cores\n", *foreign_cores);
  else
    std::printf("unknown (no /proc/stat)\n");
  if (fp32_logits && fp32_logits->size())
    std::printf(
        "  vs float32 logits: max |diff| %.3g, relative to max |logit| %.3g, top-1 "
        "agreement %.0f%%\n",
        maxabs, rel, 100 * agree);
  std::printf("  %s; %s\n", info.c_str(), threading.c_str());
  return 0;
}
