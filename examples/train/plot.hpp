// The loss / accuracy curves of a training run as a PNG: left panel loss (0 to a
// round value at or above the largest loss), right panel top-1 accuracy (0 to
// 100%), train blue and validation orange, x: epochs. Legend, panel titles, tick
// values and axis labels are drawn with our own bitmap font (bitmap_font.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bitmap_font.hpp"
#include "vit/image.hpp"
#include "vit/io/image_io.hpp"

namespace vit_examples {

struct Rgb {
  std::uint8_t r, g, b;
};

enum class Align { start, center, end };

class Canvas {
 public:
  Canvas(int w, int h) : img_(w, h) { std::fill(img_.pixels.begin(), img_.pixels.end(), 255); }
  void dot(int x, int y, Rgb c, int radius = 1) {
    for (int dy = -radius; dy <= radius; ++dy)
      for (int dx = -radius; dx <= radius; ++dx) set(x + dx, y + dy, c);
  }
  void line(int x0, int y0, int x1, int y1, Rgb c, int radius = 1) {
    const int steps = std::max({std::abs(x1 - x0), std::abs(y1 - y0), 1});
    for (int i = 0; i <= steps; ++i)
      dot(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps, c, radius);
  }
  /// Text with its left / centre / right (ax) at x and the top / middle / bottom
  /// of its digit height (ay) at y: Align::center on both centres a number on a tick.
  void text(std::string_view s, int x, int y, Rgb c, int scale, Align ax = Align::start,
            Align ay = Align::start) {
    const int w = bitmap_font::text_width(s, scale), h = bitmap_font::kAscent * scale;
    x -= ax == Align::center ? w / 2 : ax == Align::end ? w : 0;
    y -= ay == Align::center ? h / 2 : ay == Align::end ? h : 0;
    bitmap_font::draw_text(s, x, y, scale, [&](int px, int py) { set(px, py, c); });
  }
  const vit::Image& image() const { return img_; }

 private:
  void set(int x, int y, Rgb c) {
    if (x < 0 || y < 0 || x >= img_.width || y >= img_.height) return;
    std::uint8_t* p = &img_.pixels[(std::size_t(y) * img_.width + x) * 3];
    p[0] = c.r;
    p[1] = c.g;
    p[2] = c.b;
  }
  vit::Image img_;
};

/// Ticks 0, step, ..., top of a value axis.
struct Ticks {
  double step, top;
  int decimals;  // enough to tell the labels apart
  int count() const { return int(std::lround(top / step)); }
  std::string label(int i) const {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, i * step);
    return buf;
  }
};

/// About `target` steps of 1, 2 or 5 times a power of ten, up to the first tick
/// at or above max: labels a reader can interpolate between.
inline Ticks round_ticks(double max, int target = 5) {
  if (!(max > 0) || !std::isfinite(max)) max = 1;
  const double raw = max / target, mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = 10 * mag;
  for (const double m : {1.0, 2.0, 5.0})
    if (m * mag >= raw * (1 - 1e-9)) {
      step = m * mag;
      break;
    }
  const int n = std::max(1, int(std::ceil(max / step - 1e-9)));
  return {step, n * step, std::max(0, -int(std::floor(std::log10(step) + 1e-9)))};
}

/// Records: a vector of structs with epoch, train_loss, val_loss, train_top1, val_top1
/// (top-1 as fractions).
template <class Records>
vit::Image render_curves(const Records& log) {
  namespace bf = bitmap_font;
  const int scale = 2;  // the 5x9 font doubled: readable without zooming in
  const int w = 960, h = 440, margin = 16, glyph_h = bf::kAscent * scale;
  const Rgb ink{40, 40, 40}, axis{90, 90, 90}, grid{225, 225, 225}, train{31, 119, 180},
      val{255, 127, 14};
  Canvas c(w, h);

  double max_loss = 0;
  for (const auto& r : log)
    for (const double v : {r.train_loss, r.val_loss})
      if (std::isfinite(v)) max_loss = std::max(max_loss, v);
  // The floor keeps the labels short when every loss is ~0 (or there is no log yet).
  const Ticks loss = round_ticks(max_loss > 0 ? std::max(max_loss, 1e-3) : 1.0);
  const Ticks percent{20, 100, 0};
  const int epochs = log.empty() ? 1 : std::max(1, log.back().epoch);

  // Left of each panel: its widest tick label, a gap and the tick mark.
  auto gutter = [&](const Ticks& t) {
    int widest = 0;
    for (int i = 0; i <= t.count(); ++i)
      widest = std::max(widest, bf::text_width(t.label(i), scale));
    return widest + 12;
  };
  const std::string last_epoch = std::to_string(epochs);
  const int panel_gap = 40, right_margin = margin + bf::text_width(last_epoch, scale) / 2;
  const int left0 = margin + gutter(loss);
  const int panel = (w - left0 - panel_gap - gutter(percent) - right_margin) / 2;
  const int left1 = left0 + panel + panel_gap + gutter(percent);
  // Rows from the top: legend, panel titles, the panels, epoch numbers, "epoch".
  const int legend_y = margin, title_y = 40, top = 72, bottom = h - 60;

  auto x_of = [&](int left, int epoch) { return left + (panel * epoch) / epochs; };
  auto y_of = [&](double v, double max) {
    const double f = v / max;
    return bottom -
           int(std::lround((bottom - top) * (std::isfinite(f) ? std::clamp(f, 0.0, 1.0) : 1.0)));
  };

  // Label every x_step-th epoch, x_step 1, 2, 5, 10, 20, ... so the numbers do not touch.
  const int number_w = bf::text_width(last_epoch, scale) + 16;
  const int steps[] = {1, 2, 5};
  int x_step = 1;
  for (int i = 1; (epochs / x_step + 1) * number_w > panel && x_step < epochs; ++i) {
    x_step = steps[i % 3];
    for (int k = 0; k < i / 3; ++k) x_step *= 10;
  }

  auto frame = [&](int left, const Ticks& t, std::string_view title) {
    for (int i = 1; i <= 2 * t.count(); ++i) {  // grid at half steps, labels at whole ones
      const int y = y_of(i * t.step / 2, t.top);
      c.line(left, y, left + panel, y, grid, 0);
    }
    c.line(left, bottom, left + panel, bottom, axis);
    c.line(left, top, left, bottom, axis);
    for (int i = 0; i <= t.count(); ++i) {
      const int y = y_of(i * t.step, t.top);
      c.line(left - 5, y, left, y, axis, 0);
      c.text(t.label(i), left - 9, y, ink, scale, Align::end, Align::center);
    }
    for (int e = 0; e <= epochs; e += x_step) {
      const int x = x_of(left, e);
      c.line(x, bottom, x, bottom + 5, axis, 0);
      c.text(std::to_string(e), x, bottom + 10, ink, scale, Align::center);
    }
    c.text("epoch", left + panel / 2, bottom + 34, ink, scale, Align::center);
    c.text(title, left + panel / 2, title_y, ink, scale, Align::center);
  };
  frame(left0, loss, "loss");
  frame(left1, percent, "top-1 accuracy (%)");

  // Legend, centred on the image: a stroke of each curve's colour, then its name.
  const int swatch = 28, item_gap = 36;
  const int legend_w = 2 * (swatch + 8) + bf::text_width("train", scale) + item_gap +
                       bf::text_width("validation", scale);
  int lx = (w - legend_w) / 2;
  const int ly = legend_y + glyph_h / 2;
  for (const auto& [color, name] : {std::pair{train, "train"}, std::pair{val, "validation"}}) {
    c.line(lx, ly, lx + swatch, ly, color);
    c.dot(lx + swatch / 2, ly, color, 2);
    c.text(name, lx + swatch + 8, ly, ink, scale, Align::start, Align::center);
    lx += swatch + 8 + bf::text_width(name, scale) + item_gap;
  }

  auto curve = [&](int left, double max, Rgb color, auto value) {
    int px = -1, py = -1;
    for (const auto& r : log) {
      const int x = x_of(left, r.epoch), y = y_of(value(r), max);
      if (px >= 0) c.line(px, py, x, y, color);
      c.dot(x, y, color, 2);
      px = x;
      py = y;
    }
  };
  curve(left0, loss.top, train, [](const auto& r) { return r.train_loss; });
  curve(left0, loss.top, val, [](const auto& r) { return r.val_loss; });
  curve(left1, 100.0, train, [](const auto& r) { return 100 * r.train_top1; });
  curve(left1, 100.0, val, [](const auto& r) { return 100 * r.val_top1; });
  return c.image();
}

template <class Records>
void plot_curves(const std::string& path, const Records& log) {
  vit::write_png(path, render_curves(log));
}

}  // namespace vit_examples
