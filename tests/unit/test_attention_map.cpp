// Unit tests of attention maps: attention rollout against a case worked out
// by hand and against a plain re-computation from a real forward pass
// (class token, distilled, no class token, batches), the class token's
// per-head attention, argument checks, and the heat-map drawing (colour map,
// bilinear upsampling, overlay blending).
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "vit/attention_map.hpp"
#include "vit/vision_transformer.hpp"

using vit::Index;
using vit::Matrix;

namespace {

using Model = vit::VisionTransformer<vit::DynamicConfig<float>>;

// A small model: image 32, patch 8 (grid 4x4, 16 patches), width 32, 2 heads, 2 blocks.
vit::Architecture small_arch(bool class_token = true, bool dist_token = false) {
  vit::Architecture a;
  a.image_size = 32;
  a.patch_size = 8;
  a.embed_dim = 32;
  a.depth = 2;
  a.num_heads = 2;
  a.mlp_hidden = 64;
  a.num_classes = 10;
  a.class_token = class_token;
  a.dist_token = dist_token;
  if (!class_token) a.pooling = vit::Pooling::avg;  // cls pooling needs a class token
  return a;
}

// A model of `arch` with every parameter drawn from N(0, 0.3^2).
Model random_model(const vit::Architecture& arch, unsigned seed) {
  Model m(arch);
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 0.3f);
  for (const auto& p : m.named_parameters()) {
    std::int64_t n = 1;
    for (std::int64_t s : p.shape) n *= s;
    for (std::int64_t i = 0; i < n; ++i) p.data[i] = dist(gen);
  }
  m.update_position_table();  // pos_embed was changed by hand
  return m;
}

Matrix<float> random_images(const vit::Architecture& arch, Index n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Matrix<float> x(n, Index(arch.in_chans) * arch.image_size * arch.image_size);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = dist(gen);
  return x;
}

// Rollout straight from the definition, in double, with plain loops:
// A'_l = (mean_h A_l,h + I) / rowsum, R = A'_L ... A'_1.
template <class Scalar>
Matrix<double> reference_rollout(const std::vector<Matrix<Scalar>>& att, Index heads, Index t,
                                 Index image) {
  Matrix<double> r = Matrix<double>::Identity(t, t);
  for (const Matrix<Scalar>& a : att) {
    Matrix<double> m(t, t);
    for (Index i = 0; i < t; ++i) {
      double row_sum = 0;
      for (Index j = 0; j < t; ++j) {
        double s = 0;
        for (Index h = 0; h < heads; ++h) s += double(a((image * heads + h) * t + i, j));
        m(i, j) = s / double(heads) + (i == j ? 1.0 : 0.0);
        row_sum += m(i, j);
      }
      for (Index j = 0; j < t; ++j) m(i, j) /= row_sum;
    }
    Matrix<double> next = Matrix<double>::Zero(t, t);
    for (Index i = 0; i < t; ++i)
      for (Index j = 0; j < t; ++j)
        for (Index k = 0; k < t; ++k) next(i, j) += m(i, k) * r(k, j);
    r = next;
  }
  return r;
}

template <class A, class B>
double max_diff(const A& a, const B& b) {
  return (a.template cast<double>() - b.template cast<double>()).cwiseAbs().maxCoeff();
}

// The message of the vit::argument_error that f throws ("" when none).
template <class F>
std::string argument_error_of(F&& f) {
  try {
    f();
  } catch (const vit::argument_error& e) {
    return e.what();
  }
  return "";
}

// Runs the model on `images` with attention and checks both maps of each
// image against reference_rollout and the stored attention.
void check_against_forward(const vit::Architecture& arch, unsigned seed) {
  const Model model = random_model(arch, seed);
  const Matrix<float> images = random_images(arch, 2, seed + 1);
  vit::Output<float> out;
  vit::ForwardOptions opt;
  opt.attention = true;
  model.forward(images, out, opt);

  const Index t = arch.num_tokens(), heads = arch.num_heads, prefix = arch.num_prefix_tokens();
  const Index grid = arch.grid_size(), p = arch.num_patches();
  for (Index n = 0; n < 2; ++n) {
    const vit::AttentionMaps<float> maps = vit::attention_maps(out, arch, n);
    const Matrix<double> r = reference_rollout(out.attention, heads, t, n);
    CHECK(max_diff(vit::attention_rollout(out, arch, n), r) < 1e-5);

    // The map: class row (or the mean of the patch rows), patch columns, grid-shaped.
    REQUIRE(maps.rollout.rows() == grid);
    REQUIRE(maps.rollout.cols() == grid);
    for (Index gy = 0; gy < grid; ++gy)
      for (Index gx = 0; gx < grid; ++gx) {
        const Index key = prefix + gy * grid + gx;
        const double expected =
            arch.class_token ? r(0, key) : r.bottomRows(p).col(key).sum() / double(p);
        CHECK(std::abs(double(maps.rollout(gy, gx)) - expected) < 1e-5);
      }

    REQUIRE(maps.cls_attention.size() == std::size_t(arch.depth));
    for (std::size_t l = 0; l < maps.cls_attention.size(); ++l) {
      const Matrix<float>& c = maps.cls_attention[l];
      REQUIRE(c.rows() == heads);
      REQUIRE(c.cols() == p);
      for (Index h = 0; h < heads; ++h) {
        const auto block = out.attention[l].middleRows((n * heads + h) * t, t);  // (T, T)
        if (arch.class_token) {
          // Query row 0; the prefix tokens' share is what is missing from 1.
          CHECK(max_diff(c.row(h), block.row(0).tail(p)) == 0.0);
          const double prefix_share = double(block.row(0).head(prefix).sum());
          CHECK(std::abs(double(c.row(h).sum()) - (1.0 - prefix_share)) < 1e-5);
        } else {
          CHECK(max_diff(c.row(h), block.colwise().mean()) < 1e-6);
          CHECK(std::abs(double(c.row(h).sum()) - 1.0) < 1e-5);
        }
      }
    }
  }
}

}  // namespace

TEST_CASE("attention rollout of a hand-built two-block model") {
  // 1 class token + 2x2 patches: T = 5, tokens [cls, p00, p01, p10, p11]; 2 heads.
  vit::Architecture arch;
  arch.patch_size = 4;
  arch.image_size = 8;  // grid 2
  arch.embed_dim = 4;
  arch.num_heads = 2;
  arch.depth = 2;
  REQUIRE(arch.num_tokens() == 5);

  // Block 1: head 0 uniform (U, every entry 1/5), head 1 the identity.
  //   A_1 = (U + I) / 2;  A'_1 = (A_1 + I) / 2 = U/4 + 3I/4 (rows already sum to 1).
  // Block 2: head 0 sends every query to token 2 (patch p01), head 1 to token 0 (cls).
  //   A_2: every row [1/2, 0, 1/2, 0, 0];  A'_2 = (A_2 + I) / 2:
  //   row 0 [3/4, 0, 1/4, 0, 0], row 2 [1/4, 0, 3/4, 0, 0],
  //   rows j = 1, 3, 4: [1/4, 0, 1/4, 0, 0] + e_j / 2.
  // R = A'_2 A'_1. For a stochastic row r, r A'_1 = (1/20) 1 + (3/4) r, so
  // row i of R is 1/20 + (3/4) A'_2 row i, i.e. 80 R =
  //   [49  4 19  4  4]
  //   [19 34 19  4  4]
  //   [19  4 49  4  4]
  //   [19  4 19 34  4]
  //   [19  4 19  4 34]
  // The map is R's class row over the patches, [4, 19, 4, 4] / 80, as a 2x2 grid:
  //   [[0.05, 0.2375], [0.05, 0.05]].
  // (The other order, A'_1 A'_2, has class row 4/5 A'_2[0] + 1/20 (A'_2[1] + ... + A'_2[4])
  // = [3/5, 0, 1/5, 0, 0] + [1, 1/2, 3/2, 1/2, 1/2] / 20 = [0.65, 0.025, 0.275, 0.025, 0.025]:
  // a different map, so the test also pins the order of the product.)
  const Matrix<double> u = Matrix<double>::Constant(5, 5, 0.2);
  const Matrix<double> eye = Matrix<double>::Identity(5, 5);
  Matrix<double> to2 = Matrix<double>::Zero(5, 5), to0 = Matrix<double>::Zero(5, 5);
  to2.col(2).setOnes();
  to0.col(0).setOnes();

  vit::Output<double> out;
  out.attention.assign(2, Matrix<double>(2 * 5, 5));  // (N*heads*T, T), N = 1
  out.attention[0] << u, eye;                         // head 0 rows 0..4, head 1 rows 5..9
  out.attention[1] << to2, to0;

  Matrix<double> expected_r(5, 5);
  expected_r << 49, 4, 19, 4, 4,  //
      19, 34, 19, 4, 4,           //
      19, 4, 49, 4, 4,            //
      19, 4, 19, 34, 4,           //
      19, 4, 19, 4, 34;
  expected_r /= 80.0;
  CHECK(max_diff(vit::attention_rollout(out, arch, 0), expected_r) < 1e-12);

  const vit::AttentionMaps<double> maps = vit::attention_maps(out, arch, 0);
  Matrix<double> expected_map(2, 2);
  expected_map << 0.05, 0.2375, 0.05, 0.05;
  REQUIRE(maps.rollout.rows() == 2);
  REQUIRE(maps.rollout.cols() == 2);
  CHECK(max_diff(maps.rollout, expected_map) < 1e-12);

  // Class token's attention to the patches: block 1 head 0 uniform 1/5, head 1
  // only itself (0 on patches); block 2 head 0 all on p01, head 1 on itself.
  REQUIRE(maps.cls_attention.size() == 2);
  Matrix<double> c1(2, 4), c2(2, 4);
  c1 << 0.2, 0.2, 0.2, 0.2, 0, 0, 0, 0;
  c2 << 0, 1, 0, 0, 0, 0, 0, 0;
  CHECK(max_diff(maps.cls_attention[0], c1) == 0.0);
  CHECK(max_diff(maps.cls_attention[1], c2) == 0.0);
}

TEST_CASE("rollout rows sum to 1 for random stochastic attention") {
  // Distilled layout (2 prefix tokens), grid 3, 3 heads, 3 blocks, batch 2.
  vit::Architecture arch;
  arch.patch_size = 4;
  arch.image_size = 12;
  arch.embed_dim = 6;
  arch.num_heads = 3;
  arch.depth = 3;
  arch.dist_token = true;
  const Index t = arch.num_tokens(), heads = arch.num_heads;
  REQUIRE(t == 11);

  std::mt19937 gen(7);
  std::uniform_real_distribution<double> dist(0.0, 1.0);
  vit::Output<double> out;
  out.attention.assign(3, Matrix<double>(2 * heads * t, t));
  for (Matrix<double>& a : out.attention) {
    for (Index i = 0; i < a.size(); ++i) a.data()[i] = std::pow(dist(gen), 4.0);  // peaky
    for (Index i = 0; i < a.rows(); ++i) a.row(i) /= a.row(i).sum();
  }

  for (Index n = 0; n < 2; ++n) {
    const Matrix<double> r = vit::attention_rollout(out, arch, n);
    REQUIRE(r.rows() == t);
    REQUIRE(r.cols() == t);
    CHECK(r.minCoeff() >= 0.0);
    for (Index i = 0; i < t; ++i) CHECK(std::abs(r.row(i).sum() - 1.0) < 1e-12);
    CHECK(max_diff(r, reference_rollout(out.attention, heads, t, n)) < 1e-12);

    // The map skips both prefix columns: it sums to 1 - R(0,0) - R(0,1).
    const vit::AttentionMaps<double> maps = vit::attention_maps(out, arch, n);
    CHECK(std::abs(maps.rollout.sum() - (1.0 - r(0, 0) - r(0, 1))) < 1e-12);
    CHECK(std::abs(maps.rollout(0, 0) - r(0, 2)) < 1e-15);
    CHECK(std::abs(maps.rollout(1, 0) - r(0, 2 + 3)) < 1e-15);  // row-major grid order
  }
}

TEST_CASE("identity attention gives an all-zero map, which draws flat") {
  // A = I in every block: A' = (I + I) / 2 = I, R = I, and the class row has
  // nothing on the patches. The map is all zero, not NaN.
  vit::Architecture arch;
  arch.patch_size = 4;
  arch.image_size = 8;
  arch.embed_dim = 4;
  arch.num_heads = 2;
  arch.depth = 2;
  vit::Output<double> out;
  out.attention.assign(2, Matrix<double>(2 * 5, 5));
  for (Matrix<double>& a : out.attention)
    a << Matrix<double>::Identity(5, 5), Matrix<double>::Identity(5, 5);

  CHECK(max_diff(vit::attention_rollout(out, arch, 0), Matrix<double>::Identity(5, 5)) == 0.0);
  const vit::AttentionMaps<double> maps = vit::attention_maps(out, arch, 0);
  CHECK(maps.rollout.cwiseAbs().maxCoeff() == 0.0);

  // A constant grid normalises to 0 everywhere: the cold end, no division by zero.
  vit::Image black(6, 4);
  const vit::Image over = vit::heatmap_overlay(black, maps.rollout, 0.5f);
  const std::array<std::uint8_t, 3> cold = vit::heat_colour(0.0);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 6; ++x)
      for (int c = 0; c < 3; ++c)
        CHECK(int(over.at(x, y, c)) == int(std::lround(0.5 * cold[std::size_t(c)])));
}

TEST_CASE("rollout and class attention of a real forward pass match a re-computation") {
  check_against_forward(small_arch(), 11);
}

TEST_CASE("distilled model: both prefix tokens are skipped") {
  const vit::Architecture arch = small_arch(true, true);
  REQUIRE(arch.num_prefix_tokens() == 2);
  check_against_forward(arch, 21);
}

TEST_CASE("model without a class token: maps are means over the patch rows") {
  const vit::Architecture arch = small_arch(false);
  REQUIRE(arch.num_prefix_tokens() == 0);
  check_against_forward(arch, 31);
}

TEST_CASE("image 1 of a batch of 2 has the same maps as the image alone") {
  const vit::Architecture arch = small_arch();
  const Model model = random_model(arch, 41);
  const Matrix<float> images = random_images(arch, 2, 42);
  vit::ForwardOptions opt;
  opt.attention = true;
  vit::Output<float> both, alone;
  model.forward(images, both, opt);
  model.forward(images.row(1), alone, opt);

  const vit::AttentionMaps<float> a = vit::attention_maps(both, arch, 1);
  const vit::AttentionMaps<float> b = vit::attention_maps(alone, arch, 0);
  CHECK(max_diff(a.rollout, b.rollout) < 1e-6);
  REQUIRE(a.cls_attention.size() == b.cls_attention.size());
  for (std::size_t l = 0; l < a.cls_attention.size(); ++l)
    CHECK(max_diff(a.cls_attention[l], b.cls_attention[l]) < 1e-6);
  // And image 0 is really another image.
  CHECK(max_diff(vit::attention_maps(both, arch, 0).rollout, a.rollout) > 1e-4);
}

TEST_CASE("attention maps refuse missing attention, a wrong architecture, a bad image index") {
  const vit::Architecture arch = small_arch();
  const Model model = random_model(arch, 51);
  const Matrix<float> image = random_images(arch, 1, 52);
  vit::Output<float> out;

  model.forward(image, out);  // no ForwardOptions::attention
  std::string msg = argument_error_of([&] { vit::attention_maps(out, arch, 0); });
  CHECK(msg.find("ForwardOptions::attention") != std::string::npos);
  CHECK(!argument_error_of([&] { vit::attention_rollout(out, arch, 0); }).empty());

  vit::ForwardOptions opt;
  opt.attention = true;
  model.forward(image, out, opt);
  CHECK_NOTHROW(vit::attention_maps(out, arch, 0));
  msg = argument_error_of([&] { vit::attention_maps(out, arch, 1); });
  CHECK(msg.find("out of range") != std::string::npos);
  CHECK(!argument_error_of([&] { vit::attention_maps(out, arch, -1); }).empty());

  vit::Architecture other = arch;
  other.depth = 3;  // 2 blocks stored
  CHECK(argument_error_of([&] { vit::attention_maps(out, other, 0); }).find("depth") !=
        std::string::npos);
  other = arch;
  other.num_heads = 4;  // rows are 1 * 2 * T, not a multiple of 4 * T
  CHECK(!argument_error_of([&] { vit::attention_maps(out, other, 0); }).empty());
  other = arch;
  other.image_size = 40;  // T = 26, not 17
  CHECK(!argument_error_of([&] { vit::attention_maps(out, other, 0); }).empty());
  other = arch;
  other.image_size = 33;  // not a multiple of the patch size
  CHECK(!argument_error_of([&] { vit::attention_maps(out, other, 0); }).empty());

  // Blocks that disagree on the batch size.
  vit::Output<float> mixed = out;
  mixed.attention[1] = Matrix<float>::Constant(2 * 2 * 17, 17, 1.0f / 17);
  CHECK(!argument_error_of([&] { vit::attention_maps(mixed, arch, 0); }).empty());
}

TEST_CASE("heat colour map: control points, clamping") {
  using C = std::array<std::uint8_t, 3>;
  CHECK(vit::heat_colour(0.0) == C{0, 0, 128});     // dark blue
  CHECK(vit::heat_colour(0.25) == C{0, 128, 255});  // azure
  CHECK(vit::heat_colour(0.45) == C{0, 230, 230});  // cyan
  CHECK(vit::heat_colour(0.70) == C{255, 230, 0});  // yellow
  CHECK(vit::heat_colour(1.0) == C{220, 0, 0});     // red
  CHECK(vit::heat_colour(-3.0) == vit::heat_colour(0.0));
  CHECK(vit::heat_colour(7.0) == vit::heat_colour(1.0));
  CHECK(vit::heat_colour(std::numeric_limits<double>::quiet_NaN()) == vit::heat_colour(0.0));
  // Half-way between dark blue and azure: (0, 64, 191.5 -> 192).
  CHECK(vit::heat_colour(0.125) == C{0, 64, 192});
}

TEST_CASE("bilinear upsampling of a 2x2 grid to 4x4 uses pixel centres") {
  // Pixel x samples x' = (x + 0.5) * 2 / 4 - 0.5 = -0.25, 0.25, 0.75, 1.25,
  // clamped to [0, 1]: weights of column 1 are 0, 1/4, 3/4, 1 (same for rows).
  Matrix<double> g(2, 2);
  g << 0, 1, 2, 3;
  Matrix<double> expected(4, 4);
  expected << 0.0, 0.25, 0.75, 1.0,  //
      0.5, 0.75, 1.25, 1.5,          //
      1.5, 1.75, 2.25, 2.5,          //
      2.0, 2.25, 2.75, 3.0;
  CHECK(max_diff(vit::upsample_bilinear(g, 4, 4), expected) == 0.0);

  // Non-square output: width 4, height 2 keeps the rows (y' = 0, 1).
  const Matrix<double> wide = vit::upsample_bilinear(g, 4, 2);
  CHECK(max_diff(wide.row(0), expected.row(0)) == 0.0);
  CHECK(max_diff(wide.row(1), expected.row(3)) == 0.0);

  // The heat map normalises by the range 3 first: pixel (1, 1) is 0.75 / 3 = 0.25.
  const vit::Image h = vit::heatmap(g, 4, 4);
  const auto px = [&h](int x, int y) {
    return std::array<std::uint8_t, 3>{h.at(x, y, 0), h.at(x, y, 1), h.at(x, y, 2)};
  };
  CHECK(px(1, 1) == vit::heat_colour(0.25));
  CHECK(px(0, 0) == vit::heat_colour(0.0));
  CHECK(px(3, 3) == vit::heat_colour(1.0));
  CHECK(px(2, 1) == vit::heat_colour(1.25 / 3.0));
}

TEST_CASE("heatmap_overlay: size, alpha 0 and 1, the hottest cell is hot") {
  std::mt19937 gen(3);
  std::uniform_int_distribution<int> byte(0, 255);
  vit::Image photo(12, 12);
  for (auto& v : photo.pixels) v = std::uint8_t(byte(gen));

  // 4x4 grid, one hot cell at row 1, column 2; the rest equal and low.
  Matrix<float> grid = Matrix<float>::Constant(4, 4, 0.1f);
  grid(1, 2) = 0.9f;

  const vit::Image half = vit::heatmap_overlay(photo, grid);
  CHECK(half.width == 12);
  CHECK(half.height == 12);
  CHECK(half.pixels.size() == photo.pixels.size());

  CHECK(vit::heatmap_overlay(photo, grid, 0.0f).pixels == photo.pixels);
  const vit::Image heat = vit::heatmap(grid, 12, 12);
  CHECK(vit::heatmap_overlay(photo, grid, 1.0f).pixels == heat.pixels);

  // 3 pixels per cell: the middle pixel of cell (1, 2) is x = 7, y = 4, where
  // x' = 7.5 * 4 / 12 - 0.5 = 2 exactly: the grid maximum, the hot end.
  const std::array<std::uint8_t, 3> hot = vit::heat_colour(1.0), cold = vit::heat_colour(0.0);
  for (int c = 0; c < 3; ++c) {
    CHECK(heat.at(7, 4, c) == hot[std::size_t(c)]);
    CHECK(heat.at(1, 10, c) == cold[std::size_t(c)]);  // cell (3, 0), far from the hot one
    // Blending at alpha 0.5: round((photo + colour) / 2).
    CHECK(int(half.at(7, 4, c)) ==
          int(std::lround(0.5 * photo.at(7, 4, c) + 0.5 * hot[std::size_t(c)])));
  }
  // The reddest pixel (R - B largest) lies in the hot cell.
  int best = -1000, bx = -1, by = -1;
  for (int y = 0; y < 12; ++y)
    for (int x = 0; x < 12; ++x) {
      const int score = int(heat.at(x, y, 0)) - int(heat.at(x, y, 2)) - int(heat.at(x, y, 1));
      if (score > best) best = score, bx = x, by = y;
    }
  CHECK(bx / 3 == 2);
  CHECK(by / 3 == 1);

  // Grids of any scalar type: a double map draws the same.
  CHECK(vit::heatmap(grid.cast<double>(), 12, 12).pixels == heat.pixels);
}

TEST_CASE("heat maps refuse bad arguments") {
  const Matrix<float> grid = Matrix<float>::Ones(2, 2);
  vit::Image img(4, 4);
  CHECK_THROWS_AS(vit::heatmap_overlay(img, grid, 1.5f), vit::argument_error);
  CHECK_THROWS_AS(vit::heatmap_overlay(img, grid, -0.1f), vit::argument_error);
  CHECK_THROWS_AS(vit::heatmap_overlay(vit::Image(), grid), vit::argument_error);
  vit::Image broken(4, 4);
  broken.pixels.pop_back();
  CHECK_THROWS_AS(vit::heatmap_overlay(broken, grid), vit::argument_error);
  CHECK_THROWS_AS(vit::heatmap(Matrix<float>(), 4, 4), vit::argument_error);
  CHECK_THROWS_AS(vit::heatmap(grid, 0, 4), vit::argument_error);
  Matrix<float> nan_grid = grid;
  nan_grid(0, 1) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(vit::heatmap(nan_grid, 4, 4), vit::argument_error);
}
