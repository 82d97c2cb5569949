// Image files: vit::load_image / decode_image / probe_image / write_png
// (vit::image) against Pillow's Image.open(f).convert('RGB').
// References: tests/data/images, made by tests/reference/make_image_cases.py.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "test_support.hpp"
#include "vit/error.hpp"
#include "vit/image.hpp"
#include "vit/io/image_io.hpp"
#include "vit/io/safetensors.hpp"

namespace fs = std::filesystem;

namespace {

const std::string kImages = std::string(VIT_TEST_DATA_DIR) + "/images/";

const vit::io::SafeTensors& expected() {
  static const vit::io::SafeTensors st =
      vit::io::SafeTensors::open(kImages + "expected.safetensors");
  return st;
}

/// A [H, W, 3] uint8 reference tensor as an Image.
vit::Image reference(const std::string& name) {
  const vit::io::TensorInfo& info = expected().info(name);
  REQUIRE(info.dtype == vit::io::DType::U8);
  REQUIRE(info.shape.size() == 3);
  REQUIRE(info.shape[2] == 3);
  vit::Image im(int(info.shape[1]), int(info.shape[0]));
  std::memcpy(im.pixels.data(), expected().raw(name), im.pixels.size());
  return im;
}

/// Largest per-value difference; -1 if the sizes differ.
int max_diff(const vit::Image& a, const vit::Image& b) {
  if (a.width != b.width || a.height != b.height || a.pixels.size() != b.pixels.size()) return -1;
  int m = 0;
  for (std::size_t i = 0; i < a.pixels.size(); ++i)
    m = std::max(m, std::abs(int(a.pixels[i]) - int(b.pixels[i])));
  return m;
}

std::size_t count_diff(const vit::Image& a, const vit::Image& b) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < std::min(a.pixels.size(), b.pixels.size()); ++i)
    n += a.pixels[i] != b.pixels[i];
  return n;
}

std::vector<std::uint8_t> file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f);
  return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(f), {});
}

using vit_test::TempDir;

/// Checks `fn` throws exactly E and that the message contains every one of `parts`.
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

vit::Image pattern(int w, int h) {
  vit::Image im(w, h);
  for (std::size_t i = 0; i < im.pixels.size(); ++i) im.pixels[i] = std::uint8_t(i * 37 + i / 7);
  return im;
}

}  // namespace

TEST_CASE("load_image: lossless formats decode exactly like Pillow's convert('RGB')") {
  // Gray replicated, alpha dropped (colour under alpha 0 kept), palettes expanded
  // (with and without tRNS), 1/4-bit gray scaled to 0..255, 16-bit RGB(A) -> high byte,
  // GIF -> first frame.
  const char* files[] = {
      "rgb.png",     "gray.png",  "gray_alpha.png", "rgba.png",   "palette.png", "palette_trns.png",
      "gray1.png",   "gray4.png", "rgb16.png",      "rgba16.png", "rgb.bmp",     "rgb.tga",
      "rgb_rle.tga", "anim.gif",  "rgb.ppm",        "gray.pgm",   "pixel.png"};
  for (const char* name : files) {
    CAPTURE(name);
    const vit::Image got = vit::load_image(kImages + name);
    const vit::Image want = reference(std::string("decode.") + name);
    REQUIRE(got.width == want.width);
    REQUIRE(got.height == want.height);
    REQUIRE(got.pixels.size() == std::size_t(got.width) * std::size_t(got.height) * 3);
    CHECK(count_diff(got, want) == 0);
  }
  const vit::Image one = vit::load_image(kImages + "pixel.png");
  CHECK(one.width == 1);
  CHECK(one.height == 1);
  CHECK(int(one.at(0, 0, 0)) == 200);
  CHECK(int(one.at(0, 0, 1)) == 17);
  CHECK(int(one.at(0, 0, 2)) == 93);
}

TEST_CASE("load_image: 16-bit gray keeps the high byte, where Pillow clips") {
  // Documented difference (vit/io/image_io.hpp): Pillow 9.4 opens a 16-bit gray PNG
  // as mode "I" and convert('RGB') clips each value to 0..255, so almost every pixel
  // turns white; stb and vit keep v >> 8, as Pillow itself does for 16-bit RGB.
  const vit::Image got = vit::load_image(kImages + "gray16.png");
  const vit::Image high = reference("highbyte.gray16.png");
  const vit::Image pillow = reference("decode.gray16.png");
  CHECK(count_diff(got, high) == 0);
  // Pillow's values: min(v, 255). The first row starts 0, 100, 255, 256.
  CHECK(int(pillow.at(0, 0, 0)) == 0);
  CHECK(int(pillow.at(1, 0, 0)) == 100);
  CHECK(int(pillow.at(2, 0, 0)) == 255);
  CHECK(int(pillow.at(3, 0, 0)) == 255);
  CHECK(int(got.at(1, 0, 0)) == 0);  // 100 >> 8
  CHECK(int(got.at(3, 0, 0)) == 1);  // 256 >> 8
  const std::size_t differ = count_diff(got, pillow);
  MESSAGE("16-bit gray: " << differ << " of " << got.pixels.size()
                          << " values differ from Pillow's clipped conversion");
  CHECK(differ > 0);
}

TEST_CASE("load_image: JPEG within 3 levels of Pillow (stb vs libjpeg-turbo)") {
  for (const char* name : {"photo.jpg", "gray.jpg"}) {
    CAPTURE(name);
    const vit::Image got = vit::load_image(kImages + name);
    const vit::Image want = reference(std::string("decode.") + name);
    const int diff = max_diff(got, want);
    MESSAGE(std::string(name) << ": max difference to Pillow " << diff << " levels, "
                              << count_diff(got, want) << " of " << got.pixels.size()
                              << " values differ");
    CHECK(diff >= 0);
    CHECK(diff <= 3);
  }
}

TEST_CASE("decode_image: from memory, same pixels as load_image") {
  const std::vector<std::uint8_t> bytes = file_bytes(kImages + "palette_trns.png");
  const vit::Image a = vit::decode_image(bytes.data(), bytes.size(), "mem");
  const vit::Image b = vit::load_image(kImages + "palette_trns.png");
  CHECK(max_diff(a, b) == 0);
  check_throws<vit::image_error>([] { vit::decode_image(nullptr, 0, "nothing"); },
                                 {"nothing: ", "empty"});
  check_throws<vit::image_error>([&] { vit::decode_image(bytes.data(), 20, "cut"); }, {"cut: "});
}

TEST_CASE("probe_image: header only") {
  struct Case {
    const char* name;
    int w, h, channels;
  };
  const Case cases[] = {
      {"rgb.png", 32, 24, 3},    {"gray.png", 32, 24, 1},    {"gray_alpha.png", 32, 24, 2},
      {"rgba.png", 32, 24, 4},   {"palette.png", 32, 24, 3}, {"rgb16.png", 32, 24, 3},
      {"gray16.png", 32, 24, 1}, {"photo.jpg", 64, 48, 3},   {"gray.jpg", 64, 48, 1},
      {"anim.gif", 32, 24, 4},   {"rgb.bmp", 32, 24, 3},     {"pixel.png", 1, 1, 3}};
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const vit::ImageInfo info = vit::probe_image(kImages + c.name);
    CHECK(info.width == c.w);
    CHECK(info.height == c.h);
    CHECK(info.channels == c.channels);
  }
  // Beyond the decoding limits, but the header is still reported.
  const vit::ImageInfo huge = vit::probe_image(kImages + "huge.png");
  CHECK(huge.width == 100000);
  CHECK(huge.height == 100000);
  CHECK(huge.channels == 3);
  check_throws<vit::io_error>([] { vit::probe_image(kImages + "missing.png"); },
                              {"missing.png: cannot open"});
  check_throws<vit::image_error>([] { vit::probe_image(kImages + "not_image.png"); },
                                 {"not_image.png: "});
}

TEST_CASE("load_image: errors name the file and the reason") {
  check_throws<vit::io_error>([] { vit::load_image(kImages + "missing.png"); },
                              {kImages + "missing.png: cannot open", "No such file"});
  check_throws<vit::io_error>([] { vit::load_image(kImages); }, {kImages});  // a directory
  check_throws<vit::image_error>([] { vit::load_image(kImages + "truncated.png"); },
                                 {kImages + "truncated.png: cannot decode image: "});
  check_throws<vit::image_error>([] { vit::load_image(kImages + "corrupt.png"); },
                                 {kImages + "corrupt.png: cannot decode image: "});
  check_throws<vit::image_error>([] { vit::load_image(kImages + "not_image.png"); },
                                 {kImages + "not_image.png: cannot decode image: "});
  // A Huffman table with more than 256 codes (found by fuzz_image: it overruns
  // a table inside stb_image 2.27) is refused before stb reads it.
  check_throws<vit::image_error>(
      [] { vit::load_image(kImages + "huffman_overflow.jpg"); },
      {kImages + "huffman_overflow.jpg: ", "Huffman table with", "at most 256"});
  // The header claims 100000x100000: refused from the header, before decoding.
  check_throws<vit::image_error>([] { vit::load_image(kImages + "huge.png"); },
                                 {kImages + "huge.png: ", "100000x100000", "32768"});
  TempDir dir;
  const std::string empty = (dir.path / "empty.png").string();
  std::ofstream(empty).close();
  check_throws<vit::image_error>([&] { vit::load_image(empty); }, {empty + ": empty file"});
  check_throws<vit::image_error>([&] { vit::probe_image(empty); }, {empty + ": empty file"});
}

TEST_CASE("load_image: 16-bit PNM is refused by name, not misread") {
  // stb 2.27 overran its buffer on these (found by fuzz_image) and reads their
  // samples in the wrong byte order: refused with a clear error instead.
  TempDir dir;
  const std::string gray = (dir.path / "gray16.pgm").string();
  const std::string rgb = (dir.path / "rgb16.ppm").string();
  std::ofstream(gray, std::ios::binary)
      << std::string("P5\n2 2\n65535\n\x12\x34\xab\xcd\x00\xff\xff\x00", 21);
  std::ofstream(rgb, std::ios::binary)
      << std::string("P6\n1 1\n1000\n\x01\x02\x03\x04\x05\x06", 18);
  check_throws<vit::image_error>([&] { vit::load_image(gray); }, {gray + ": ", "16-bit PNM"});
  check_throws<vit::image_error>([&] { vit::load_image(rgb); }, {rgb + ": ", "16-bit PNM"});
  // A header number beyond int overflowed inside stb (found by fuzz_image).
  const std::string wide = (dir.path / "wide.pgm").string();
  std::ofstream(wide, std::ios::binary) << "P5\n# comment\n3402424255 1\n255\n";
  check_throws<vit::image_error>([&] { vit::load_image(wide); },
                                 {wide + ": ", "PNM header", "2147483647"});
  // 8-bit PNM still decodes (gray replicated to RGB).
  const std::string gray8 = (dir.path / "gray8.pgm").string();
  std::ofstream(gray8, std::ios::binary) << std::string("P5\n2 1\n255\n\x10\xf0", 13);
  CHECK(vit::load_image(gray8).pixels ==
        std::vector<std::uint8_t>{0x10, 0x10, 0x10, 0xf0, 0xf0, 0xf0});
}

TEST_CASE("load_image: a PNG chunk longer than the file is refused before stb allocates it") {
  // stb 2.27 grew its buffer to a claimed IDAT length first (a 2 GiB
  // allocation from a small file, found by fuzz_image).
  std::vector<std::uint8_t> bytes = file_bytes(kImages + "rgb.png");
  const std::uint8_t idat[4] = {'I', 'D', 'A', 'T'};
  const auto at = std::search(bytes.begin(), bytes.end(), idat, idat + 4);
  REQUIRE(at != bytes.end());
  const std::size_t length_field = std::size_t(at - bytes.begin()) - 4;
  for (int i = 0; i < 4; ++i) bytes[length_field + std::size_t(i)] = i == 0 ? 0x7f : 0xff;
  check_throws<vit::image_error>([&] { vit::decode_image(bytes.data(), bytes.size(), "big.png"); },
                                 {"big.png: ", "truncated PNG", "'IDAT'", "2147483647"});
}

TEST_CASE("load_image: ImageLimits are checked from the header, before decoding") {
  TempDir dir;
  const std::string path = (dir.path / "wide.png").string();
  vit::Image im;
  im.width = 64;
  im.height = 48;
  im.pixels.assign(std::size_t(64) * 48 * 3, 7);
  vit::write_png(path, im);

  CHECK(vit::load_image(path).width == 64);  // the defaults let it through
  vit::ImageLimits exact;
  exact.max_side = 64;
  exact.max_pixels = 64 * 48;
  CHECK(vit::load_image(path, exact).height == 48);  // limits are inclusive

  vit::ImageLimits few;
  few.max_pixels = 64 * 48 - 1;
  check_throws<vit::image_error>([&] { vit::load_image(path, few); },
                                 {path + ": ", "64x48", std::to_string(64 * 48 - 1)});
  vit::ImageLimits narrow;
  narrow.max_side = 63;
  check_throws<vit::image_error>([&] { vit::load_image(path, narrow); }, {path + ": ", "<= 63"});
  const std::vector<std::uint8_t> bytes = file_bytes(path);
  check_throws<vit::image_error>(
      [&] { vit::decode_image(bytes.data(), bytes.size(), "upload", narrow); }, {"upload: "});

  // The default pixel budget: 8192 x 8192, checked from a PNG header alone.
  CHECK(vit::kDefaultMaxImagePixels == std::int64_t{8192} * 8192);
  check_throws<vit::image_error>([] { vit::load_image(kImages + "huge.png"); },
                                 {"100000x100000", std::to_string(vit::kDefaultMaxImagePixels)});

  vit::ImageLimits bad;
  bad.max_pixels = 0;
  check_throws<vit::argument_error>([&] { vit::load_image(path, bad); }, {path, "max_pixels"});
  bad = {};
  bad.max_side = vit::kMaxImageSide + 1;
  check_throws<vit::argument_error>([&] { vit::load_image(path, bad); }, {"max_side"});
}

TEST_CASE("write_png: round trip, atomic replacement, nothing left behind") {
  TempDir dir;
  const std::string path = (dir.path / "out.png").string();
  const vit::Image a = pattern(13, 7);
  vit::write_png(path, a);
  CHECK(max_diff(vit::load_image(path), a) == 0);
  CHECK(vit::probe_image(path).channels == 3);

  // Replacing an existing file; only the target remains in the folder.
  const vit::Image b = pattern(1, 1);
  vit::write_png(path, b);
  CHECK(max_diff(vit::load_image(path), b) == 0);
  CHECK(dir.entries() == std::vector<std::string>{"out.png"});

  // A relative path (temporary file in the current folder).
  {
    const fs::path cwd = fs::current_path();
    fs::current_path(dir.path);
    vit::write_png("relative.png", b);
    fs::current_path(cwd);
    CHECK(max_diff(vit::load_image((dir.path / "relative.png").string()), b) == 0);
  }

  // Failures: io_error naming the path, and no temporary file left.
  const std::string no_dir = (dir.path / "no" / "such" / "dir.png").string();
  check_throws<vit::io_error>([&] { vit::write_png(no_dir, a); }, {no_dir + ": "});
  fs::create_directory(dir.path / "folder.png");
  const std::string folder = (dir.path / "folder.png").string();
  check_throws<vit::io_error>([&] { vit::write_png(folder, a); }, {folder + ": "});
  CHECK(dir.entries() == std::vector<std::string>{"folder.png", "out.png", "relative.png"});

  // Bad images are argument errors; the file is untouched.
  check_throws<vit::argument_error>([&] { vit::write_png(path, vit::Image()); }, {path});
  vit::Image bad = pattern(4, 4);
  bad.pixels.pop_back();
  check_throws<vit::argument_error>([&] { vit::write_png(path, bad); }, {path, "47 bytes"});
  CHECK(max_diff(vit::load_image(path), b) == 0);
}
