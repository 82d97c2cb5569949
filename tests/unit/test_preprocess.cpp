// Preprocessing (vit/preprocess.hpp) against Pillow, torchvision and timm:
//   * tests/data/timm_vit_tiny_p16_224/preprocess: timm's eval transform of a real photo;
//   * tests/data/images/expected.safetensors: Pillow resizes (every filter, shrinking,
//     enlarging, one dimension only, to and from 1x1) and torchvision Resize + CenterCrop,
//     made by tests/reference/make_image_cases.py.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "vit/config.hpp"
#include "vit/error.hpp"
#include "vit/image.hpp"
#include "vit/io/image_io.hpp"
#include "vit/io/safetensors.hpp"
#include "vit/preprocess.hpp"
#include "vit/tensor.hpp"

namespace {

const std::string kData = VIT_TEST_DATA_DIR;

const vit::io::SafeTensors& images_expected() {
  static const vit::io::SafeTensors st =
      vit::io::SafeTensors::open(kData + "/images/expected.safetensors");
  return st;
}

vit::Image u8_image(const vit::io::SafeTensors& st, const std::string& name) {
  const vit::io::TensorInfo& info = st.info(name);
  REQUIRE(info.dtype == vit::io::DType::U8);
  REQUIRE(info.shape.size() == 3);
  REQUIRE(info.shape[2] == 3);
  vit::Image im(int(info.shape[1]), int(info.shape[0]));
  std::memcpy(im.pixels.data(), st.raw(name), im.pixels.size());
  return im;
}

std::size_t count_diff(const vit::Image& a, const vit::Image& b) {
  if (a.width != b.width || a.height != b.height) return std::numeric_limits<std::size_t>::max();
  std::size_t n = 0;
  for (std::size_t i = 0; i < a.pixels.size(); ++i) n += a.pixels[i] != b.pixels[i];
  return n;
}

/// Pixel (x, y) holds (x, y, 7): crops can be read off their corner.
vit::Image coordinates(int w, int h) {
  vit::Image im(w, h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      im.at(x, y, 0) = std::uint8_t(x);
      im.at(x, y, 1) = std::uint8_t(y);
      im.at(x, y, 2) = 7;
    }
  return im;
}

template <class E, class Fn>
void check_throws(Fn&& fn, std::initializer_list<std::string> parts) {
  bool thrown = false;
  try {
    fn();
  } catch (const E& e) {
    thrown = true;
    const std::string what = e.what();
    INFO("message: " << what);
    for (const std::string& p : parts) CHECK(what.find(p) != std::string::npos);
  }
  CHECK(thrown);
}

}  // namespace

TEST_CASE("parse_interpolation: timm / torchvision names") {
  using vit::Interpolation;
  const std::pair<const char*, Interpolation> names[] = {
      {"nearest", Interpolation::nearest}, {"bilinear", Interpolation::bilinear},
      {"bicubic", Interpolation::bicubic}, {"lanczos", Interpolation::lanczos},
      {"box", Interpolation::box},         {"hamming", Interpolation::hamming}};
  for (const auto& entry : names) {
    const std::string name = entry.first;  // (a structured binding cannot be captured in C++17)
    const Interpolation f = entry.second;
    CAPTURE(name);
    CHECK(vit::parse_interpolation(name) == f);
    CHECK(std::string(vit::interpolation_name(f)) == name);
  }
  check_throws<vit::argument_error>([] { vit::parse_interpolation("cubic"); },
                                    {"'cubic'", "bicubic"});
  check_throws<vit::argument_error>([] { vit::parse_interpolation("Bicubic"); }, {"'Bicubic'"});
  check_throws<vit::argument_error>([] { vit::parse_interpolation(""); }, {"''"});
}

TEST_CASE("timm fixture: Pillow bicubic resize and eval transform of a photo") {
  const std::string dir = kData + "/timm_vit_tiny_p16_224/preprocess/";
  const vit::io::SafeTensors st = vit::io::SafeTensors::open(dir + "expected.safetensors");
  const vit::Image photo = vit::load_image(dir + "photo.png");
  REQUIRE(photo.width == 451);
  REQUIRE(photo.height == 300);

  // Step 1: 451x300 -> 372x248, Pillow BICUBIC: every value equal.
  vit::DataConfig data;  // timm ViT defaults: 224, crop_pct 0.9, bicubic, mean = std = 0.5
  const std::array<int, 2> size = vit::eval_resize_size(photo.width, photo.height, data);
  CHECK(size[0] == 372);
  CHECK(size[1] == 248);
  const vit::Image resized = vit::resize(photo, 372, 248, vit::Interpolation::bicubic);
  const vit::Image want = u8_image(st, "resized_u8");
  const std::size_t differ = count_diff(resized, want);
  MESSAGE("resize 451x300 -> 372x248: " << differ << " of " << want.pixels.size()
                                        << " values differ from Pillow");
  CHECK(differ == 0);

  // Steps 2-3: centre crop (top 12, left 74) and normalisation, vs pixel_values.
  const std::vector<float> expected = st.read<float>("pixel_values");
  REQUIRE(expected.size() == 3u * 224 * 224);
  const vit::Image ready = vit::eval_transform(photo, data);
  REQUIRE(ready.width == 224);
  REQUIRE(ready.height == 224);
  CHECK(count_diff(ready, vit::center_crop(resized, 224, 224)) == 0);
  std::vector<float> got(expected.size());
  vit::to_tensor(ready, data.mean, data.std, got.data());
  float max_abs = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    max_abs = std::max(max_abs, std::abs(got[i] - expected[i]));
  MESSAGE("eval_transform + to_tensor vs pixel_values: max abs difference " << max_abs);
  CHECK(max_abs <= 1e-6f);

  // The same through preprocess(), into rows of a batch, in float and double.
  vit::Matrix<float> batch(2, 3 * 224 * 224);
  batch.setZero();
  vit::preprocess<float>(photo, data, batch.row(1));
  CHECK(batch.row(0).isZero());
  CHECK(std::memcmp(batch.row(1).data(), got.data(), got.size() * sizeof(float)) == 0);
  vit::Matrix<double> batch64(1, 3 * 224 * 224);
  vit::preprocess<double>(photo, data, batch64.row(0));
  double max64 = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    max64 = std::max(max64, std::abs(batch64(0, vit::Index(i)) - double(got[i])));
  CHECK(max64 == 0.0);  // float32 arithmetic, then widened

  vit::Matrix<float> wrong(1, 3 * 224 * 224 - 1);
  check_throws<vit::argument_error>([&] { vit::preprocess<float>(photo, data, wrong.row(0)); },
                                    {"150527", "150528"});
}

TEST_CASE("resize: equals Pillow's Image.resize for every filter and size") {
  // All reference resizes: resize.<source>.<filter>.<W>x<H>.
  const vit::io::SafeTensors& st = images_expected();
  int cases = 0;
  for (const vit::io::TensorInfo& t : st.tensors()) {
    const std::string& name = t.name;
    if (name.rfind("resize.", 0) != 0) continue;
    const std::size_t a = name.find('.', 7), b = name.find('.', a + 1);
    REQUIRE(b != std::string::npos);
    const std::string source = name.substr(7, a - 7);
    const std::string filter = name.substr(a + 1, b - a - 1);
    const vit::Image want = u8_image(st, name);
    const vit::Image src = u8_image(st, "source." + source);
    CAPTURE(name);
    const vit::Image got =
        vit::resize(src, want.width, want.height, vit::parse_interpolation(filter));
    CHECK(got.width == want.width);
    CHECK(got.height == want.height);
    CHECK(count_diff(got, want) == 0);
    ++cases;
  }
  MESSAGE(cases << " Pillow resizes compared");
  CHECK(cases == 6 * (9 + 2 + 3));
}

TEST_CASE("resize: same size is a copy, 1x1 in and out, bad sizes") {
  const vit::Image src = u8_image(images_expected(), "source.rgb");
  for (const char* f : {"nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"}) {
    CAPTURE(f);
    const vit::Interpolation filter = vit::parse_interpolation(f);
    CHECK(count_diff(vit::resize(src, src.width, src.height, filter), src) == 0);
    // From 1x1 every filter can only repeat the pixel.
    vit::Image one(1, 1);
    one.pixels = {200, 17, 93};
    const vit::Image up = vit::resize(one, 4, 6, filter);
    for (int y = 0; y < 6; ++y)
      for (int x = 0; x < 4; ++x) {
        CHECK(int(up.at(x, y, 0)) == 200);
        CHECK(int(up.at(x, y, 2)) == 93);
      }
    CHECK(count_diff(vit::resize(one, 1, 1, filter), one) == 0);
  }
  check_throws<vit::argument_error>([&] { vit::resize(src, 0, 5, vit::Interpolation::bicubic); },
                                    {"0x5"});
  check_throws<vit::argument_error>(
      [&] { vit::resize(src, 40000, 5, vit::Interpolation::bicubic); }, {"40000x5"});
  check_throws<vit::argument_error>(
      [&] { vit::resize(vit::Image(), 5, 5, vit::Interpolation::bicubic); }, {"0x0"});
  vit::Image bad = src;
  bad.pixels.resize(10);
  check_throws<vit::argument_error>([&] { vit::resize(bad, 5, 5, vit::Interpolation::box); },
                                    {"10 bytes"});
}

TEST_CASE("center_crop: torchvision's rounding (halves to even)") {
  // Offset = int(round(margin / 2)) with Python's round: 3.5 -> 4, 2.5 -> 2, 0.5 -> 0, 1.5 -> 2.
  struct Case {
    int size, crop, offset;
  };
  const Case cases[] = {{17, 10, 4}, {15, 10, 2},    {12, 11, 0},    {13, 10, 2},   {20, 10, 5},
                        {10, 10, 0}, {373, 224, 74}, {375, 224, 76}, {372, 224, 74}};
  for (const Case& c : cases) {
    CAPTURE(c.size);
    CAPTURE(c.crop);
    // Horizontal and vertical margins go through the same rule.
    const vit::Image wide = vit::center_crop(coordinates(c.size, 5), c.crop, 3);
    CHECK(int(wide.at(0, 0, 0)) == c.offset % 256);
    CHECK(int(wide.at(0, 0, 1)) == 1);
    const vit::Image tall = vit::center_crop(coordinates(5, c.size), 3, c.crop);
    CHECK(int(tall.at(0, 0, 1)) == c.offset % 256);
    CHECK(int(tall.at(0, 0, 0)) == 1);
  }
}

TEST_CASE("center_crop: zero padding where the crop is larger (torchvision split)") {
  // 3x2 -> 6x5: pad left (6-3)/2 = 1, right 2; top (5-2)/2 = 1, bottom 2.
  const vit::Image in = coordinates(3, 2);
  const vit::Image out = vit::center_crop(in, 6, 5);
  REQUIRE(out.width == 6);
  REQUIRE(out.height == 5);
  for (int y = 0; y < 5; ++y)
    for (int x = 0; x < 6; ++x) {
      CAPTURE(x);
      CAPTURE(y);
      const bool inside = x >= 1 && x < 4 && y >= 1 && y < 3;
      CHECK(int(out.at(x, y, 2)) == (inside ? 7 : 0));
      if (inside) {
        CHECK(int(out.at(x, y, 0)) == x - 1);
        CHECK(int(out.at(x, y, 1)) == y - 1);
      }
    }
  // Wider crop but shorter: pad x, crop y (margin 5 -> offset 2).
  const vit::Image mixed = vit::center_crop(coordinates(4, 9), 7, 4);
  CHECK(int(mixed.at(0, 0, 2)) == 0);  // padding column (left pad 1)
  CHECK(int(mixed.at(1, 0, 0)) == 0);
  CHECK(int(mixed.at(1, 0, 1)) == 2);
  CHECK(int(mixed.at(4, 3, 0)) == 3);
  CHECK(int(mixed.at(4, 3, 1)) == 5);
  CHECK(int(mixed.at(5, 0, 2)) == 0);  // right pad 2
  // 1x1 -> 3x3: the pixel in the middle.
  vit::Image one(1, 1);
  one.pixels = {9, 8, 7};
  const vit::Image c = vit::center_crop(one, 3, 3);
  CHECK(int(c.at(1, 1, 0)) == 9);
  CHECK(int(c.at(0, 0, 0)) == 0);
  CHECK(int(c.at(2, 2, 2)) == 0);
  check_throws<vit::argument_error>([&] { vit::center_crop(in, 0, 3); }, {"0x3"});
}

TEST_CASE("eval_transform: torchvision Resize + CenterCrop references") {
  // (tensor, input_size, crop_pct, interpolation), as EVAL_CASES in make_image_cases.py.
  struct Case {
    const char* tensor;
    const char* source;
    int size;
    double crop_pct;
    const char* interpolation;
  };
  const Case cases[] = {
      {"eval.rgb.s20_pct875_bicubic", "source.rgb", 20, 0.875, "bicubic"},
      {"eval.rgb.s28_pct100_bilinear", "source.rgb", 28, 1.0, "bilinear"},
      {"eval.rgb.s30_pct120_nearest", "source.rgb", 30, 1.2, "nearest"},  // pads
      {"eval.odd.s16_pct90_lanczos", "source.odd", 16, 0.9, "lanczos"},   // no resize
      {"eval.odd_t.s12_pct95_hamming", "source.odd_t", 12, 0.95, "hamming"},
      {"eval.odd_t.s9_pct80_box", "source.odd_t", 9, 0.8, "box"},
  };
  const vit::io::SafeTensors& st = images_expected();
  for (const Case& c : cases) {
    CAPTURE(c.tensor);
    vit::DataConfig data;
    data.input_size = c.size;
    data.crop_pct = c.crop_pct;
    data.interpolation = c.interpolation;
    const vit::Image got = vit::eval_transform(u8_image(st, c.source), data);
    CHECK(count_diff(got, u8_image(st, c.tensor)) == 0);
  }
}

TEST_CASE("eval_transform: sizes, squash, and configuration errors") {
  vit::DataConfig data;
  using A = std::array<int, 2>;
  CHECK(vit::eval_resize_size(451, 300, data) == A{372, 248});
  CHECK(vit::eval_resize_size(300, 451, data) == A{248, 372});
  CHECK(vit::eval_resize_size(300, 300, data) == A{248, 248});
  data.crop_pct = 1.0;
  CHECK(vit::eval_resize_size(451, 300, data) == A{336, 224});  // int(224 * 451 / 300) = 336

  // squash (Hugging Face): straight to S x S, whatever crop_pct says.
  const vit::Image src = u8_image(images_expected(), "source.rgb");
  vit::DataConfig squash;
  squash.input_size = 16;
  squash.crop_mode = "squash";
  squash.crop_pct = 0.5;
  squash.interpolation = "bilinear";
  CHECK(count_diff(vit::eval_transform(src, squash),
                   vit::resize(src, 16, 16, vit::Interpolation::bilinear)) == 0);

  const auto fails = [&](vit::DataConfig bad, std::initializer_list<std::string> parts) {
    check_throws<vit::argument_error>([&] { vit::eval_transform(src, bad); }, parts);
  };
  vit::DataConfig bad;
  for (double pct : {0.0, -0.5, std::nan(""), std::numeric_limits<double>::infinity()}) {
    CAPTURE(pct);
    bad = vit::DataConfig();
    bad.crop_pct = pct;
    fails(bad, {"crop_pct"});
  }
  bad = vit::DataConfig();
  bad.crop_pct = 1e-6;  // shorter side 2.24e8
  fails(bad, {"crop_pct"});
  bad = vit::DataConfig();
  bad.input_size = 0;
  fails(bad, {"input_size"});
  bad = vit::DataConfig();
  bad.crop_mode = "border";
  fails(bad, {"crop_mode", "'border'"});
  bad = vit::DataConfig();
  bad.interpolation = "area";
  fails(bad, {"'area'"});
  // A very elongated image whose long side would exceed the limits.
  check_throws<vit::argument_error>([] { vit::eval_resize_size(1, 1000, vit::DataConfig()); },
                                    {"crop_pct"});
}

TEST_CASE("to_tensor: float32 (u8 / 255 - mean) / std, channel planes") {
  vit::Image im(2, 1);
  im.pixels = {0, 128, 255, 1, 2, 3};  // pixel 0 = (0, 128, 255), pixel 1 = (1, 2, 3)
  const std::array<double, 3> mean{0.485, 0.456, 0.406}, std{0.229, 0.224, 0.225};
  float out[6];
  vit::to_tensor(im, mean, std, out);
  const auto ref = [&](int v, int c) {
    return (float(v) / 255.f - float(mean[std::size_t(c)])) / float(std[std::size_t(c)]);
  };
  // CHW: [R(p0), R(p1), G(p0), G(p1), B(p0), B(p1)].
  CHECK(out[0] == ref(0, 0));
  CHECK(out[1] == ref(1, 0));
  CHECK(out[2] == ref(128, 1));
  CHECK(out[3] == ref(2, 1));
  CHECK(out[4] == ref(255, 2));
  CHECK(out[5] == ref(3, 2));
  const std::array<double, 3> half{0.5, 0.5, 0.5};
  vit::to_tensor(im, half, half, out);
  CHECK(out[0] == -1.0f);
  CHECK(out[4] == 1.0f);
  double out64[6];
  vit::to_tensor(im, mean, std, out64);
  CHECK(out64[2] == double(ref(128, 1)));
  check_throws<vit::argument_error>(
      [&] {
        vit::to_tensor(im, mean, std::array<double, 3>{0.2, 0.0, 0.2}, out);
      },
      {"std"});
  check_throws<vit::argument_error>([&] { vit::to_tensor(vit::Image(), mean, std, out); },
                                    {"to_tensor"});
}
