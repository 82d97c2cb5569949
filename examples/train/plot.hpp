// The loss / accuracy curves of a training run as a PNG: left panel loss
// (train blue, validation orange, from 0 to the largest loss), right panel
// top-1 accuracy (same colours, 0 to 100%, grid lines every 10%). x: epochs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "vit/image.hpp"
#include "vit/io/image_io.hpp"

namespace vit_examples {

struct Rgb {
  std::uint8_t r, g, b;
};

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

/// Records: a vector of structs with epoch, train_loss, val_loss, train_top1, val_top1.
template <class Records>
void plot_curves(const std::string& path, const Records& log) {
  const int w = 800, h = 360, pad = 30, panel = (w - 3 * pad) / 2;
  Canvas c(w, h);
  const Rgb axis{90, 90, 90}, grid{225, 225, 225}, train{31, 119, 180}, val{255, 127, 14};
  const int epochs = log.empty() ? 1 : std::max(1, log.back().epoch);
  double top_loss = 1e-9;
  for (const auto& r : log) top_loss = std::max({top_loss, r.train_loss, r.val_loss});
  auto x_of = [&](int left, int epoch) { return left + (panel * epoch) / epochs; };
  auto y_of = [&](double v, double top) {
    return h - pad - int(std::lround((h - 2 * pad) * std::clamp(v / top, 0.0, 1.0)));
  };
  for (int p = 0; p < 2; ++p) {
    const int left = pad + p * (panel + pad);
    for (int g = 1; g <= 10; ++g) {  // 10% steps of the panel's range
      const int y = y_of(g / 10.0, 1.0);
      c.line(left, y, left + panel, y, grid, 0);
    }
    c.line(left, h - pad, left + panel, h - pad, axis);
    c.line(left, pad, left, h - pad, axis);
  }
  auto curve = [&](int left, double top, Rgb color, auto value) {
    int px = -1, py = -1;
    for (const auto& r : log) {
      const int x = x_of(left, r.epoch), y = y_of(value(r), top);
      if (px >= 0) c.line(px, py, x, y, color);
      c.dot(x, y, color, 2);
      px = x;
      py = y;
    }
  };
  const int right = 2 * pad + panel;
  curve(pad, top_loss, train, [](const auto& r) { return r.train_loss; });
  curve(pad, top_loss, val, [](const auto& r) { return r.val_loss; });
  curve(right, 1.0, train, [](const auto& r) { return r.train_top1; });
  curve(right, 1.0, val, [](const auto& r) { return r.val_top1; });
  vit::write_png(path, c.image());
}

}  // namespace vit_examples
