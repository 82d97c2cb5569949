// Unit tests of the low-precision packed-weight GEMMs (vit/nn/gemm_bf16.hpp,
// vit/nn/gemm_int8.hpp): every epilogue, with and without bias, on edge
// shapes, column ranges and strided views, against a double-precision
// reference built from the rounded (bf16) or dequantised (int8) operands, and
// against the float product within the error the rounding allows; the SIMD
// and the portable kernels against each other; the packing and quantisation.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "vit/nn/gemm_bf16.hpp"
#include "vit/nn/gemm_int8.hpp"

using vit::Index;
using vit::Matrix;
using vit::nn::Epilogue;
using vit::nn::PackedWeightBf16;
using vit::nn::PackedWeightInt8;

namespace {

namespace bg = vit::nn::detail::bf16gemm;
namespace ig = vit::nn::detail::i8gemm;

const double kEps = std::numeric_limits<float>::epsilon();
const double kBf16Unit = std::ldexp(1.0, -8);  // unit roundoff of bf16 (8-bit significand)
const Epilogue kEpilogues[] = {Epilogue::store, Epilogue::accumulate, Epilogue::gelu};

Matrix<float> random_matrix(Index rows, Index cols, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Matrix<float> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = dist(gen);
  return m;
}

std::vector<float> random_vector(Index n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& x : v) x = dist(gen);
  return v;
}

// Largest |element| (a plain loop, as in test_gemm_avx512.cpp).
float max_abs(const Matrix<float>& m) {
  float r = 0.0f;
  for (Index i = 0; i < m.size(); ++i) r = std::max(r, std::abs(m.data()[i]));
  return r;
}

double gelu_ref(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

enum class Kind { bf16, int8 };

// Runs the portable kernel of `kind` while alive.
struct ForcePortable {
  Kind kind;
  ForcePortable(Kind k, bool on) : kind(k) { set(on); }
  ~ForcePortable() { set(false); }
  ForcePortable(const ForcePortable&) = delete;
  ForcePortable& operator=(const ForcePortable&) = delete;
  void set(bool on) const {
    if (kind == Kind::bf16)
      vit::nn::gemm_packed_bf16_force_portable(on);
    else
      vit::nn::gemm_packed_int8_force_portable(on);
  }
};

bool uses_simd(Kind kind) {
  return kind == Kind::bf16 ? vit::nn::gemm_packed_bf16_uses_avx512bf16()
                            : vit::nn::gemm_packed_int8_uses_avx512vnni();
}

// ------------------------------------------------------------ references --

// The operands as the kernels see them, in double: bf16-rounded, or
// dequantised (activations per row, as the kernel quantises them).
Matrix<double> bf16_operand(const Matrix<float>& x) {
  Matrix<double> r(x.rows(), x.cols());
  for (Index i = 0; i < x.size(); ++i) r.data()[i] = bg::from_bf16(bg::to_bf16(x.data()[i]));
  return r;
}

Matrix<double> int8_activations(const Matrix<float>& a) {
  Matrix<double> r(a.rows(), a.cols());
  for (Index i = 0; i < a.rows(); ++i) {
    const ig::RowQuant q = ig::row_quant(&a(i, 0), a.cols());
    for (Index kk = 0; kk < a.cols(); ++kk)
      r(i, kk) = double(q.scale) * (double(ig::quantize(a(i, kk), q)) - double(q.zero));
  }
  return r;
}

Matrix<double> int8_weight(const PackedWeightInt8& w) {
  Matrix<double> r(w.rows(), w.cols());
  for (Index j = 0; j < w.rows(); ++j)
    for (Index kk = 0; kk < w.cols(); ++kk) r(j, kk) = double(w.scale(j)) * double(w.value(j, kk));
  return r;
}

// a w^T in double and sum_k |a||w| per element.
struct Product {
  Matrix<double> dot, mag;
  Product(const Matrix<double>& a, const Matrix<double>& w)
      : dot(Matrix<double>::Zero(a.rows(), w.rows())),
        mag(Matrix<double>::Zero(a.rows(), w.rows())) {
    for (Index i = 0; i < a.rows(); ++i)
      for (Index j = 0; j < w.rows(); ++j)
        for (Index kk = 0; kk < a.cols(); ++kk) {
          const double p = a(i, kk) * w(j, kk);
          dot(i, j) += p;
          mag(i, j) += std::abs(p);
        }
  }
};

// Checks columns [n0, n1) of got against dot (+ bias, then the epilogue,
// starting from c0), where tol bounds the error of the product itself. The
// bias add, the accumulation and GELU add their float roundings; GELU its
// slope (< 1.13) and its approximation (<= 2e-7 max(1, |x|)).
void check_result(const Matrix<double>& dot, const Matrix<double>& tol, const float* bias,
                  const Matrix<float>& c0, const Eigen::Ref<const Matrix<float>>& got, Epilogue ep,
                  Index n0, Index n1, const char* what) {
  double worst = 0.0;
  Index wi = -1, wj = -1;
  for (Index i = 0; i < dot.rows(); ++i)
    for (Index j = n0; j < n1; ++j) {
      const double b = bias ? bias[j] : 0.0;
      const double x = dot(i, j) + b;
      double ref = x;
      double t = tol(i, j) + 2.0 * kEps * (std::abs(dot(i, j)) + std::abs(b)) + 1e-30;
      if (ep == Epilogue::accumulate) {
        ref += c0(i, j);
        t += 2.0 * kEps * (std::abs(double(c0(i, j))) + std::abs(x));
      } else if (ep == Epilogue::gelu) {
        ref = gelu_ref(x);
        t = 1.13 * t + 2e-7 * std::max(1.0, std::abs(x)) + kEps * std::abs(ref);
      }
      const double err = std::abs(double(got(i, j)) - ref) / t;
      if (!(err <= worst)) {  // also catches NaN
        worst = err;
        wi = i;
        wj = j;
      }
    }
  INFO(std::string(what) << ": m=" << dot.rows() << " n=[" << n0 << "," << n1 << ") ep=" << int(ep)
                         << " bias=" << (bias != nullptr) << " worst (error / tolerance) " << worst
                         << " at (" << wi << "," << wj << ")");
  CHECK(worst <= 1.0);
}

// Everything one test shape needs: operands, both references and their
// tolerances, the packed weights.
struct Case {
  Index m, k, n;
  Matrix<float> a, w, c0;
  std::vector<float> bias;
  PackedWeightBf16 wb;
  PackedWeightInt8 wi;

  Case(Index m_, Index k_, Index n_, unsigned seed)
      : m(m_),
        k(k_),
        n(n_),
        a(random_matrix(m_, k_, seed)),
        w(random_matrix(n_, k_, seed + 1)),
        c0(random_matrix(m_, n_, seed + 2)),
        bias(random_vector(n_, seed + 3)),
        wb(w),
        wi(w) {}

  // The exact product of the operands the kernel sees, and its tolerance:
  // bf16, k float roundings of the running sum (two per pair), bounded by
  // (k + 2) eps sum |a'||w'|; int8, an exact integer sum, then float(sum) and
  // two products (3 eps relative), the double reference's own rounding aside.
  void exact(Kind kind, Matrix<double>& dot, Matrix<double>& tol) const {
    if (kind == Kind::bf16) {
      const Product p(bf16_operand(a), bf16_operand(w));
      dot = p.dot;
      tol = double(k + 2) * kEps * p.mag;
    } else {
      const Product p(int8_activations(a), int8_weight(wi));
      dot = p.dot;
      tol = 3.0 * kEps * p.dot.cwiseAbs() + 1e-12 * p.mag;
    }
  }

  // The float product a w^T and a bound on how far the kernel may be from it.
  // bf16: each operand within u = 2^-8 relative, so each product within
  // (2u + u^2) |a||w|, then the summation as above. int8: |a - a'| <= s_i / 2
  // and |w - w'| <= s_j / 2 (the clamps and float rounding of the scale and
  // of x / s add < 2e-4 of a step), so |a w - a' w'| <= s_i |w| / 2 + s_j |a|
  // / 2 + s_i s_j / 4 per term.
  void versus_float(Kind kind, Matrix<double>& dot, Matrix<double>& tol) const {
    Matrix<double> ad = a.cast<double>(), wd = w.cast<double>();
    const Product p(ad, wd);
    dot = p.dot;
    if (kind == Kind::bf16) {
      tol = (2.0 * kBf16Unit + kBf16Unit * kBf16Unit +
             double(k + 2) * kEps * (1.0 + 3.0 * kBf16Unit)) *
            p.mag;
      return;
    }
    tol = Matrix<double>::Zero(m, n);
    for (Index i = 0; i < m; ++i) {
      double lo = 0.0, hi = 0.0, sum_a = 0.0;
      for (Index kk = 0; kk < k; ++kk) {
        lo = std::min(lo, ad(i, kk));
        hi = std::max(hi, ad(i, kk));
        sum_a += std::abs(ad(i, kk));
      }
      const double sa = (hi - lo) / 255.0;
      for (Index j = 0; j < n; ++j) {
        double sum_w = 0.0, wmax = 0.0;
        for (Index kk = 0; kk < k; ++kk) {
          sum_w += std::abs(wd(j, kk));
          wmax = std::max(wmax, std::abs(wd(j, kk)));
        }
        const double sw = wmax / 127.0;
        tol(i, j) = 1.001 * (0.5 * sa * sum_w + 0.5 * sw * sum_a + 0.25 * sa * sw * double(k)) +
                    double(k + 2) * kEps * p.mag(i, j) * 1.01;
      }
    }
  }

  std::size_t scratch_size(Kind kind) const {
    return kind == Kind::bf16 ? vit::nn::gemm_packed_bf16_scratch_size(m, k)
                              : vit::nn::gemm_packed_int8_scratch_size(m, k);
  }

  void run(Kind kind, const Eigen::Ref<const Matrix<float>>& x, Eigen::Ref<Matrix<float>> c,
           const float* b, Epilogue ep, float* scratch, Index n0, Index n1) const {
    if (kind == Kind::bf16)
      vit::nn::gemm_packed_bf16(x, wb, c, b, ep, scratch, n0, n1);
    else
      vit::nn::gemm_packed_int8(x, wi, c, b, ep, scratch, n0, n1);
  }
};

// Every epilogue, with and without bias, on both kernels, against both
// references.
void check_all_epilogues(Kind kind, Index m, Index k, Index n, unsigned seed, const char* what) {
  const Case cs(m, k, n, seed);
  Matrix<double> dot, tol, fdot, ftol;
  cs.exact(kind, dot, tol);
  cs.versus_float(kind, fdot, ftol);
  // Scratch of exactly the documented size, so that ASan sees any overrun.
  std::vector<float> scratch(cs.scratch_size(kind));
  for (bool portable : {false, true}) {
    ForcePortable force(kind, portable);
    for (Epilogue ep : kEpilogues)
      for (bool with_bias : {false, true}) {
        Matrix<float> c = cs.c0;
        const float* b = with_bias ? cs.bias.data() : nullptr;
        cs.run(kind, cs.a, c, b, ep, scratch.data(), 0, n);
        INFO("kind=" << int(kind) << " simd=" << uses_simd(kind) << " k=" << k);
        check_result(dot, tol, b, cs.c0, c, ep, 0, n, what);
        check_result(fdot, ftol, b, cs.c0, c, ep, 0, n, "versus float");
      }
  }
}

const Kind kKinds[] = {Kind::bf16, Kind::int8};

}  // namespace

// ------------------------------------------------------------------ shapes --

TEST_CASE("low-precision GEMMs match their references on edge shapes, both kernels") {
  // Around the tile sizes (14 rows, 32 columns) and the depth groups (2, 4).
  const Index sizes[] = {1, 2, 3, 5, 13, 14, 15, 33};
  for (Kind kind : kKinds) {
    unsigned seed = 1;
    for (Index m : sizes)
      for (Index k : sizes)
        for (Index n : {Index(1), Index(3), Index(31), Index(32), Index(33)})
          check_all_epilogues(kind, m, k, n, seed += 4, "edge grid");
  }
}

TEST_CASE("low-precision GEMMs on ViT-sized and multi-block shapes, both kernels") {
  struct Shape {
    Index m, k, n;
  };
  // 197 rows, 768-wide rows; bf16 depth blocks (1600 = 2 x 800, odd 1537);
  // several row blocks (600 rows: bf16 3 x 210, int8 2 x 308; 200 rows at
  // k = 3000: int8 2 x 112), a single column, a single row.
  const Shape shapes[] = {{197, 768, 40}, {33, 1600, 40}, {15, 1537, 33}, {600, 20, 45},
                          {200, 3000, 5}, {31, 2304, 1},  {1, 768, 100}};
  for (Kind kind : kKinds) {
    unsigned seed = 1000;
    for (const Shape& s : shapes) check_all_epilogues(kind, s.m, s.k, s.n, seed += 4, "large");
  }
}

TEST_CASE("bf16 and int8 errors against the float product are of the expected size") {
  const Case cs(150, 512, 96, 77);
  std::vector<float> scratch(std::max(cs.scratch_size(Kind::bf16), cs.scratch_size(Kind::int8)));
  const Product p(cs.a.cast<double>(), cs.w.cast<double>());
  for (Kind kind : kKinds) {
    Matrix<float> c(cs.m, cs.n);
    cs.run(kind, cs.a, c, nullptr, Epilogue::store, scratch.data(), 0, cs.n);
    // RMS of the error per element, over the RMS of the float product and
    // over sqrt(sum_k (a w)^2) (the scale a random rounding error grows with).
    double err2 = 0.0, dot2 = 0.0, per_term = 0.0;
    for (Index i = 0; i < cs.m; ++i)
      for (Index j = 0; j < cs.n; ++j) {
        double sq = 0.0;
        for (Index kk = 0; kk < cs.k; ++kk) sq += std::pow(double(cs.a(i, kk)) * cs.w(j, kk), 2);
        const double e = double(c(i, j)) - p.dot(i, j);
        err2 += e * e;
        dot2 += p.dot(i, j) * p.dot(i, j);
        per_term += e * e / sq;
      }
    const double relative = std::sqrt(err2 / dot2);
    const double scaled = std::sqrt(per_term / double(cs.m * cs.n));
    MESSAGE((kind == Kind::bf16 ? "bf16" : "int8")
            << ": RMS error / RMS of the product " << relative
            << ", RMS of error / sqrt(sum (a w)^2) " << scaled);
    if (kind == Kind::bf16) {
      // Round-to-nearest of both operands: relative errors uniform within
      // +-2^-8 / mantissa, RMS about 2^-8 sqrt(E[1 / mantissa^2] / 3) =
      // 0.0017 each on normal data, so about 0.0024 per product. Without
      // rounding it would be ~1e-7; truncating would give about twice as much.
      CHECK(scaled > 0.0015);
      CHECK(scaled < 0.0035);
    } else {
      // Steps of range / 255 and max / 127 on N(0, 1) data over 512 values:
      // uniform errors of RMS step / sqrt(12), about 1% of the product.
      CHECK(relative > 0.002);
      CHECK(relative < 0.02);
    }
  }
}

// ----------------------------------------------------------- SIMD = portable --

TEST_CASE("the SIMD and the portable kernels agree") {
  const Case cs(197, 771, 70, 7);
  for (Kind kind : kKinds) {
    {
      ForcePortable force(kind, false);
      if (!uses_simd(kind)) {
        MESSAGE("no " << (kind == Kind::bf16 ? "AVX512-BF16" : "AVX512-VNNI")
                      << " on this CPU: only the portable kernel runs");
        continue;
      }
    }
    std::vector<float> scratch(cs.scratch_size(kind));
    for (Epilogue ep : kEpilogues)
      for (bool with_bias : {false, true}) {
        const float* b = with_bias ? cs.bias.data() : nullptr;
        Matrix<float> fast = cs.c0, slow = cs.c0;
        cs.run(kind, cs.a, fast, b, ep, scratch.data(), 0, cs.n);
        {
          ForcePortable force(kind, true);
          CHECK_FALSE(uses_simd(kind));
          cs.run(kind, cs.a, slow, b, ep, scratch.data(), 0, cs.n);
        }
        CAPTURE(int(kind));
        CAPTURE(int(ep));
        CAPTURE(with_bias);
        const bool exact =
            kind == Kind::bf16 ? ep != Epilogue::gelu : ep == Epilogue::store && !with_bias;
        if (exact) {
          // bf16: the same bf16 products summed in the same order, each sum
          // rounded to float, then the same bias add. int8: the same
          // integers, converted and scaled by the same float operations.
          CHECK(fast == slow);
        } else {
          // int8 with a bias or accumulation, where a compiler may contract
          // the scaling and the add into an FMA, and GELU (vectorised erf
          // against std::erf): float rounding.
          double worst = 0.0;
          for (Index i = 0; i < fast.size(); ++i) {
            const double x = fast.data()[i], y = slow.data()[i];
            worst = std::max(worst, std::abs(x - y) / std::max(1.0, std::abs(y)));
          }
          CHECK(worst <= 1e-6);
        }
      }
  }
}

TEST_CASE("a row's low-precision result does not depend on the other rows of the call") {
  // 45 rows: row blocks of 14-row micro-tiles and a shorter last tile; one row
  // alone runs a 1-row tile. The bits must be the same (they were not for
  // int8 with a bias while the compiler chose where to fuse multiply and add).
  const Case cs(45, 100, 70, 81);
  for (Kind kind : kKinds) {
    std::vector<float> scratch(cs.scratch_size(kind));  // enough for one row too
    for (bool portable : {false, true}) {
      ForcePortable force(kind, portable);
      for (Epilogue ep : kEpilogues)
        for (bool with_bias : {false, true}) {
          const float* b = with_bias ? cs.bias.data() : nullptr;
          Matrix<float> all = cs.c0;
          cs.run(kind, cs.a, all, b, ep, scratch.data(), 0, cs.n);
          Index differ = 0;
          for (Index i = 0; i < cs.m; ++i) {
            Matrix<float> one = cs.c0.row(i);
            cs.run(kind, cs.a.row(i), one, b, ep, scratch.data(), 0, cs.n);
            differ += (one.row(0).array() != all.row(i).array()).count();
          }
          CAPTURE(int(kind));
          CAPTURE(portable);
          CAPTURE(int(ep));
          CAPTURE(with_bias);
          CHECK(differ == 0);
        }
    }
  }
}

TEST_CASE("the SIMD packing of activations equals the scalar one, bit for bit") {
  Matrix<float> a = random_matrix(41, 203, 11);
  // Special values: ties, denormals, signed zero, NaN, inf, the largest floats.
  const float special[] = {1.00390625f,  // 1 + 2^-8: a tie, to even (1)
                           1.01171875f,  // 1 + 3 2^-8: a tie, to even (1 + 2^-6)
                           -2.5e-39f,    // denormal
                           -0.0f,
                           std::numeric_limits<float>::quiet_NaN(),
                           std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::max(),
                           -std::numeric_limits<float>::max(),
                           1e-45f};
  for (std::size_t s = 0; s < std::size(special); ++s) a(3, Index(5 + 7 * s)) = special[s];
  a.row(9).setZero();
  a.row(10).setConstant(-3.0f);
  a(11, 200) = std::numeric_limits<float>::infinity();
  a(12, 0) = std::numeric_limits<float>::quiet_NaN();
  a.row(13) *= 1e-40f;  // a range near the smallest floats
  // In the second half of a 32-float step of the vectorised range pass.
  a(14, 20) = -std::numeric_limits<float>::infinity();
  const Index m = a.rows(), k = a.cols();
#if VIT_PGEMM_X86
  if (bg::cpu_has_avx512bf16()) {
    for (Index kc : {k, Index(64), Index(33)}) {
      const std::size_t words = static_cast<std::size_t>(m * ((kc + 1) / 2));
      std::vector<unsigned char> fast(4 * words, 0xAB), slow(4 * words, 0xCD);
      bg::pack_a_avx512(a.data(), k, m, kc, bg::kMr, fast.data());
      bg::pack_a(a.data(), k, m, kc, bg::kMr, slow.data());
      CAPTURE(kc);
      CHECK(fast == slow);
    }
  } else {
    MESSAGE("no AVX512-BF16: bf16 packing not compared");
  }
  if (ig::cpu_has_avx512vnni()) {
    // Row 3's specials (NaN, inf) would make it a NaN row: give it a finite
    // range; rows 11, 12 and 14 stay non-finite, row 13 tiny.
    a.row(3).setConstant(0.25f);
    a(3, 17) = -1.75f;
    for (Index kk : {k, Index(64), Index(67), Index(1)}) {
      const Index kpad = (kk + 3) / 4 * 4;
      std::vector<unsigned char> fast(static_cast<std::size_t>(m * kpad), 0xAB),
          slow(static_cast<std::size_t>(m * kpad), 0xCD);
      std::vector<float> fs(static_cast<std::size_t>(m)), fz(fs), ss(fs), sz(fs);
      ig::quantize_a_avx512(a.data(), k, m, kk, ig::kMr, fast.data(), fs.data(), fz.data());
      ig::quantize_a(a.data(), k, m, kk, ig::kMr, slow.data(), ss.data(), sz.data());
      CAPTURE(kk);
      CHECK(fast == slow);
      CHECK(fz == sz);
      for (Index i = 0; i < m; ++i) {
        CAPTURE(i);
        const float x = fs[std::size_t(i)], y = ss[std::size_t(i)];
        CHECK(((std::isnan(x) && std::isnan(y)) || x == y));
      }
    }
  } else {
    MESSAGE("no AVX512-VNNI: int8 quantisation not compared");
  }
#else
  (void)m;
  (void)k;
  MESSAGE("not x86-64: no SIMD packing to compare");
#endif
}

// ---------------------------------------------------- ranges, views, edges --

TEST_CASE("low-precision column ranges write only their columns") {
  const Case cs(45, 70, 100, 21);
  const std::pair<Index, Index> ranges[] = {{0, 100}, {0, 32},   {32, 64},  {5, 37},  {37, 38},
                                            {31, 33}, {63, 100}, {99, 100}, {50, 50}, {1, 99}};
  for (Kind kind : kKinds) {
    Matrix<double> dot, tol;
    cs.exact(kind, dot, tol);
    std::vector<float> scratch(cs.scratch_size(kind));
    for (bool portable : {false, true}) {
      ForcePortable force(kind, portable);
      for (Epilogue ep : kEpilogues)
        for (const auto& [n0, n1] : ranges) {
          Matrix<float> c = cs.c0;
          cs.run(kind, cs.a, c, cs.bias.data(), ep, scratch.data(), n0, n1);
          check_result(dot, tol, cs.bias.data(), cs.c0, c, ep, n0, n1, "range");
          CHECK(c.leftCols(n0) == cs.c0.leftCols(n0));
          CHECK(c.rightCols(cs.n - n1) == cs.c0.rightCols(cs.n - n1));
        }
      // Three ranges together give the whole product, bit for bit.
      Matrix<float> whole = cs.c0, split = cs.c0;
      cs.run(kind, cs.a, whole, cs.bias.data(), Epilogue::gelu, scratch.data(), 0, cs.n);
      for (const auto& [n0, n1] : {std::pair<Index, Index>{0, 40}, {40, 64}, {64, 100}})
        cs.run(kind, cs.a, split, cs.bias.data(), Epilogue::gelu, scratch.data(), n0, n1);
      CHECK(whole == split);
    }
  }
}

TEST_CASE("low-precision GEMMs on strided views leave the rest of the storage alone") {
  const Index m = 33, k = 50, n = 47;
  const Matrix<float> a_store = random_matrix(m + 3, k + 9, 31);
  const Matrix<float> w_store = random_matrix(n + 2, k + 5, 32);
  const std::vector<float> bias = random_vector(n, 33);
  const Matrix<float> a = a_store.block(2, 4, m, k), w = w_store.block(1, 3, n, k);
  // Packed from a strided view.
  const PackedWeightBf16 wb(w_store.block(1, 3, n, k));
  const PackedWeightInt8 wi(w_store.block(1, 3, n, k));
  CHECK(wb.unpack() == PackedWeightBf16(w).unpack());
  CHECK(wi.unpack() == PackedWeightInt8(w).unpack());
  for (Kind kind : kKinds) {
    Matrix<double> dot, tol;
    if (kind == Kind::bf16) {
      const Product p(bf16_operand(a), bf16_operand(w));
      dot = p.dot;
      tol = double(k + 2) * kEps * p.mag;
    } else {
      const Product p(int8_activations(a), int8_weight(wi));
      dot = p.dot;
      tol = 3.0 * kEps * p.dot.cwiseAbs() + 1e-12 * p.mag;
    }
    std::vector<float> scratch(kind == Kind::bf16 ? vit::nn::gemm_packed_bf16_scratch_size(m, k)
                                                  : vit::nn::gemm_packed_int8_scratch_size(m, k));
    for (bool portable : {false, true}) {
      ForcePortable force(kind, portable);
      for (Epilogue ep : kEpilogues) {
        const Matrix<float> c_store0 = random_matrix(m + 4, n + 11, 34);
        Matrix<float> c_store = c_store0;
        Eigen::Ref<const Matrix<float>> a_view = a_store.block(2, 4, m, k);
        Eigen::Ref<Matrix<float>> c_view = c_store.block(3, 6, m, n);
        REQUIRE(a_view.outerStride() == k + 9);
        REQUIRE(c_view.outerStride() == n + 11);
        if (kind == Kind::bf16)
          vit::nn::gemm_packed_bf16(a_view, wb, c_view, bias.data(), ep, scratch.data());
        else
          vit::nn::gemm_packed_int8(a_view, wi, c_view, bias.data(), ep, scratch.data());
        const Matrix<float> c0 = c_store0.block(3, 6, m, n);
        check_result(dot, tol, bias.data(), c0, c_store.block(3, 6, m, n), ep, 0, n, "strided");
        Matrix<float> outside = c_store - c_store0;
        outside.block(3, 6, m, n).setZero();
        CHECK(max_abs(outside) == 0.0f);
      }
    }
  }
}

TEST_CASE("low-precision GEMMs with an empty depth, no rows or no columns") {
  const std::vector<float> bias = {1.0f, -2.0f, 0.5f};
  const Matrix<float> a(4, 0);
  const PackedWeightBf16 db(Matrix<float>(3, 0));
  const PackedWeightInt8 di(Matrix<float>(3, 0));
  std::vector<float> scratch(1);
  for (Kind kind : kKinds) {
    auto run = [&](Matrix<float>& c, const float* b, Epilogue ep, float* s) {
      if (kind == Kind::bf16)
        vit::nn::gemm_packed_bf16(a, db, c, b, ep, s);
      else
        vit::nn::gemm_packed_int8(a, di, c, b, ep, s);
    };
    Matrix<float> c = Matrix<float>::Constant(4, 3, 10.0f);
    run(c, bias.data(), Epilogue::accumulate, scratch.data());
    CHECK(c(2, 1) == 8.0f);
    run(c, bias.data(), Epilogue::store, scratch.data());
    CHECK(c(3, 2) == 0.5f);
    run(c, nullptr, Epilogue::store, nullptr);
    CHECK(max_abs(c) == 0.0f);
    run(c, bias.data(), Epilogue::gelu, scratch.data());
    CHECK(c(0, 0) == doctest::Approx(gelu_ref(1.0)).epsilon(1e-6));
  }
  const Matrix<float> w = random_matrix(5, 6, 41);
  Matrix<float> none(0, 5), c2(3, 0);
  vit::nn::gemm_packed_bf16(Matrix<float>(0, 6), PackedWeightBf16(w), none, nullptr,
                            Epilogue::store, nullptr);
  vit::nn::gemm_packed_int8(Matrix<float>(0, 6), PackedWeightInt8(w), none, nullptr,
                            Epilogue::store, nullptr);
  vit::nn::gemm_packed_bf16(random_matrix(3, 6, 42), PackedWeightBf16(Matrix<float>(0, 6)), c2,
                            nullptr, Epilogue::gelu, nullptr);
  vit::nn::gemm_packed_int8(random_matrix(3, 6, 42), PackedWeightInt8(Matrix<float>(0, 6)), c2,
                            nullptr, Epilogue::gelu, nullptr);
}

TEST_CASE("low-precision GEMMs on zero, constant and non-finite rows") {
  const Index m = 20, k = 40, n = 40;
  Matrix<float> a = random_matrix(m, k, 51);
  Matrix<float> w = random_matrix(n, k, 52);
  w.row(7).setZero();  // int8: scale 0
  std::vector<float> bias = random_vector(n, 53);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  a.row(2).setZero();
  a.row(4).setConstant(2.5f);   // int8: zero point 0, every value 255
  a.row(5).setConstant(-0.5f);  // int8: zero point 255, every value 0
  a(3, 7) = nan;
  a(15, 2) = inf;
  const PackedWeightBf16 wb(w);
  const PackedWeightInt8 wi(w);
  CHECK(wi.scale(7) == 0.0f);
  for (Kind kind : kKinds) {
    std::vector<float> scratch(kind == Kind::bf16 ? vit::nn::gemm_packed_bf16_scratch_size(m, k)
                                                  : vit::nn::gemm_packed_int8_scratch_size(m, k));
    for (bool portable : {false, true}) {
      ForcePortable force(kind, portable);
      Matrix<float> c = Matrix<float>::Constant(m, n, nan);  // garbage must not leak in
      if (kind == Kind::bf16)
        vit::nn::gemm_packed_bf16(a, wb, c, bias.data(), Epilogue::store, scratch.data());
      else
        vit::nn::gemm_packed_int8(a, wi, c, bias.data(), Epilogue::store, scratch.data());
      for (Index i = 0; i < m; ++i)
        for (Index j = 0; j < n; ++j) {
          CAPTURE(int(kind));
          CAPTURE(i);
          CAPTURE(j);
          const float v = c(i, j);
          if (i == 3 || (i == 15 && kind == Kind::int8)) {
            CHECK(std::isnan(v));  // int8: the whole row of an inf
          } else if (i == 15) {
            CHECK(!std::isfinite(v));  // bf16: inf w (either sign) or NaN
          } else if (i == 2 || j == 7) {
            CHECK(v == bias[std::size_t(j)]);  // an exactly zero product
          } else {
            CHECK(std::isfinite(v));
          }
        }
      // Constant rows are represented exactly by int8 (2.5 = 255 s, -0.5 =
      // -255 s) and to 2^-9 by bf16 (both are bf16 numbers): only w rounds.
      for (Index r : {Index(4), Index(5)})
        for (Index j = 0; j < n; ++j) {
          double ref = bias[std::size_t(j)], mag = std::abs(ref);
          for (Index kk = 0; kk < k; ++kk) {
            const double wq = kind == Kind::bf16 ? double(wb(j, kk)) : double(wi(j, kk));
            ref += double(a(r, kk)) * wq;
            mag += std::abs(double(a(r, kk)) * wq);
          }
          CHECK(std::abs(c(r, j) - ref) <= double(k + 2) * kEps * mag);
        }
    }
  }
}

// ------------------------------------------------------- packing, rounding --

TEST_CASE("bf16 rounding is to nearest even, with denormals flushed and NaN kept") {
  auto bits = [](float x) { return bg::to_bf16(x); };
  CHECK(bits(1.0f) == 0x3F80);
  CHECK(bits(1.00390625f) == 0x3F80);                        // 1 + 2^-8, tie: to even
  CHECK(bits(1.01171875f) == 0x3F82);                        // 1 + 3 2^-8, tie: to even
  CHECK(bits(std::nextafter(1.00390625f, 2.0f)) == 0x3F81);  // above the tie
  CHECK(bits(-1.00390625f) == 0xBF80);
  CHECK(bits(0.0f) == 0x0000);
  CHECK(bits(-0.0f) == 0x8000);
  CHECK(bits(-2.5e-39f) == 0x8000);  // denormal: signed zero
  CHECK(bits(std::numeric_limits<float>::min()) == 0x0080);
  CHECK(bits(std::numeric_limits<float>::infinity()) == 0x7F80);
  CHECK(bits(std::numeric_limits<float>::max()) == 0x7F80);  // rounds up to inf
  CHECK(bits(3.0e38f) == 0x7F62);
  const std::uint16_t nan = bits(std::numeric_limits<float>::quiet_NaN());
  CHECK((nan & 0x7F80) == 0x7F80);
  CHECK((nan & 0x007F) != 0);
  CHECK(std::isnan(bg::from_bf16(nan)));
  CHECK(bg::from_bf16(0x3F81) == 1.0078125f);
  // Every bf16 number converts back to itself.
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const float x = bg::from_bf16(static_cast<std::uint16_t>(h));
    if (std::isnan(x) || (std::fpclassify(x) == FP_SUBNORMAL)) continue;
    if (bg::to_bf16(x) != h) {
      CHECK(bg::to_bf16(x) == h);
      break;
    }
  }
}

TEST_CASE("PackedWeightBf16 stores bf16 pairs in panels and gives them back") {
  const Matrix<float> w = random_matrix(45, 19, 61);
  PackedWeightBf16 p(w);
  CHECK(p.rows() == 45);
  CHECK(p.cols() == 19);
  CHECK(p.padded_rows() == 64);
  CHECK(p.padded_cols() == 20);
  CHECK(p.size() == std::size_t(64 * 20));
  CHECK(p.bytes() == std::size_t(64 * 20 * 2));
  CHECK(reinterpret_cast<std::uintptr_t>(p.data()) % 64 == 0);
  const Matrix<float> back = p.unpack();
  REQUIRE(back.rows() == 45);
  REQUIRE(back.cols() == 19);
  for (Index i = 0; i < w.size(); ++i) {
    CHECK(back.data()[i] == bg::from_bf16(bg::to_bf16(w.data()[i])));
    CHECK(std::abs(back.data()[i] - w.data()[i]) <= kBf16Unit * std::abs(w.data()[i]));
  }
  // Layout: panel 1 (rows 32..63), depth pair 5 (depths 10, 11), row 39.
  CHECK(p.data()[32 * 20 + 5 * 64 + 2 * 7] == bg::to_bf16(w(39, 10)));
  CHECK(p.data()[32 * 20 + 5 * 64 + 2 * 7 + 1] == bg::to_bf16(w(39, 11)));
  CHECK(p.data()[32 * 20 + 9 * 64 + 2 * 7 + 1] == 0);  // depth 19: padding
  CHECK(p.data()[32 * 20 + 5 * 64 + 2 * 20] == 0);     // row 52: padding

  PackedWeightBf16 copy(p);
  CHECK(copy.unpack() == back);
  CHECK(copy.data() != p.data());
  PackedWeightBf16 moved(std::move(copy));
  CHECK(moved.unpack() == back);
  CHECK(copy.empty());  // NOLINT(bugprone-use-after-move): moved-from is empty
  const std::uint16_t* storage = moved.data();
  moved.pack(random_matrix(40, 19, 62));  // smaller: the allocation is reused
  CHECK(moved.data() == storage);
  moved = p;
  CHECK(moved.unpack() == back);
  CHECK(PackedWeightBf16().empty());
  CHECK(PackedWeightBf16().unpack().size() == 0);
}

TEST_CASE("PackedWeightInt8 quantises per output row and keeps the column sums") {
  Matrix<float> w = random_matrix(45, 19, 71);
  w.row(3).setZero();
  w.row(4) *= 1e-3f;
  PackedWeightInt8 p(w);
  CHECK(p.rows() == 45);
  CHECK(p.cols() == 19);
  CHECK(p.padded_rows() == 64);
  CHECK(p.padded_cols() == 20);
  CHECK(p.size() == std::size_t(64 * 20));
  CHECK(p.bytes() == std::size_t(64 * 20 + 64 * 8));
  CHECK(reinterpret_cast<std::uintptr_t>(p.data()) % 64 == 0);
  const Matrix<float> back = p.unpack();
  for (Index j = 0; j < w.rows(); ++j) {
    CAPTURE(j);
    float wmax = 0.0f;
    std::int32_t sum = 0;
    int top = 0;
    for (Index kk = 0; kk < w.cols(); ++kk) {
      wmax = std::max(wmax, std::abs(w(j, kk)));
      const int q = p.value(j, kk);
      CHECK(q >= -127);
      CHECK(q <= 127);
      top = std::max(top, std::abs(q));
      sum += q;
      CHECK(back(j, kk) == p.scale(j) * float(q));
      CHECK(std::abs(double(w(j, kk)) - double(back(j, kk))) <= 0.5001 * double(p.scale(j)));
    }
    CHECK(p.scale(j) == wmax / 127.0f);
    CHECK(p.column_sum(j) == sum);
    CHECK(top == (j == 3 ? 0 : 127));  // the largest |w| maps to +-127
  }
  for (Index j = 45; j < 64; ++j) {  // padding
    CHECK(p.scales()[j] == 0.0f);
    CHECK(p.column_sums()[j] == 0);
  }
  // Layout: panel 1 (rows 32..63), depth group 2 (depths 8..11), row 39.
  for (int u = 0; u < 4; ++u) CHECK(p.data()[32 * 20 + 2 * 128 + 4 * 7 + u] == p.value(39, 8 + u));
  CHECK(p.data()[32 * 20 + 4 * 128 + 4 * 7 + 3] == 0);  // depth 19: padding

  PackedWeightInt8 copy(p);
  CHECK(copy.unpack() == back);
  PackedWeightInt8 moved(std::move(copy));
  CHECK(moved.unpack() == back);
  CHECK(copy.empty());  // NOLINT(bugprone-use-after-move): moved-from is empty
  moved = p;
  CHECK(moved.unpack() == back);
  CHECK(moved.column_sum(10) == p.column_sum(10));

  Matrix<float> bad = w;
  bad(20, 5) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(PackedWeightInt8{bad}, vit::argument_error);
  CHECK_THROWS_AS(moved.pack(bad), vit::argument_error);
  CHECK(moved.empty());  // a failed pack leaves an empty weight
}

TEST_CASE("int8 activation quantisation: range, zero point, error within half a step") {
  std::mt19937 gen(81);
  std::uniform_real_distribution<float> dist(-3.0f, 5.0f);
  for (int trial = 0; trial < 200; ++trial) {
    const Index k = 1 + trial % 37;
    std::vector<float> x(static_cast<std::size_t>(k));
    for (float& v : x) v = dist(gen) * (trial % 3 == 0 ? 1e-3f : 1.0f);
    if (trial % 5 == 0)
      for (float& v : x) v = std::abs(v);  // all >= 0: zero point 0
    const ig::RowQuant q = ig::row_quant(x.data(), k);
    const float lo = std::min(0.0f, *std::min_element(x.begin(), x.end()));
    const float hi = std::max(0.0f, *std::max_element(x.begin(), x.end()));
    CAPTURE(trial);
    CHECK(q.scale == doctest::Approx((hi - lo) / 255.0f).epsilon(1e-6));
    CHECK(q.zero >= 0.0f);
    CHECK(q.zero <= 255.0f);
    CHECK(q.zero == std::nearbyint(q.zero));
    if (trial % 5 == 0) CHECK(q.zero == 0.0f);
    for (float v : x) {
      const double deq = double(q.scale) * (double(ig::quantize(v, q)) - double(q.zero));
      CHECK(std::abs(deq - double(v)) <= 0.5001 * double(q.scale));
    }
    // Zero is represented exactly.
    CHECK(double(ig::quantize(0.0f, q)) == double(q.zero));
  }
  const float zeros[3] = {0.0f, 0.0f, -0.0f};
  CHECK(ig::row_quant(zeros, 3).scale == 0.0f);
  const float with_nan[2] = {1.0f, std::numeric_limits<float>::quiet_NaN()};
  CHECK(std::isnan(ig::row_quant(with_nan, 2).scale));
  const float with_inf[2] = {1.0f, -std::numeric_limits<float>::infinity()};
  CHECK(std::isnan(ig::row_quant(with_inf, 2).scale));
  const float huge[2] = {3e38f, -3e38f};  // the range itself overflows a float
  const ig::RowQuant hq = ig::row_quant(huge, 2);
  CHECK(std::isfinite(hq.scale));
  CHECK(ig::quantize(3e38f, hq) == 255);
  CHECK(ig::quantize(-3e38f, hq) == 0);
}

// ---------------------------------------------------------------- errors --

TEST_CASE("low-precision GEMMs reject mismatched shapes, ranges, overlap and a null scratch") {
  const Matrix<float> w = random_matrix(8, 5, 71);
  const PackedWeightBf16 wb(w);
  const PackedWeightInt8 wi(w);
  const Matrix<float> a = random_matrix(3, 5, 72);
  std::vector<float> scratch(64);
  for (Kind kind : kKinds) {
    auto run = [&](const Eigen::Ref<const Matrix<float>>& x, Eigen::Ref<Matrix<float>> c, float* s,
                   Index n0, Index n1) {
      if (kind == Kind::bf16)
        vit::nn::gemm_packed_bf16(x, wb, c, nullptr, Epilogue::store, s, n0, n1);
      else
        vit::nn::gemm_packed_int8(x, wi, c, nullptr, Epilogue::store, s, n0, n1);
    };
    Matrix<float> c(3, 8), c_bad(3, 7);
    CHECK_THROWS_AS(run(random_matrix(3, 4, 73), c, scratch.data(), 0, 8), vit::argument_error);
    CHECK_THROWS_AS(run(a, c_bad, scratch.data(), 0, 7), vit::argument_error);
    CHECK_THROWS_AS(run(a, c, scratch.data(), 4, 9), vit::argument_error);
    CHECK_THROWS_AS(run(a, c, scratch.data(), 5, 4), vit::argument_error);
    CHECK_THROWS_AS(run(a, c, nullptr, 0, 8), vit::argument_error);
    Matrix<float> shared = random_matrix(3, 13, 74);  // a and c in the same storage
    CHECK_THROWS_AS(run(shared.leftCols(5), shared.rightCols(8), scratch.data(), 0, 8),
                    vit::argument_error);
    run(a, c, scratch.data(), 0, 8);  // and the valid call runs
  }
  // int8: a depth whose int32 sums could overflow.
  const PackedWeightInt8 deep(Matrix<float>::Ones(1, 65537));
  Matrix<float> c1(1, 1);
  CHECK_THROWS_AS(vit::nn::gemm_packed_int8(Matrix<float>::Ones(1, 65537), deep, c1, nullptr,
                                            Epilogue::store, scratch.data()),
                  vit::argument_error);
  // Scratch sizes as documented.
  CHECK(vit::nn::gemm_packed_bf16_scratch_size(3, 5) == 3u * 3u);
  CHECK(vit::nn::gemm_packed_bf16_scratch_size(100000, 100000) <=
        vit::nn::gemm_packed_bf16_scratch_size());
  CHECK(vit::nn::gemm_packed_int8_scratch_size(3, 5) == 3u * (2u + 2u));
  CHECK(vit::nn::gemm_packed_int8_scratch_size(0, 768) == 0u);
  CHECK(vit::nn::gemm_packed_bf16_scratch_size(0, 768) == 0u);
  CHECK(vit::nn::gemm_packed_int8_scratch_size(197, 768) == 197u * (192u + 2u));
  CHECK(vit::nn::gemm_packed_int8_scratch_size(1576, 3072) == 168u * (768u + 2u));
}
