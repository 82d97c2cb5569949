// vit-train's curves.png: the bitmap font draws each glyph as its picture and
// advances by a fixed width, round tick steps, and a rendered plot carries its
// legend, titles, tick values and axis labels as text.
#include <doctest/doctest.h>

#include <algorithm>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "bitmap_font.hpp"
#include "plot.hpp"
#include "test_support.hpp"
#include "vit/image.hpp"
#include "vit/io/image_io.hpp"

namespace bf = vit_examples::bitmap_font;
using vit_examples::Align;
using vit_examples::Canvas;
using vit_examples::Rgb;

namespace {

const Rgb kInk{0, 0, 0};

bool inked(const vit::Image& im, int x, int y) { return im.at(x, y, 0) != 255; }

// s drawn at (x0, y0) on a white w x h canvas.
vit::Image draw(const std::string& s, int scale, int x0 = 2, int y0 = 3, int w = 80, int h = 30) {
  Canvas c(w, h);
  c.text(s, x0, y0, kInk, scale);
  return c.image();
}

// Is `text` somewhere in im exactly as the font draws it (the plot's text colour),
// with a blank pixel all around, so a label touched by a line does not count?
bool contains_text(const vit::Image& im, const std::string& text, int scale = 2) {
  const int pw = bf::text_width(text, scale) + 2, ph = bf::kHeight * scale + 2;
  Canvas pc(pw, ph);
  pc.text(text, 1, 1, Rgb{40, 40, 40}, scale);
  const vit::Image& p = pc.image();
  for (int y = 0; y + ph <= im.height; ++y)
    for (int x = 0; x + pw <= im.width; ++x) {
      bool same = true;
      for (int py = 0; py < ph && same; ++py)
        for (int px = 0; px < pw && same; ++px)
          for (int ch = 0; ch < 3 && same; ++ch)
            same = im.at(x + px, y + py, ch) == p.at(px, py, ch);
      if (same) return true;
    }
  return false;
}

struct Rec {
  int epoch;
  double train_loss, train_top1, val_loss, val_top1;
};

}  // namespace

TEST_CASE("bitmap font: a glyph is drawn pixel for pixel as its picture, at 1x and 2x") {
  // Independent copies of two pictures: '4' (first sheet) and 'g' (a later sheet,
  // with a descender), so a shifted column or row in the table shows.
  const std::vector<std::pair<char, std::vector<std::string>>> pictures = {
      {'4', {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#.", ".....", "....."}},
      {'g', {".....", ".....", ".####", "#...#", "#...#", "#...#", ".####", "....#", ".###."}}};
  for (const auto& picture : pictures)
    for (const int scale : {1, 2}) {
      const char ch = picture.first;
      const std::vector<std::string>& rows = picture.second;
      CAPTURE(ch);
      CAPTURE(scale);
      const vit::Image im = draw(std::string(1, ch), scale);
      for (int y = 0; y < im.height; ++y)
        for (int x = 0; x < im.width; ++x) {
          const int gx = (x - 2) / scale, gy = (y - 3) / scale;
          const bool in_cell = x >= 2 && y >= 3 && gx < bf::kWidth && gy < bf::kHeight;
          CAPTURE(x);
          CAPTURE(y);
          REQUIRE(inked(im, x, y) == (in_cell && rows[gy][gx] == '#'));
        }
    }
}

TEST_CASE("bitmap font: every label character has its own glyph, others draw as '?'") {
  const std::string needed = "0123456789abcdefghijklmnopqrstuvwxyz.,:%-+()/?";
  std::set<bf::Glyph> seen;
  for (const char ch : needed) {
    CAPTURE(ch);
    CHECK(bf::has_glyph(ch));
    CHECK(bf::glyph(ch) != bf::Glyph{});  // has ink
    CHECK(seen.insert(bf::glyph(ch)).second);
  }
  CHECK(bf::has_glyph(' '));
  CHECK(bf::glyph(' ') == bf::Glyph{});
  CHECK_FALSE(bf::has_glyph('A'));
  CHECK(bf::glyph('A') == bf::glyph('?'));
  CHECK(bf::glyph('\x80') == bf::glyph('?'));
  CHECK(draw("0", 2).pixels != draw("8", 2).pixels);
}

TEST_CASE("bitmap font: text advances one cell per character, alignment uses text_width") {
  for (const int scale : {1, 2}) {
    CAPTURE(scale);
    Canvas two(80, 30);
    two.text("a", 2, 3, kInk, scale);
    two.text("7", 2 + bf::kAdvance * scale, 3, kInk, scale);
    CHECK(draw("a7", scale).pixels == two.image().pixels);
    CHECK(bf::text_width("a7", scale) == (bf::kAdvance + bf::kWidth) * scale);
  }
  CHECK(bf::text_width("", 2) == 0);
  // "0" has ink in its first and last column: right-aligned at x = 50 its ink ends
  // at column 49; centred at row 20 its 14 rows (7 at 2x) are 13..26.
  Canvas c(80, 40);
  c.text("0", 50, 20, kInk, 2, Align::end, Align::center);
  int min_x = 80, max_x = -1, min_y = 40, max_y = -1;
  for (int y = 0; y < 40; ++y)
    for (int x = 0; x < 80; ++x)
      if (inked(c.image(), x, y)) {
        min_x = std::min(min_x, x);
        max_x = std::max(max_x, x);
        min_y = std::min(min_y, y);
        max_y = std::max(max_y, y);
      }
  CHECK(max_x == 49);
  CHECK(min_x == 40);
  CHECK(min_y == 13);
  CHECK(max_y == 26);
}

TEST_CASE("round_ticks: 1, 2 or 5 times a power of ten, up to the first tick above the max") {
  const vit_examples::Ticks a = vit_examples::round_ticks(2.08);
  CHECK(a.step == doctest::Approx(0.5));
  CHECK(a.top == doctest::Approx(2.5));
  CHECK(a.count() == 5);
  CHECK(a.label(0) == "0.0");
  CHECK(a.label(3) == "1.5");
  const vit_examples::Ticks b = vit_examples::round_ticks(37);
  CHECK(b.step == doctest::Approx(10));
  CHECK(b.top == doctest::Approx(40));
  CHECK(b.label(4) == "40");
  const vit_examples::Ticks d = vit_examples::round_ticks(0.9);
  CHECK(d.step == doctest::Approx(0.2));
  CHECK(d.top == doctest::Approx(1.0));
  CHECK(d.label(2) == "0.4");
  const vit_examples::Ticks c = vit_examples::round_ticks(0.05);
  CHECK(c.label(1) == "0.01");
  CHECK(c.count() == 5);
  CHECK(vit_examples::round_ticks(2.5).top == doctest::Approx(2.5));  // an exact tick stays
  CHECK(vit_examples::round_ticks(0).top == doctest::Approx(1));      // nothing to plot yet
}

TEST_CASE("render_curves: legend, titles, tick values and axis labels are in the image") {
  const std::vector<Rec> log = {
      {1, 2.08, 0.24, 1.89, 0.29}, {2, 1.94, 0.30, 1.82, 0.31}, {3, 1.90, 0.33, 1.84, 0.32}};
  const vit::Image im = vit_examples::render_curves(log);
  REQUIRE(im.width > 400);
  for (const char* s : {"train", "validation", "loss", "top-1 accuracy (%)", "epoch", "0.0", "0.5",
                        "2.5", "0", "20", "100", "1", "3"}) {
    CAPTURE(s);
    CHECK(contains_text(im, s));
  }
  CHECK_FALSE(contains_text(im, "3.0"));  // the loss axis ends at 2.5

  // Ten times the loss: the loss labels follow the values.
  std::vector<Rec> big = log;
  for (Rec& r : big) {
    r.train_loss *= 10;
    r.val_loss *= 10;
  }
  const vit::Image im_big = vit_examples::render_curves(big);
  CHECK(contains_text(im_big, "25"));
  CHECK_FALSE(contains_text(im_big, "2.5"));

  // plot_curves writes the same pixels as a PNG.
  const vit_test::TempDir tmp("vit_plot_");
  vit_examples::plot_curves(tmp / "curves.png", log);
  CHECK(vit::load_image(tmp / "curves.png").pixels == im.pixels);
}
