// A small bitmap font for the training plots, drawn for vit (no font library):
// 5x9 glyphs (7 rows above the baseline, 2 below for g, j, p, q, y), monospaced,
// for digits, lower-case letters and the punctuation that labels and numbers need.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace vit_examples::bitmap_font {

inline constexpr int kWidth = 5;    // columns of ink a glyph may use
inline constexpr int kHeight = 9;   // rows of a glyph cell
inline constexpr int kAscent = 7;   // rows above the baseline (digits' and tall letters' height)
inline constexpr int kAdvance = 6;  // kWidth plus one blank column between characters

/// Row r of a glyph is bits kWidth-1 (left column) .. 0 (right column).
using Glyph = std::array<std::uint8_t, kHeight>;

namespace detail {

struct Sheet {
  const char* chars;
  const char* rows[kHeight];
};

// The glyphs as pictures, so they can be read and edited: in each sheet the glyph
// of chars[i] is columns [kAdvance * i, kAdvance * i + kWidth) of every row, '#'
// is ink, '.' paper, and a space separates neighbours. (Formatting would reflow
// the pictures, hence clang-format off.)
// clang-format off
inline constexpr Sheet kSheets[] = {
    {"0123456789",
     {".###. ..#.. .###. .###. ...#. ##### ..##. ##### .###. .###.",
      "#...# .##.. #...# #...# ..##. #.... .#... ....# #...# #...#",
      "#..## ..#.. ....# ....# .#.#. ####. #.... ...#. #...# #...#",
      "#.#.# ..#.. ...#. ..##. #..#. ....# ####. ..#.. .###. .####",
      "##..# ..#.. ..#.. ....# ##### ....# #...# .#... #...# ....#",
      "#...# ..#.. .#... #...# ...#. #...# #...# .#... #...# ...#.",
      ".###. .###. ##### .###. ...#. .###. .###. .#... .###. .##..",
      "..... ..... ..... ..... ..... ..... ..... ..... ..... .....",
      "..... ..... ..... ..... ..... ..... ..... ..... ..... ....."}},
    {".,:%-+()/?",
     {"..... ..... ..... ##... ..... ..... ...#. .#... ..... .###.",
      "..... ..... .##.. ##..# ..... ..#.. ..#.. ..#.. ....# #...#",
      "..... ..... .##.. ...#. ..... ..#.. .#... ...#. ...#. ....#",
      "..... ..... ..... ..#.. .###. ##### .#... ...#. ..#.. ...#.",
      "..... ..... .##.. .#... ..... ..#.. .#... ...#. .#... ..#..",
      ".##.. .##.. .##.. #..## ..... ..#.. ..#.. ..#.. #.... .....",
      ".##.. .##.. ..... ...## ..... ..... ...#. .#... ..... ..#..",
      "..... ..#.. ..... ..... ..... ..... ..... ..... ..... .....",
      "..... .#... ..... ..... ..... ..... ..... ..... ..... ....."}},
    {"abcdefghijklm",
     {"..... #.... ..... ....# ..... ..##. ..... #.... ..#.. ...#. #.... .##.. .....",
      "..... #.... ..... ....# ..... .#... ..... #.... ..... ..... #.... ..#.. .....",
      ".###. ####. .###. .#### .###. ###.. .#### #.##. .##.. ..##. #..#. ..#.. ##.#.",
      "....# #...# #.... #...# #...# .#... #...# ##..# ..#.. ...#. #.#.. ..#.. #.#.#",
      ".#### #...# #.... #...# ##### .#... #...# #...# ..#.. ...#. ##... ..#.. #.#.#",
      "#...# #...# #...# #...# #.... .#... #...# #...# ..#.. ...#. #.#.. ..#.. #.#.#",
      ".#### ####. .###. .#### .###. .#... .#### #...# .###. ...#. #..#. .###. #.#.#",
      "..... ..... ..... ..... ..... ..... ....# ..... ..... #..#. ..... ..... .....",
      "..... ..... ..... ..... ..... ..... .###. ..... ..... .##.. ..... ..... ....."}},
    {"nopqrstuvwxyz",
     {"..... ..... ..... ..... ..... ..... .#... ..... ..... ..... ..... ..... .....",
      "..... ..... ..... ..... ..... ..... .#... ..... ..... ..... ..... ..... .....",
      "#.##. .###. ####. .#### #.##. .#### ###.. #...# #...# #...# #...# #...# #####",
      "##..# #...# #...# #...# ##..# #.... .#... #...# #...# #...# .#.#. #...# ...#.",
      "#...# #...# #...# #...# #.... .###. .#... #...# #...# #.#.# ..#.. #...# ..#..",
      "#...# #...# #...# #...# #.... ....# .#..# #..## .#.#. #.#.# .#.#. #...# .#...",
      "#...# .###. ####. .#### #.... ####. ..##. .##.# ..#.. .#.#. #...# .#### #####",
      "..... ..... #.... ....# ..... ..... ..... ..... ..... ..... ..... ....# .....",
      "..... ..... #.... ....# ..... ..... ..... ..... ..... ..... ..... .###. ....."}},
};
// clang-format on

constexpr int length(const char* s) {
  int n = 0;
  while (s[n] != '\0') ++n;
  return n;
}

// Every row as long as its sheet has glyphs, only '#' and '.' in glyphs, spaces
// between them, and no character drawn twice: a slip in the pictures fails the build.
constexpr bool sheets_well_formed() {
  bool seen[128] = {};
  for (const Sheet& s : kSheets) {
    const int n = length(s.chars);
    for (int i = 0; i < n; ++i) {
      const int ch = s.chars[i];
      if (ch <= ' ' || ch >= 127 || seen[ch]) return false;
      seen[ch] = true;
    }
    for (const char* row : s.rows) {
      if (length(row) != n * kAdvance - 1) return false;
      for (int x = 0; x < n * kAdvance - 1; ++x) {
        const bool gap = x % kAdvance == kWidth;
        if (gap ? row[x] != ' ' : row[x] != '#' && row[x] != '.') return false;
      }
    }
  }
  return true;
}
static_assert(sheets_well_formed(), "bitmap_font: malformed glyph sheet");

struct Table {
  Glyph glyph[128] = {};
  bool defined[128] = {};
};

constexpr Table build_table() {
  Table t;
  t.defined[int(' ')] = true;  // a blank glyph, not worth a picture
  for (const Sheet& s : kSheets)
    for (int i = 0; s.chars[i] != '\0'; ++i) {
      const int ch = s.chars[i];
      t.defined[ch] = true;
      for (int r = 0; r < kHeight; ++r)
        for (int x = 0; x < kWidth; ++x)
          if (s.rows[r][kAdvance * i + x] == '#')
            t.glyph[ch][r] = std::uint8_t(t.glyph[ch][r] | (1 << (kWidth - 1 - x)));
    }
  return t;
}
inline constexpr Table kTable = build_table();

}  // namespace detail

constexpr bool has_glyph(char ch) {
  const auto u = static_cast<unsigned char>(ch);
  return u < 128 && detail::kTable.defined[u];
}

/// The glyph of ch; a character without one gets '?', so the gap shows in the plot.
constexpr const Glyph& glyph(char ch) {
  return detail::kTable.glyph[has_glyph(ch) ? static_cast<unsigned char>(ch) : '?'];
}

/// Pixels from the left of the first glyph's ink to the right of the last one's.
constexpr int text_width(std::string_view s, int scale = 1) {
  return s.empty() ? 0 : (int(s.size()) * kAdvance - 1) * scale;
}

/// Calls plot(x, y) for every ink pixel of s drawn with its first cell's top-left
/// corner at (x, y), each font pixel a scale x scale block.
template <class Plot>
void draw_text(std::string_view s, int x, int y, int scale, Plot&& plot) {
  for (const char ch : s) {
    const Glyph& g = glyph(ch);
    for (int r = 0; r < kHeight; ++r)
      for (int col = 0; col < kWidth; ++col)
        if ((g[r] >> (kWidth - 1 - col)) & 1)
          for (int dy = 0; dy < scale; ++dy)
            for (int dx = 0; dx < scale; ++dx) plot(x + col * scale + dx, y + r * scale + dy);
    x += kAdvance * scale;
  }
}

}  // namespace vit_examples::bitmap_font
