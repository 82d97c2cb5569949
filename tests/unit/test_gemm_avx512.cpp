// Unit tests of the packed-weight GEMM (vit/nn/gemm_avx512.hpp): every
// epilogue, with and without bias, on edge shapes, column ranges and strided
// views, against a double-precision reference; the AVX-512 and the portable
// kernels; the vectorised GELU; NaN / inf propagation; PackedWeight itself.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "vit/nn/gemm_avx512.hpp"

using vit::Index;
using vit::Matrix;
using vit::nn::Epilogue;
using vit::nn::PackedWeight;

namespace {

namespace pg = vit::nn::detail::pgemm;

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

// Largest |element| (a plain loop: Eigen's vectorised maxCoeff trips GCC 12's
// -Wmaybe-uninitialized under -march=native with AVX-512).
float max_abs(const Matrix<float>& m) {
  float r = 0.0f;
  for (Index i = 0; i < m.size(); ++i) r = std::max(r, std::abs(m.data()[i]));
  return r;
}

double gelu_ref(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

// Runs the portable kernel while alive (or the automatic choice when off).
struct ForcePortable {
  explicit ForcePortable(bool on) { vit::nn::gemm_packed_force_portable(on); }
  ~ForcePortable() { vit::nn::gemm_packed_force_portable(false); }
  ForcePortable(const ForcePortable&) = delete;
  ForcePortable& operator=(const ForcePortable&) = delete;
};

// Scratch of exactly the documented size, so that ASan sees any overrun.
std::vector<float> scratch_for(Index m, Index k) {
  return std::vector<float>(vit::nn::gemm_packed_scratch_size(m, k));
}

// a w^T in double, and sum |a||w| per element (for the error bound).
struct Reference {
  Matrix<double> dot, mag;
  Reference(const Matrix<float>& a, const Matrix<float>& w)
      : dot(Matrix<double>::Zero(a.rows(), w.rows())),
        mag(Matrix<double>::Zero(a.rows(), w.rows())) {
    for (Index i = 0; i < a.rows(); ++i)
      for (Index j = 0; j < w.rows(); ++j)
        for (Index kk = 0; kk < a.cols(); ++kk) {
          const double p = double(a(i, kk)) * double(w(j, kk));
          dot(i, j) += p;
          mag(i, j) += std::abs(p);
        }
  }
};

// Checks columns [n0, n1) of got against the reference with the epilogue
// applied to a w^T + bias, starting from c0 (the prior c). Tolerance: float
// rounding of a length-k dot product, bounded by (k + 2) eps sum |a||w|
// (+ |bias|, + |c0| for accumulate), then GELU's slope (< 1.13) and its own
// error (<= 2e-7 max(1, |x|)).
void check_result(const Reference& r, Index k, const float* bias, const Matrix<float>& c0,
                  const Eigen::Ref<const Matrix<float>>& got, Epilogue ep, Index n0, Index n1,
                  const char* what) {
  const double eps = std::numeric_limits<float>::epsilon();
  double worst = 0.0;
  Index wi = -1, wj = -1;
  for (Index i = 0; i < r.dot.rows(); ++i)
    for (Index j = n0; j < n1; ++j) {
      double dot = r.dot(i, j), mag = r.mag(i, j);
      if (bias) {
        dot += bias[j];
        mag += std::abs(double(bias[j]));
      }
      double ref = dot;
      double tol = double(k + 2) * eps * mag + 1e-30;
      if (ep == Epilogue::accumulate) {
        ref += c0(i, j);
        tol += 2.0 * eps * (std::abs(double(c0(i, j))) + mag);
      } else if (ep == Epilogue::gelu) {
        ref = gelu_ref(dot);
        tol = 1.13 * tol + 2e-7 * std::max(1.0, std::abs(dot)) + eps * std::abs(ref);
      }
      const double err = std::abs(double(got(i, j)) - ref) / tol;
      if (!(err <= worst)) {  // also catches NaN
        worst = err;
        wi = i;
        wj = j;
      }
    }
  INFO(what << ": m=" << r.dot.rows() << " k=" << k << " n=[" << n0 << "," << n1
            << ") ep=" << int(ep) << " bias=" << (bias != nullptr)
            << " avx512=" << vit::nn::gemm_packed_uses_avx512() << " worst (error / tolerance) "
            << worst << " at (" << wi << "," << wj << ")");
  CHECK(worst <= 1.0);
}

const Epilogue kEpilogues[] = {Epilogue::store, Epilogue::accumulate, Epilogue::gelu};

// Every epilogue, with and without bias, on both kernels.
void check_all_epilogues(Index m, Index k, Index n, unsigned seed, const char* what) {
  const Matrix<float> a = random_matrix(m, k, seed);
  const Matrix<float> w = random_matrix(n, k, seed + 1);
  const std::vector<float> bias = random_vector(n, seed + 2);
  const Matrix<float> c0 = random_matrix(m, n, seed + 3);
  const Reference ref(a, w);
  const PackedWeight packed(w);
  std::vector<float> scratch = scratch_for(m, k);
  for (bool portable : {false, true}) {
    ForcePortable force(portable);
    for (Epilogue ep : kEpilogues)
      for (bool with_bias : {false, true}) {
        Matrix<float> c = c0;
        const float* b = with_bias ? bias.data() : nullptr;
        vit::nn::gemm_packed(a, packed, c, b, ep, scratch.data());
        check_result(ref, k, b, c0, c, ep, 0, n, what);
      }
  }
}

}  // namespace

TEST_CASE("gemm_packed matches a double reference on all edge shapes, both kernels") {
  const Index sizes[] = {1, 3, 13, 14, 15, 31, 32, 33};
  unsigned seed = 1;
  for (Index m : sizes)
    for (Index k : sizes)
      for (Index n : sizes) check_all_epilogues(m, k, n, seed += 4, "edge grid");
}

TEST_CASE("gemm_packed on ViT-sized and multi-block shapes, both kernels") {
  struct Shape {
    Index m, k, n;
  };
  // 197 rows (13 full tiles + 8 + 7), 768-wide rows and weights, a depth
  // beyond one block (1000 = 2 x 500, 1600 = 3 blocks), rows beyond one row
  // block (600 = 2 x 300).
  const Shape shapes[] = {{197, 768, 33}, {197, 31, 768}, {33, 768, 197}, {768, 13, 64},
                          {197, 64, 197}, {15, 1000, 40}, {14, 1600, 33}, {600, 20, 45},
                          {31, 2304, 1},  {1, 768, 768}};
  unsigned seed = 1000;
  for (const Shape& s : shapes) check_all_epilogues(s.m, s.k, s.n, seed += 4, "large");
}

TEST_CASE("the AVX-512 and the portable kernels agree") {
  const Matrix<float> a = random_matrix(197, 768, 7);
  const Matrix<float> w = random_matrix(96, 768, 8);
  const std::vector<float> bias = random_vector(96, 9);
  const PackedWeight packed(w);
  std::vector<float> scratch = scratch_for(197, 768);
  for (Epilogue ep : kEpilogues) {
    Matrix<float> fast = random_matrix(197, 96, 10), slow = fast;
    vit::nn::gemm_packed(a, packed, fast, bias.data(), ep, scratch.data());
    {
      ForcePortable force(true);
      CHECK_FALSE(vit::nn::gemm_packed_uses_avx512());
      vit::nn::gemm_packed(a, packed, slow, bias.data(), ep, scratch.data());
    }
    // Same blocking, same summation order per element except for FMA
    // contraction: differences are a few float roundings of |sum| <~ 100.
    CHECK(max_abs(fast - slow) <= 1e-4f);
  }
}

TEST_CASE("gemm_packed column ranges write only their columns") {
  const Index m = 45, k = 70, n = 100;
  const Matrix<float> a = random_matrix(m, k, 21);
  const Matrix<float> w = random_matrix(n, k, 22);
  const std::vector<float> bias = random_vector(n, 23);
  const Matrix<float> c0 = random_matrix(m, n, 24);
  const Reference ref(a, w);
  const PackedWeight packed(w);
  std::vector<float> scratch = scratch_for(m, k);
  // Ranges starting and ending inside panels, whole panels, empty, single columns.
  const std::pair<Index, Index> ranges[] = {{0, 100}, {0, 32},   {32, 64},  {5, 37},  {37, 38},
                                            {31, 33}, {63, 100}, {99, 100}, {50, 50}, {1, 99}};
  for (bool portable : {false, true}) {
    ForcePortable force(portable);
    for (Epilogue ep : kEpilogues)
      for (const auto& [n0, n1] : ranges) {
        Matrix<float> c = c0;
        vit::nn::gemm_packed(a, packed, c, bias.data(), ep, scratch.data(), n0, n1);
        check_result(ref, k, bias.data(), c0, c, ep, n0, n1, "range");
        CHECK(c.leftCols(n0) == c0.leftCols(n0));
        CHECK(c.rightCols(n - n1) == c0.rightCols(n - n1));
      }
    // Three ranges together give the whole product.
    Matrix<float> whole = c0, split = c0;
    vit::nn::gemm_packed(a, packed, whole, bias.data(), Epilogue::gelu, scratch.data());
    vit::nn::gemm_packed(a, packed, split, bias.data(), Epilogue::gelu, scratch.data(), 0, 40);
    vit::nn::gemm_packed(a, packed, split, bias.data(), Epilogue::gelu, scratch.data(), 40, 64);
    vit::nn::gemm_packed(a, packed, split, bias.data(), Epilogue::gelu, scratch.data(), 64, 100);
    CHECK(whole == split);
  }
}

TEST_CASE("gemm_packed on strided views leaves the rest of the storage alone") {
  const Index m = 33, k = 50, n = 47;
  const Matrix<float> a_store = random_matrix(m + 3, k + 9, 31);
  const Matrix<float> w_store = random_matrix(n + 2, k + 5, 32);
  const std::vector<float> bias = random_vector(n, 33);
  const Matrix<float> a = a_store.block(2, 4, m, k);
  const Matrix<float> w = w_store.block(1, 3, n, k);
  const Reference ref(a, w);
  const PackedWeight packed(w_store.block(1, 3, n, k));  // packed from a strided view
  std::vector<float> scratch = scratch_for(m, k);
  for (bool portable : {false, true}) {
    ForcePortable force(portable);
    for (Epilogue ep : kEpilogues) {
      const Matrix<float> c_store0 = random_matrix(m + 4, n + 11, 34);
      Matrix<float> c_store = c_store0;
      Eigen::Ref<const Matrix<float>> a_view = a_store.block(2, 4, m, k);
      Eigen::Ref<Matrix<float>> c_view = c_store.block(3, 6, m, n);
      REQUIRE(a_view.outerStride() == k + 9);
      REQUIRE(c_view.outerStride() == n + 11);
      vit::nn::gemm_packed(a_view, packed, c_view, bias.data(), ep, scratch.data());
      const Matrix<float> c0 = c_store0.block(3, 6, m, n);
      check_result(ref, k, bias.data(), c0, c_store.block(3, 6, m, n), ep, 0, n, "strided");
      Matrix<float> outside = c_store - c_store0;
      outside.block(3, 6, m, n).setZero();
      CHECK(max_abs(outside) == 0.0f);
    }
  }
}

TEST_CASE("gemm_packed with an empty depth, no rows or no columns") {
  const std::vector<float> bias = {1.0f, -2.0f, 0.5f};
  const PackedWeight empty_depth(Matrix<float>(3, 0));
  const Matrix<float> a(4, 0);
  std::vector<float> scratch(1);
  Matrix<float> c = Matrix<float>::Constant(4, 3, 10.0f);
  vit::nn::gemm_packed(a, empty_depth, c, bias.data(), Epilogue::accumulate, scratch.data());
  CHECK(c(2, 1) == 8.0f);
  vit::nn::gemm_packed(a, empty_depth, c, bias.data(), Epilogue::store, scratch.data());
  CHECK(c(3, 2) == 0.5f);
  vit::nn::gemm_packed(a, empty_depth, c, nullptr, Epilogue::store, nullptr);
  CHECK(max_abs(c) == 0.0f);
  vit::nn::gemm_packed(a, empty_depth, c, bias.data(), Epilogue::gelu, scratch.data());
  CHECK(c(0, 0) == doctest::Approx(gelu_ref(1.0)).epsilon(1e-6));

  const PackedWeight w(random_matrix(5, 6, 41));
  Matrix<float> none(0, 5);
  vit::nn::gemm_packed(Matrix<float>(0, 6), w, none, nullptr, Epilogue::store, nullptr);
  const PackedWeight no_out(Matrix<float>(0, 6));
  Matrix<float> c2(3, 0);
  vit::nn::gemm_packed(random_matrix(3, 6, 42), no_out, c2, nullptr, Epilogue::gelu, nullptr);
}

TEST_CASE("gemm_packed propagates NaN and inf to the affected rows and columns only") {
  const Index m = 20, k = 40, n = 40;
  Matrix<float> a = random_matrix(m, k, 51);
  const Matrix<float> w = random_matrix(n, k, 52).cwiseAbs();  // all positive
  const PackedWeight packed(w);
  std::vector<float> bias = random_vector(n, 53);
  std::vector<float> scratch = scratch_for(m, k);
  const float inf = std::numeric_limits<float>::infinity();
  a(3, 7) = std::numeric_limits<float>::quiet_NaN();
  a.row(15).setConstant(1.0f);
  a(15, 2) = inf;
  a.row(16).setConstant(1.0f);
  a(16, 9) = -inf;
  bias[33] = std::numeric_limits<float>::quiet_NaN();
  for (bool portable : {false, true}) {
    ForcePortable force(portable);
    for (Epilogue ep : kEpilogues) {
      // Garbage in c must not leak into store / gelu results.
      Matrix<float> c = Matrix<float>::Constant(
          m, n, ep == Epilogue::accumulate ? 0.0f : std::numeric_limits<float>::quiet_NaN());
      vit::nn::gemm_packed(a, packed, c, bias.data(), ep, scratch.data());
      for (Index i = 0; i < m; ++i)
        for (Index j = 0; j < n; ++j) {
          CAPTURE(i);
          CAPTURE(j);
          CAPTURE(int(ep));
          const float v = c(i, j);
          if (i == 3 || j == 33) {
            CHECK(std::isnan(v));
          } else if (i == 15) {
            CHECK(v == inf);  // gelu(inf) = inf
          } else if (i == 16) {
            // gelu(-inf) = 0.5 (-inf) (1 + erf(-inf)) = NaN, as nn::gelu_erf gives.
            if (ep == Epilogue::gelu)
              CHECK(std::isnan(v));
            else
              CHECK(v == -inf);
          } else {
            CHECK(std::isfinite(v));
          }
        }
    }
  }
}

TEST_CASE("vectorised erf and GELU are accurate to 2e-7") {
#if VIT_PGEMM_X86
  if (!pg::cpu_has_avx512()) {
    MESSAGE("no AVX-512 on this CPU: vectorised GELU not tested");
    return;
  }
  std::vector<float> z;
  for (double v = -9.0; v <= 9.0; v += 3.7e-5) z.push_back(float(v));
  for (float v : {0.0f, -0.0f, 1.0f, -1.0f, 4.0f, -4.0f, 0.99999994f, 1.0000001f, 3.9999998f,
                  4.0000005f, 1e-30f, -1e-30f, 1e-42f})
    z.push_back(v);
  const Index n = static_cast<Index>(z.size());
  std::vector<float> g(z.size()), y(z.size());
  pg::erf1p_avx512(z.data(), g.data(), n);
  pg::gelu_avx512(z.data(), y.data(), n);
  double erf_err = 0.0, gelu_err = 0.0;
  for (std::size_t i = 0; i < z.size(); ++i) {
    const double zd = z[i];
    erf_err = std::max(erf_err, std::abs((double(g[i]) - 1.0) - std::erf(zd)));
    gelu_err =
        std::max(gelu_err, std::abs(double(y[i]) - gelu_ref(zd)) / std::max(1.0, std::abs(zd)));
  }
  CHECK(erf_err <= 2e-7);
  CHECK(gelu_err <= 2e-7);
  MESSAGE("max |erf error| " << erf_err << ", max |gelu error| / max(1, |x|) " << gelu_err);

  const float inf = std::numeric_limits<float>::infinity();
  const float special[] = {inf, -inf, std::numeric_limits<float>::quiet_NaN(), 1e30f, -1e30f};
  float out[5];
  pg::gelu_avx512(special, out, 5);
  CHECK(out[0] == inf);
  CHECK(std::isnan(out[1]));
  CHECK(std::isnan(out[2]));
  CHECK(out[3] == 1e30f);
  CHECK(out[4] == 0.0f);
#else
  MESSAGE("not x86-64: vectorised GELU not built");
#endif
}

TEST_CASE("PackedWeight stores the weight in panels and gives it back") {
  const Matrix<float> w = random_matrix(45, 19, 61);
  PackedWeight p(w);
  CHECK(p.rows() == 45);
  CHECK(p.cols() == 19);
  CHECK(p.padded_rows() == 64);
  CHECK(p.size() == std::size_t(64 * 19));
  CHECK(p.bytes() == p.size() * sizeof(float));
  CHECK(reinterpret_cast<std::uintptr_t>(p.data()) % 64 == 0);
  CHECK(p.unpack() == w);
  CHECK(p(44, 18) == w(44, 18));
  // Panel layout: column j of panel j / 32 at depth kk.
  CHECK(p.data()[32 * 19 + 5 * 32 + 7] == w(39, 5));
  CHECK(p.data()[32 * 19 + 5 * 32 + 20] == 0.0f);  // padding row 52

  PackedWeight copy(p);
  CHECK(copy.unpack() == w);
  CHECK(copy.data() != p.data());
  PackedWeight moved(std::move(copy));
  CHECK(moved.unpack() == w);
  CHECK(copy.empty());  // NOLINT(bugprone-use-after-move): moved-from is empty
  const float* storage = moved.data();
  moved.pack(random_matrix(40, 19, 62));  // smaller: the allocation is reused
  CHECK(moved.data() == storage);
  moved = p;
  CHECK(moved.unpack() == w);
  PackedWeight empty;
  CHECK(empty.empty());
  CHECK(empty.unpack().size() == 0);
}

TEST_CASE("gemm_packed rejects mismatched shapes, ranges, overlap and a null scratch") {
  const PackedWeight w(random_matrix(8, 5, 71));
  const Matrix<float> a = random_matrix(3, 5, 72);
  std::vector<float> scratch = scratch_for(3, 5);
  Matrix<float> c(3, 8);
  CHECK_THROWS_AS(
      vit::nn::gemm_packed(random_matrix(3, 4, 73), w, c, nullptr, Epilogue::store, scratch.data()),
      vit::argument_error);
  Matrix<float> c_bad(3, 7);
  CHECK_THROWS_AS(vit::nn::gemm_packed(a, w, c_bad, nullptr, Epilogue::store, scratch.data()),
                  vit::argument_error);
  CHECK_THROWS_AS(vit::nn::gemm_packed(a, w, c, nullptr, Epilogue::store, scratch.data(), 4, 9),
                  vit::argument_error);
  CHECK_THROWS_AS(vit::nn::gemm_packed(a, w, c, nullptr, Epilogue::store, scratch.data(), 5, 4),
                  vit::argument_error);
  CHECK_THROWS_AS(vit::nn::gemm_packed(a, w, c, nullptr, Epilogue::store, nullptr),
                  vit::argument_error);
  Matrix<float> shared = random_matrix(3, 13, 74);  // a and c in the same storage
  CHECK_THROWS_AS(vit::nn::gemm_packed(shared.leftCols(5), w, shared.rightCols(8), nullptr,
                                       Epilogue::store, scratch.data()),
                  vit::argument_error);
  CHECK(vit::nn::gemm_packed_scratch_size(3, 5) == 15u);
  CHECK(vit::nn::gemm_packed_scratch_size(100000, 100000) <= vit::nn::gemm_packed_scratch_size());
}
