// gemm_bench: single-thread GFLOP/s of vit::nn::gemm_packed (packed weight,
// AVX-512 micro-kernel) against Eigen on the ViT-B/16 Linear shapes, or with
// --lowp, of the bf16 and int8 kernels (gemm_packed_bf16, gemm_packed_int8)
// next to gemm_packed.
//
//   g++ -O3 -std=c++17 -I include -I /usr/include/eigen3 bench/gemm_bench.cpp -o build/gemm_bench
//   (add -march=native to let Eigen use AVX-512 too; the packed kernels need no flag)
//   build/gemm_bench [--runs N] [--portable] [--shape NAME] [--lowp]
//
// For every shape (M x K x N, M = tokens: 197 for one image, 1576 for 8) the
// timed loop interleaves, in a rotating order, one call each of
//   ours      gemm_packed(a, W, c, no bias, Epilogue::store)
//   eigen     c.noalias() = a * W.transpose()
//   ours+epi  gemm_packed with the layer's bias and epilogue fused
//             (qkv: store, fc1: GELU, fc2 / proj: residual accumulate)
//   today     what vit does now: bias broadcast, nn::gemm_nt (Eigen's kernel),
//             then nn::activate for fc1
// so that load from other processes hits all of them alike. Prints the median
// (and min / max) GFLOP/s over the wall-clock time of each call, the median over
// thread CPU time (insensitive to preemption on a shared machine), the speedup
// of ours over Eigen by wall-clock (and CPU-time) medians, and the largest
// difference between ours and Eigen relative to max |c|.
// --portable forces gemm_packed's portable kernel; --runs sets the timed
// repetitions (default 21, at least 15).
//
// --lowp interleaves instead, in the same way,
//   fp32      gemm_packed(a, W, c, no bias, Epilogue::store)
//   bf16      gemm_packed_bf16, same arguments (W rounded to bf16, a rounded
//             while it is packed, float sums)
//   int8      gemm_packed_int8, same arguments (W int8 per output channel, a
//             quantised per row on the fly, int32 sums)
//   bf16+epi, int8+epi   with the layer's bias and epilogue fused
// and prints GOP/s (2 M K N operations per call, whatever the precision), the
// speedups over fp32 by wall-clock medians, and the largest difference from
// fp32 relative to max |c| (the rounding / quantisation error, not a bug
// check: the unit tests bound it). --portable forces all three portable
// kernels.
//
// --onednn (only in a build with oneDNN: cmake -DVIT_BENCH_ONEDNN=ON, Debian
// libdnnl-dev; run with OMP_NUM_THREADS=1) interleaves, in the same way, our
// fp32, bf16 and int8 kernels with oneDNN's matmul in the same precision
// (weights reordered once into the layout oneDNN picks; int8: s8 x s8 with
// per-output-channel weight scales, one activation scale, float output). bf16
// and int8 are timed twice for oneDNN: the product alone, and with the float
// source converted in the call, as our kernels take it. Prints GOP/s, ours /
// oneDNN time, each one's difference from our fp32 result, and the oneDNN
// implementation that ran.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "vit/nn/activation.hpp"
#include "vit/nn/gemm.hpp"
#include "vit/nn/gemm_avx512.hpp"
#include "vit/nn/gemm_bf16.hpp"
#include "vit/nn/gemm_int8.hpp"

#ifdef VIT_GEMM_BENCH_ONEDNN
#include <cstdint>
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace {

using vit::Index;
using vit::Matrix;
using vit::RowVector;

struct Shape {
  const char* name;
  Index m, k, n;
  vit::nn::Epilogue ep;  // the layer's epilogue
};

Matrix<float> random_matrix(Index rows, Index cols, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Matrix<float> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = dist(gen);
  return m;
}

double thread_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

double load_average() {
  double l = -1.0;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &l) != 1) l = -1.0;
    std::fclose(f);
  }
  return l;
}

struct Variant {
  const char* name;
  std::function<void()> run;
  std::vector<double> wall, cpu;
};

// Times every variant `runs` times, one call of each in turn, in a rotating
// order (after one untimed warm-up call each).
void measure(std::vector<Variant>& variants, int runs) {
  for (Variant& v : variants) v.run();  // warm-up: caches, page faults, scratch growth
  for (int r = 0; r < runs; ++r)
    for (std::size_t j = 0; j < variants.size(); ++j) {
      Variant& v = variants[(j + static_cast<std::size_t>(r)) % variants.size()];
      const double c0 = thread_seconds(), w0 = wall_seconds();
      v.run();
      const double w1 = wall_seconds(), c1 = thread_seconds();
      v.wall.push_back(w1 - w0);
      v.cpu.push_back(c1 - c0);
    }
}

// "median [min .. max] (median by CPU time)" of gflop / seconds.
std::string cell(const Variant& v, double gflop) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%5.1f [%5.1f .. %5.1f] (%5.1f)", gflop / median(v.wall),
                gflop / *std::max_element(v.wall.begin(), v.wall.end()),
                gflop / *std::min_element(v.wall.begin(), v.wall.end()), gflop / median(v.cpu));
  return std::string(buf);
}

// Largest |x - y| relative to max |y|.
double relative_diff(const Matrix<float>& x, const Matrix<float>& y) {
  float diff = 0.0f, scale = 0.0f;
  for (Index i = 0; i < y.size(); ++i) {
    diff = std::max(diff, std::abs(x.data()[i] - y.data()[i]));
    scale = std::max(scale, std::abs(y.data()[i]));
  }
  return double(diff / scale);
}

// The line naming our three kernels as this CPU runs them (label: first word).
void print_our_kernels(const char* label, int runs) {
  std::printf("%s: fp32 %s, bf16 %s, int8 %s; %d timed runs; load average %.2f\n", label,
              vit::nn::gemm_packed_uses_avx512() ? "AVX-512 14x32" : "portable",
              vit::nn::gemm_packed_bf16_uses_avx512bf16() ? "AVX512-BF16 14x32" : "portable",
              vit::nn::gemm_packed_int8_uses_avx512vnni() ? "AVX512-VNNI 14x32" : "portable", runs,
              load_average());
}

// One weight packed for each of our three kernels, and scratch for any of them
// with m rows.
struct OurKernels {
  OurKernels(const Matrix<float>& w, Index m)
      : p32(w),
        p16(w),
        p8(w),
        scratch(std::max({vit::nn::gemm_packed_scratch_size(m, w.cols()),
                          vit::nn::gemm_packed_bf16_scratch_size(m, w.cols()),
                          vit::nn::gemm_packed_int8_scratch_size(m, w.cols())})) {}
  vit::nn::PackedWeight p32;
  vit::nn::PackedWeightBf16 p16;
  vit::nn::PackedWeightInt8 p8;
  mutable std::vector<float> scratch;
};

// --lowp: fp32, bf16 and int8 packed kernels on one shape, one table row.
void run_lowp(const Shape& s, int runs) {
  using vit::nn::Epilogue;
  const Matrix<float> a = random_matrix(s.m, s.k, 1);
  const Matrix<float> w = random_matrix(s.n, s.k, 2);
  const RowVector<float> bias = random_matrix(1, s.n, 3);
  const OurKernels k(w, s.m);
  Matrix<float> c32(s.m, s.n), c16(s.m, s.n), c8(s.m, s.n);
  Matrix<float> e16 = random_matrix(s.m, s.n, 4), e8 = e16;
  float* sp = k.scratch.data();

  std::vector<Variant> variants;
  variants.push_back(
      {"fp32", [&] { vit::nn::gemm_packed(a, k.p32, c32, nullptr, Epilogue::store, sp); }, {}, {}});
  variants.push_back(
      {"bf16",
       [&] { vit::nn::gemm_packed_bf16(a, k.p16, c16, nullptr, Epilogue::store, sp); },
       {},
       {}});
  variants.push_back({"int8",
                      [&] { vit::nn::gemm_packed_int8(a, k.p8, c8, nullptr, Epilogue::store, sp); },
                      {},
                      {}});
  variants.push_back({"bf16+epi",
                      [&] { vit::nn::gemm_packed_bf16(a, k.p16, e16, bias.data(), s.ep, sp); },
                      {},
                      {}});
  variants.push_back(
      {"int8+epi", [&] { vit::nn::gemm_packed_int8(a, k.p8, e8, bias.data(), s.ep, sp); }, {}, {}});
  measure(variants, runs);

  const double gflop = 2.0 * double(s.m) * double(s.n) * double(s.k) * 1e-9;
  char dims[32];
  std::snprintf(dims, sizeof dims, "%ld x %ld x %ld", static_cast<long>(s.m),
                static_cast<long>(s.k), static_cast<long>(s.n));
  std::printf(
      "| %-4s | %-17s | %-30s | %-30s | %-30s | %8.2fx | %8.2fx | %-30s | %-30s | %9.1e | %9.1e "
      "|\n",
      s.name, dims, cell(variants[0], gflop).c_str(), cell(variants[1], gflop).c_str(),
      cell(variants[2], gflop).c_str(), median(variants[0].wall) / median(variants[1].wall),
      median(variants[0].wall) / median(variants[2].wall), cell(variants[3], gflop).c_str(),
      cell(variants[4], gflop).c_str(), relative_diff(c16, c32), relative_diff(c8, c32));
  std::fflush(stdout);
}

#ifdef VIT_GEMM_BENCH_ONEDNN
// One oneDNN matmul c[M, N] = a[M, K] * w[N, K]^T in one precision, its
// weights reordered once; run(true) also converts the float source.
class OneDnnMatmul {
 public:
  enum class Type { f32, bf16, s8 };

  OneDnnMatmul(dnnl::engine& eng, Type type, const Matrix<float>& a, const Matrix<float>& w)
      : eng_(eng) {
    using dnnl::memory;
    const memory::dim m = a.rows(), k = a.cols(), n = w.rows();
    const memory::data_type dt = type == Type::f32    ? memory::data_type::f32
                                 : type == Type::bf16 ? memory::data_type::bf16
                                                      : memory::data_type::s8;
    dnnl::primitive_attr attr;
    // int8: quantised here, symmetric (127 / max |row of w| per output
    // channel, 127 / max |a| for a); c = sum(a8 * w8) / (a_scale * w_scale).
    std::vector<std::int8_t> w8;
    float a_scale = 1.0f;
    if (type == Type::s8) {
      std::vector<float> w_scale(static_cast<std::size_t>(n)), out(w_scale.size());
      w8.resize(std::size_t(n * k));
      for (Index j = 0; j < n; ++j) {
        const float mx = w.row(j).cwiseAbs().maxCoeff();
        w_scale[std::size_t(j)] = mx > 0.0f ? 127.0f / mx : 1.0f;
        for (Index i = 0; i < k; ++i)
          w8[std::size_t(j * k + i)] = std::int8_t(std::lrint(w(j, i) * w_scale[std::size_t(j)]));
      }
      const float amax = a.cwiseAbs().maxCoeff();
      a_scale = amax > 0.0f ? 127.0f / amax : 1.0f;
      for (std::size_t j = 0; j < out.size(); ++j) out[j] = 1.0f / (a_scale * w_scale[j]);
      attr.set_output_scales(1 << 1, out);  // per column of c
    }
    const memory::desc a_md({m, k}, dt, memory::format_tag::ab);
    const memory::desc w_any({k, n}, dt, memory::format_tag::any);
    const memory::desc c_md({m, n}, memory::data_type::f32, memory::format_tag::ab);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, w_any, c_md), attr, eng_);
    impl_ = pd.impl_info_str();
    prim_ = dnnl::matmul(pd);
    // w is [N, K] row-major: as a {K, N} matrix that is layout "ba".
    const memory::data_type w_dt = type == Type::s8 ? dt : memory::data_type::f32;
    void* w_data = type == Type::s8 ? static_cast<void*>(w8.data()) : const_cast<float*>(w.data());
    memory w_user({{k, n}, w_dt, memory::format_tag::ba}, eng_, w_data);
    w_ = memory(pd.weights_desc(), eng_);
    dnnl::reorder(w_user, w_).execute(stream_, w_user, w_);
    // The source: converted from float by a reorder (times 127 / max |a| for int8).
    a_user_ = memory({{m, k}, memory::data_type::f32, memory::format_tag::ab}, eng_,
                     const_cast<float*>(a.data()));
    a_ = memory(a_md, eng_);
    dnnl::primitive_attr aattr;
    if (type == Type::s8) aattr.set_output_scales(0, {a_scale});
    convert_ = dnnl::reorder(dnnl::reorder::primitive_desc(a_user_, a_, aattr));
    convert_.execute(stream_, a_user_, a_);
    c_ = Matrix<float>(m, n);
    c_mem_ = memory(c_md, eng_, c_.data());
    stream_.wait();
  }

  // The product alone (the source already converted), or with the source's
  // conversion from float first, as our kernels take it.
  void run(bool convert) {
    if (convert) convert_.execute(stream_, a_user_, a_);
    prim_.execute(stream_, {{DNNL_ARG_SRC, a_}, {DNNL_ARG_WEIGHTS, w_}, {DNNL_ARG_DST, c_mem_}});
    stream_.wait();
  }

  const Matrix<float>& result() const { return c_; }
  const std::string& implementation() const { return impl_; }

 private:
  dnnl::engine& eng_;
  dnnl::stream stream_{eng_};
  dnnl::matmul prim_;
  dnnl::reorder convert_;
  dnnl::memory a_user_, a_, w_, c_mem_;
  Matrix<float> c_;
  std::string impl_;
};

// --onednn: ours and oneDNN in fp32, bf16 and int8 on one shape, one table row.
void run_onednn(dnnl::engine& eng, const Shape& s, int runs) {
  using vit::nn::Epilogue;
  using T = OneDnnMatmul::Type;
  const Matrix<float> a = random_matrix(s.m, s.k, 1);
  const Matrix<float> w = random_matrix(s.n, s.k, 2);
  const OurKernels k(w, s.m);
  Matrix<float> c32(s.m, s.n), c16(s.m, s.n), c8(s.m, s.n);
  float* sp = k.scratch.data();
  OneDnnMatmul d32(eng, T::f32, a, w), d16(eng, T::bf16, a, w), d8(eng, T::s8, a, w);

  std::vector<Variant> v;
  v.push_back(
      {"fp32", [&] { vit::nn::gemm_packed(a, k.p32, c32, nullptr, Epilogue::store, sp); }, {}, {}});
  v.push_back({"onednn fp32", [&] { d32.run(false); }, {}, {}});
  v.push_back({"bf16",
               [&] { vit::nn::gemm_packed_bf16(a, k.p16, c16, nullptr, Epilogue::store, sp); },
               {},
               {}});
  v.push_back({"onednn bf16", [&] { d16.run(false); }, {}, {}});
  v.push_back({"onednn bf16 + convert", [&] { d16.run(true); }, {}, {}});
  v.push_back({"int8",
               [&] { vit::nn::gemm_packed_int8(a, k.p8, c8, nullptr, Epilogue::store, sp); },
               {},
               {}});
  v.push_back({"onednn int8", [&] { d8.run(false); }, {}, {}});
  v.push_back({"onednn int8 + quantise", [&] { d8.run(true); }, {}, {}});
  measure(v, runs);

  const double gflop = 2.0 * double(s.m) * double(s.n) * double(s.k) * 1e-9;
  char dims[32];
  std::snprintf(dims, sizeof dims, "%ld x %ld x %ld", static_cast<long>(s.m),
                static_cast<long>(s.k), static_cast<long>(s.n));
  auto g = [&](std::size_t i) { return gflop / median(v[i].wall); };
  auto ratio = [&](std::size_t i, std::size_t j) { return median(v[i].wall) / median(v[j].wall); };
  std::printf(
      "| %-4s | %-17s | %6.1f | %6.1f | %5.2f | %6.1f | %6.1f | %6.1f | %5.2f | %6.1f | %6.1f | "
      "%6.1f | %5.2f | %.1e | %.1e / %.1e | %.1e / %.1e |\n",
      s.name, dims, g(0), g(1), ratio(0, 1), g(2), g(3), g(4), ratio(2, 4), g(5), g(6), g(7),
      ratio(5, 7), relative_diff(d32.result(), c32), relative_diff(c16, c32),
      relative_diff(d16.result(), c32), relative_diff(c8, c32), relative_diff(d8.result(), c32));
  std::fflush(stdout);
}

void print_onednn_header(dnnl::engine& eng) {
  const Matrix<float> a = random_matrix(197, 768, 1), w = random_matrix(768, 768, 2);
  const char* names[] = {"fp32", "bf16", "int8"};
  const OneDnnMatmul::Type types[] = {OneDnnMatmul::Type::f32, OneDnnMatmul::Type::bf16,
                                      OneDnnMatmul::Type::s8};
  const dnnl::version_t* ver = dnnl::version();
  std::printf("oneDNN %d.%d.%d; implementations (197 x 768 x 768):", ver->major, ver->minor,
              ver->patch);
  for (int i = 0; i < 3; ++i)
    std::printf(" %s %s%s", names[i], OneDnnMatmul(eng, types[i], a, w).implementation().c_str(),
                i < 2 ? "," : "\n");
}
#endif

}  // namespace

int main(int argc, char** argv) {
  int runs = 21;
  bool portable = false, lowp = false, onednn = false;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--runs") && i + 1 < argc) {
      runs = std::max(15, std::atoi(argv[++i]));
    } else if (!std::strcmp(argv[i], "--portable")) {
      portable = true;
    } else if (!std::strcmp(argv[i], "--shape") && i + 1 < argc) {
      only = argv[++i];
    } else if (!std::strcmp(argv[i], "--lowp")) {
      lowp = true;
    } else if (!std::strcmp(argv[i], "--onednn")) {
      onednn = true;
    } else {
      std::fprintf(stderr, "usage: %s [--runs N] [--portable] [--shape NAME] [--lowp | --onednn]\n",
                   argv[0]);
      return 2;
    }
  }
  vit::nn::gemm_packed_force_portable(portable);
  vit::nn::gemm_packed_bf16_force_portable(portable);
  vit::nn::gemm_packed_int8_force_portable(portable);

  using vit::nn::Epilogue;
  const Shape shapes[] = {
      {"qkv", 197, 768, 2304, Epilogue::store},
      {"fc1", 197, 768, 3072, Epilogue::gelu},
      {"fc2", 197, 3072, 768, Epilogue::accumulate},
      {"proj", 197, 768, 768, Epilogue::accumulate},
      {"qkv", 1576, 768, 2304, Epilogue::store},
      {"fc1", 1576, 768, 3072, Epilogue::gelu},
      {"fc2", 1576, 3072, 768, Epilogue::accumulate},
      {"proj", 1576, 768, 768, Epilogue::accumulate},
  };

  if (onednn) {
#ifdef VIT_GEMM_BENCH_ONEDNN
    const char* omp = std::getenv("OMP_NUM_THREADS");
    if (!omp || std::strcmp(omp, "1") != 0) {
      std::fprintf(stderr,
                   "%s --onednn: set OMP_NUM_THREADS=1 (oneDNN runs on OpenMP; ours on one "
                   "thread)\n",
                   argv[0]);
      return 2;
    }
    dnnl::engine eng(dnnl::engine::kind::cpu, 0);
    print_our_kernels("ours", runs);
    print_onednn_header(eng);
    std::printf(
        "GOP/s (2 M K N per call), 1 thread, medians of wall-clock time. oneDNN: the product "
        "alone; +conv: with the float source converted to bf16 / int8 in the call, as ours does. "
        "ours/oneDNN: time ratio against +conv for bf16 and int8 (below 1: ours faster). diff: max "
        "|c - c_ours_fp32| / max |c_ours_fp32| (oneDNN; ours / oneDNN)\n\n");
    std::printf(
        "| op | M x K x N | fp32 | oneDNN | ours/oneDNN | bf16 | oneDNN | oneDNN +conv | "
        "ours/oneDNN | int8 | oneDNN | oneDNN +conv | ours/oneDNN | diff fp32 | diff bf16 | "
        "diff int8 |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (const Shape& s : shapes)
      if (only.empty() || only == s.name) run_onednn(eng, s, runs);
    std::printf("\nload average at the end %.2f\n", load_average());
    return 0;
#else
    std::fprintf(stderr, "%s --onednn: this build has no oneDNN (cmake -DVIT_BENCH_ONEDNN=ON)\n",
                 argv[0]);
    return 2;
#endif
  }

  if (lowp) {
    print_our_kernels("kernels", runs);
    std::printf(
        "GOP/s (2 M K N per call), 1 thread: median of wall-clock time [min .. max], (median by "
        "thread CPU time)\n\n");
    std::printf(
        "| %-4s | %-17s | %-30s | %-30s | %-30s | %-9s | %-9s | %-30s | %-30s | %-9s | %-9s |\n",
        "op", "M x K x N", "fp32", "bf16", "int8", "bf16/fp32", "int8/fp32", "bf16+epi (fused)",
        "int8+epi (fused)", "bf16 diff", "int8 diff");
    std::printf(
        "|------|-------------------|--------------------------------|"
        "--------------------------------|--------------------------------|-----------|-----------|"
        "--------------------------------|--------------------------------|-----------|-----------|"
        "\n");
    for (const Shape& s : shapes)
      if (only.empty() || only == s.name) run_lowp(s, runs);
    std::printf("\nload average at the end %.2f\n", load_average());
    return 0;
  }

  std::printf("gemm_packed kernel: %s; Eigen SIMD: %s; %d timed runs; load average %.2f\n",
              vit::nn::gemm_packed_uses_avx512() ? "AVX-512 14x32" : "portable",
              Eigen::SimdInstructionSetsInUse(), runs, load_average());
  std::printf(
      "GFLOP/s, 1 thread: median of wall-clock time [min .. max], (median by thread CPU time)\n\n");
  std::printf("| %-4s | %-17s | %-30s | %-30s | %-13s | %-30s | %-30s | %-8s |\n", "op",
              "M x K x N", "ours", "eigen", "speedup (cpu)", "ours+epi (fused)",
              "today (gemm_nt+epi)", "max diff");
  std::printf(
      "|------|-------------------|--------------------------------|"
      "--------------------------------|---------------|"
      "--------------------------------|--------------------------------|----------|\n");

  for (const Shape& s : shapes) {
    if (!only.empty() && only != s.name) continue;
    const Matrix<float> a = random_matrix(s.m, s.k, 1);
    const Matrix<float> w = random_matrix(s.n, s.k, 2);
    const RowVector<float> bias = random_matrix(1, s.n, 3);
    const vit::nn::PackedWeight packed(w);
    std::vector<float> scratch(vit::nn::gemm_packed_scratch_size(s.m, s.k));
    vit::nn::GemmScratch<float> eigen_scratch;
    Matrix<float> c_ours(s.m, s.n), c_eigen(s.m, s.n), c_epi = random_matrix(s.m, s.n, 4),
                                                       c_today = c_epi;

    // Correctness: the plain products must agree.
    vit::nn::gemm_packed(a, packed, c_ours, nullptr, Epilogue::store, scratch.data());
    c_eigen.noalias() = a * w.transpose();
    float diff = 0.0f, scale = 0.0f;
    for (Index i = 0; i < c_ours.size(); ++i) {
      diff = std::max(diff, std::abs(c_ours.data()[i] - c_eigen.data()[i]));
      scale = std::max(scale, std::abs(c_eigen.data()[i]));
    }

    std::vector<Variant> variants;
    variants.push_back(
        {"ours",
         [&] { vit::nn::gemm_packed(a, packed, c_ours, nullptr, Epilogue::store, scratch.data()); },
         {},
         {}});
    variants.push_back({"eigen", [&] { c_eigen.noalias() = a * w.transpose(); }, {}, {}});
    variants.push_back(
        {"ours+epi",
         [&] { vit::nn::gemm_packed(a, packed, c_epi, bias.data(), s.ep, scratch.data()); },
         {},
         {}});
    variants.push_back({"today",
                        [&] {
                          if (s.ep == Epilogue::accumulate)
                            c_today.rowwise() += bias;
                          else
                            c_today.rowwise() = bias;
                          vit::nn::gemm_nt<float>(a, w, c_today, eigen_scratch, 1.0f, true);
                          if (s.ep == Epilogue::gelu)
                            vit::nn::activate<float>(vit::Activation::gelu_erf, c_today);
                        },
                        {},
                        {}});

    measure(variants, runs);

    const double gflop = 2.0 * double(s.m) * double(s.n) * double(s.k) * 1e-9;
    char dims[32];
    std::snprintf(dims, sizeof dims, "%ld x %ld x %ld", static_cast<long>(s.m),
                  static_cast<long>(s.k), static_cast<long>(s.n));
    std::printf("| %-4s | %-17s | %-30s | %-30s | %4.2fx (%4.2fx) | %-30s | %-30s | %8.1e |\n",
                s.name, dims, cell(variants[0], gflop).c_str(), cell(variants[1], gflop).c_str(),
                median(variants[1].wall) / median(variants[0].wall),
                median(variants[1].cpu) / median(variants[0].cpu), cell(variants[2], gflop).c_str(),
                cell(variants[3], gflop).c_str(), double(diff / scale));
    std::fflush(stdout);
  }
  std::printf("\nload average at the end %.2f\n", load_average());
  return 0;
}
