// Training data: vit::data readers (CIFAR-10, Fashion-MNIST, image folders),
// batches, augmentations and shuffles, and the gzip decoder vit::io::gunzip.
// Fixtures: synthetic files written to a temporary folder, and the gzip files
// of tests/data/data (made by tests/data/data/make_cases.py). One case reads the
// real Fashion-MNIST test set that Debian's dataset-fashion-mnist installs
// (scripts/install-deps.sh).
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "test_support.hpp"
#include "vit/config.hpp"
#include "vit/data/augment.hpp"
#include "vit/data/cifar10.hpp"
#include "vit/data/dataset.hpp"
#include "vit/data/fashion_mnist.hpp"
#include "vit/data/image_folder.hpp"
#include "vit/error.hpp"
#include "vit/image.hpp"
#include "vit/io/image_io.hpp"
#include "vit/io/inflate.hpp"
#include "vit/preprocess.hpp"

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

namespace {

const std::string kFixtures = std::string(VIT_TEST_DATA_DIR) + "/data/";
// Where Debian's dataset-fashion-mnist package puts the dataset.
const std::string kFashionMnistDir = "/usr/share/datasets/fashion-mnist/";

using vit_test::TempDir;

Bytes file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE_MESSAGE(f, "cannot open " << path);
  return Bytes(std::istreambuf_iterator<char>(f), {});
}

void write_bytes(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary);
  REQUIRE_MESSAGE(f, "cannot create " << path);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  REQUIRE(f);
}

void write_text(const std::string& path, const std::string& s) {
  write_bytes(path, Bytes(s.begin(), s.end()));
}

/// The message of the E that f() throws; fails the test if it throws nothing.
template <class E, class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  FAIL("no exception thrown");
  return {};
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// --- CIFAR-10 fixtures ------------------------------------------------------------------

/// Pixel (c, y, x) of synthetic CIFAR record r.
std::uint8_t cifar_pixel(int r, int c, int y, int x) {
  return std::uint8_t((r * 50 + c * 80 + y * 3 + x) % 256);
}

/// Synthetic CIFAR-10 file bytes: one record per label.
Bytes cifar_bytes(const std::vector<int>& labels) {
  Bytes b;
  for (std::size_t r = 0; r < labels.size(); ++r) {
    b.push_back(std::uint8_t(labels[r]));
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) b.push_back(cifar_pixel(int(r), c, y, x));
  }
  return b;
}

// --- IDX fixtures -----------------------------------------------------------------------

void put_be32(Bytes& b, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(std::uint8_t(v >> s));
}

std::uint8_t idx_pixel(int i, int y, int x) { return std::uint8_t((37 * i + 28 * y + x) % 256); }

Bytes idx_images(int n, int rows = 28, int cols = 28) {
  Bytes b;
  put_be32(b, 0x00000803u);
  put_be32(b, std::uint32_t(n));
  put_be32(b, std::uint32_t(rows));
  put_be32(b, std::uint32_t(cols));
  for (int i = 0; i < n; ++i)
    for (int y = 0; y < rows; ++y)
      for (int x = 0; x < cols; ++x) b.push_back(idx_pixel(i, y, x));
  return b;
}

Bytes idx_labels(const std::vector<int>& labels) {
  Bytes b;
  put_be32(b, 0x00000801u);
  put_be32(b, std::uint32_t(labels.size()));
  for (int l : labels) b.push_back(std::uint8_t(l));
  return b;
}

// --- gzip fixtures ----------------------------------------------------------------------

/// n bytes of word salad from a 64-bit LCG; make_cases.py's payload().
Bytes payload(std::size_t n, std::uint64_t seed) {
  static const char* const words[] = {
      "vision", "transformer", "patch", "token", "attention", "head",  "layer",   "norm",  "the",
      "a",      "of",          "and",   "image", "class",     "cifar", "fashion", "mnist", "0",
      "1",      "2",           "3",     "4",     "5",         "6",     "7",       "8",     "9"};
  std::uint64_t x = seed;
  std::string out;
  while (out.size() < n) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    out += words[(x >> 33) % 27];
    out += ((x >> 20) % 8 == 0) ? '\n' : ' ';
  }
  out.resize(n);
  return Bytes(out.begin(), out.end());
}

Bytes gunzip(const Bytes& b, const std::string& name = "test.gz") {
  return vit::io::gunzip(b.data(), b.size(), name);
}

/// Offset of the DEFLATE data in a gzip member written by gzip or zlib
/// (optional fields: FNAME only).
std::size_t deflate_offset(const Bytes& gz) {
  std::size_t h = 10;
  if (gz[3] & 0x08)
    while (gz[h++] != 0) {
    }
  return h;
}

/// BFINAL and BTYPE of the first block of a gzip file.
std::pair<int, int> first_block(const Bytes& gz) {
  const std::uint8_t b = gz[deflate_offset(gz)];
  return {b & 1, (b >> 1) & 3};
}

/// Writes a DEFLATE bit stream: values LSB first, Huffman codes MSB first.
struct BitWriter {
  Bytes bytes;
  int used = 0;  // bits used in the last byte
  void put(std::uint32_t v, int n) {
    for (int i = 0; i < n; ++i) bit((v >> i) & 1u);
  }
  void code(std::uint32_t c, int len) {
    for (int i = len - 1; i >= 0; --i) bit((c >> i) & 1u);
  }
  void bit(std::uint32_t b) {
    if (used == 0) bytes.push_back(0);
    bytes.back() = std::uint8_t(bytes.back() | (b << used));
    used = (used + 1) & 7;
  }
};

// Fixed-Huffman codes (RFC 1951 3.2.6) of a few symbols.
void fixed_literal(BitWriter& w, int byte) {  // 0..143: 8 bits from 0x30
  w.code(std::uint32_t(0x30 + byte), 8);
}
void fixed_end(BitWriter& w) { w.code(0, 7); }  // 256: 7 bits 0000000

// --- images -----------------------------------------------------------------------------

/// A w x h image whose pixel (x, y) is (r + x, g + y, b).
vit::Image pattern(int w, int h, int r, int g, int b) {
  vit::Image im(w, h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      im.at(x, y, 0) = std::uint8_t(r + x);
      im.at(x, y, 1) = std::uint8_t(g + y);
      im.at(x, y, 2) = std::uint8_t(b);
    }
  return im;
}

bool same(const vit::Image& a, const vit::Image& b) {
  return a.width == b.width && a.height == b.height && a.pixels == b.pixels;
}

}  // namespace

// ======================================================================================
// gzip / DEFLATE
// ======================================================================================

TEST_CASE("inflate: crc32 check value") {
  const std::string s = "123456789";
  CHECK(vit::io::crc32(reinterpret_cast<const std::uint8_t*>(s.data()), s.size()) == 0xCBF43926u);
  CHECK(vit::io::crc32(nullptr, 0) == 0u);
}

TEST_CASE("inflate: fixtures of every block type decode to their contents") {
  struct Case {
    const char* file;
    std::size_t n;
    std::uint64_t seed;
    int first_final, first_type;
  };
  // first_type: 0 stored, 1 fixed Huffman, 2 dynamic Huffman.
  const Case cases[] = {{"fixed.gz", 30, 1, 1, 1},
                        {"dynamic.gz", 50000, 2, 1, 2},
                        {"stored.gz", 20000, 3, 0, 0},
                        {"multiblock.gz", 30000, 4, 0, 2},
                        {"named.txt.gz", 1000, 5, 1, 2}};
  for (const Case& c : cases) {
    CAPTURE(c.file);
    const Bytes gz = file_bytes(kFixtures + c.file);
    CHECK(first_block(gz) == std::make_pair(c.first_final, c.first_type));
    CHECK(gunzip(gz) == payload(c.n, c.seed));
  }
  // An empty input: one block holding only end-of-block.
  CHECK(gunzip(file_bytes(kFixtures + "empty.gz")).empty());
  // named.txt.gz carries FNAME and MTIME.
  const Bytes named = file_bytes(kFixtures + "named.txt.gz");
  CHECK((named[3] & 0x08) != 0);
}

TEST_CASE("inflate: concatenated members, all header fields, raw streams") {
  const Bytes fixed = file_bytes(kFixtures + "fixed.gz");
  const Bytes dynamic = file_bytes(kFixtures + "dynamic.gz");
  Bytes both = fixed;
  both.insert(both.end(), dynamic.begin(), dynamic.end());
  Bytes want = payload(30, 1);
  const Bytes second = payload(50000, 2);
  want.insert(want.end(), second.begin(), second.end());
  CHECK(gunzip(both) == want);

  // FEXTRA + FNAME + FCOMMENT + FHCRC before the deflate data of dynamic.gz.
  Bytes h = {0x1F, 0x8B, 8, 0x04 | 0x08 | 0x10 | 0x02, 1, 2, 3, 4, 0, 3};
  h.insert(h.end(), {3, 0, 'a', 'b', 'c'});         // FEXTRA: 3 bytes
  h.insert(h.end(), {'n', 'a', 'm', 'e', 0});       // FNAME
  h.insert(h.end(), {'h', 'e', 'l', 'l', 'o', 0});  // FCOMMENT
  const std::uint32_t hcrc = vit::io::crc32(h.data(), h.size()) & 0xFFFFu;
  Bytes full = h;
  full.push_back(std::uint8_t(hcrc));
  full.push_back(std::uint8_t(hcrc >> 8));
  full.insert(full.end(), dynamic.begin() + 10, dynamic.end());
  CHECK(gunzip(full) == second);
  full[h.size()] ^= 1;  // header CRC wrong
  CHECK(contains(message_of<vit::io_error>([&] { gunzip(full, "hdr.gz"); }), "header CRC"));

  // Raw DEFLATE: the body of fixed.gz; `consumed` stops before the 8-byte trailer.
  std::size_t consumed = 0;
  const Bytes body(fixed.begin() + 10, fixed.end());
  CHECK(vit::io::inflate(body.data(), body.size(), "raw", &consumed) == payload(30, 1));
  CHECK(consumed == body.size() - 8);
  CHECK(vit::io::is_gzip(fixed.data(), fixed.size()));
  CHECK_FALSE(vit::io::is_gzip(body.data(), body.size()));
}

TEST_CASE("inflate: hand-made streams (overlapping copy, errors in the deflate data)") {
  // Fixed block: 'a', then <length 3, distance 1> (overlapping run), then end.
  BitWriter w;
  w.put(1, 1);  // BFINAL
  w.put(1, 2);  // BTYPE 01: fixed
  fixed_literal(w, 'a');
  w.code(1, 7);  // symbol 257: length 3
  w.code(0, 5);  // distance symbol 0: distance 1
  fixed_end(w);
  const Bytes aaaa{'a', 'a', 'a', 'a'};
  CHECK(vit::io::inflate(w.bytes.data(), w.bytes.size(), "run") == aaaa);

  // A copy before any output.
  BitWriter far;
  far.put(1, 1);
  far.put(1, 2);
  far.code(1, 7);
  far.code(0, 5);
  fixed_end(far);
  std::string m = message_of<vit::io_error>(
      [&] { vit::io::inflate(far.bytes.data(), far.bytes.size(), "far.bin"); });
  CHECK(contains(m, "far.bin"));
  CHECK(contains(m, "reaches before the start"));

  // Block type 3 is reserved.
  const Bytes type3{0x07};
  m = message_of<vit::io_error>([&] { vit::io::inflate(type3.data(), 1, "t3.bin"); });
  CHECK(contains(m, "t3.bin"));
  CHECK(contains(m, "block type 3"));

  // Stored block whose NLEN is not the complement of LEN.
  const Bytes stored{0x01, 0x05, 0x00, 0x00, 0x00, 'x', 'x', 'x', 'x', 'x'};
  m = message_of<vit::io_error>([&] { vit::io::inflate(stored.data(), stored.size(), "st.bin"); });
  CHECK(contains(m, "complement"));
  // ... and one running past the end.
  const Bytes short_stored{0x01, 0x05, 0x00, 0xFA, 0xFF, 'x', 'x'};
  m = message_of<vit::io_error>(
      [&] { vit::io::inflate(short_stored.data(), short_stored.size(), "st.bin"); });
  CHECK(contains(m, "past the end"));

  // Dynamic block whose code-length code gives four codes of 1 bit.
  BitWriter over;
  over.put(1, 1);
  over.put(2, 2);  // BTYPE 10: dynamic
  over.put(0, 5);  // HLIT 257
  over.put(0, 5);  // HDIST 1
  over.put(0, 4);  // HCLEN 4
  for (int i = 0; i < 4; ++i) over.put(1, 3);
  m = message_of<vit::io_error>(
      [&] { vit::io::inflate(over.bytes.data(), over.bytes.size(), "over.bin"); });
  CHECK(contains(m, "over-subscribed"));

  // Nothing at all.
  m = message_of<vit::io_error>([&] { vit::io::inflate(nullptr, 0, "none.bin"); });
  CHECK(contains(m, "unexpected end"));
}

TEST_CASE("inflate: corrupt gzip files are reported with their name") {
  const Bytes good = file_bytes(kFixtures + "dynamic.gz");
  const Bytes stored = file_bytes(kFixtures + "stored.gz");

  Bytes b = good;
  b.resize(b.size() / 2);
  std::string m = message_of<vit::io_error>([&] { gunzip(b, "half.gz"); });
  CHECK(contains(m, "half.gz"));
  CHECK(contains(m, "unexpected end"));

  b = good;
  b.resize(b.size() - 4);  // trailer cut
  CHECK(contains(message_of<vit::io_error>([&] { gunzip(b, "cut.gz"); }), "truncated trailer"));

  b = stored;
  b[deflate_offset(b) + 100] ^= 0x20;  // a byte of stored data: only the CRC notices
  m = message_of<vit::io_error>([&] { gunzip(b, "crc.gz"); });
  CHECK(contains(m, "crc.gz"));
  CHECK(contains(m, "CRC-32 mismatch"));

  b = good;
  b[b.size() - 1] ^= 1;  // ISIZE
  CHECK(contains(message_of<vit::io_error>([&] { gunzip(b, "len.gz"); }), "length mismatch"));

  b = good;
  b.push_back(0);
  CHECK(contains(message_of<vit::io_error>([&] { gunzip(b, "tail.gz"); }), "trailing data"));

  b = good;
  b[2] = 7;
  CHECK(contains(message_of<vit::io_error>([&] { gunzip(b, "cm.gz"); }), "not deflate"));

  const Bytes text{'h', 'e', 'l', 'l', 'o'};
  m = message_of<vit::io_error>([&] { gunzip(text, "plain.txt"); });
  CHECK(contains(m, "plain.txt"));
  CHECK(contains(m, "not a gzip file"));
  CHECK(contains(message_of<vit::io_error>([&] { gunzip(Bytes{}, "nil.gz"); }), "empty"));

  m = message_of<vit::io_error>([&] { vit::io::gunzip(good.data(), good.size(), "big.gz", 1000); });
  CHECK(contains(m, "exceeds the limit of 1000 bytes"));

  // Damage anywhere: an io_error (or, rarely, the same output), never a crash
  // (the sanitizer build checks that no byte outside the input is read).
  std::mt19937_64 rng(7);
  int errors = 0;
  for (int trial = 0; trial < 300; ++trial) {
    b = good;
    const std::size_t at = vit::data::random_below(rng, b.size());
    b[at] = std::uint8_t(b[at] ^ (1u << vit::data::random_below(rng, 8)));
    if (trial % 3 == 0) b.resize(vit::data::random_below(rng, b.size()));
    try {
      gunzip(b, "fuzz.gz");
    } catch (const vit::io_error&) {
      ++errors;
    }
  }
  CHECK(errors > 250);
}

// ======================================================================================
// CIFAR-10
// ======================================================================================

TEST_CASE("cifar10: exact pixels, labels and class names of a synthetic file") {
  TempDir dir;
  const std::string path = dir / "data_batch_1.bin";
  write_bytes(path, cifar_bytes({3, 0, 9}));
  const vit::data::Cifar10 ds(path);
  REQUIRE(ds.size() == 3);
  CHECK(ds.num_classes() == 10);
  CHECK(ds.class_names() == vit::data::cifar10_class_names());
  CHECK(ds.class_names()[0] == "airplane");
  CHECK(ds.class_names()[9] == "truck");
  CHECK(ds.source() == path);
  CHECK(ds.label(0) == 3);
  CHECK(ds.label(1) == 0);
  CHECK(ds.label(2) == 9);
  for (int r = 0; r < 3; ++r) {
    const vit::Image im = ds.load(r);
    REQUIRE(im.width == 32);
    REQUIRE(im.height == 32);
    int bad = 0;
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x)
        for (int c = 0; c < 3; ++c) bad += im.at(x, y, c) != cifar_pixel(r, c, y, x);
    CHECK(bad == 0);
  }
  // Spot checks written out: record 1, (c, y, x) = (2, 5, 7) is 50 + 160 + 15 + 7.
  CHECK(int(ds.load(1).at(7, 5, 2)) == 232);
  CHECK(int(ds.load(0).at(31, 31, 0)) == 93 + 31);

  CHECK(contains(message_of<vit::argument_error>([&] { ds.load(3); }), "out of range"));
  CHECK(contains(message_of<vit::argument_error>([&] { ds.label(-1); }), path));
}

TEST_CASE("cifar10: class names from batches.meta.txt") {
  TempDir dir;
  write_bytes(dir / "test.bin", cifar_bytes({1}));
  std::string meta;
  for (int k = 0; k < 10; ++k) meta += "name " + std::to_string(k) + "\r\n";
  write_text(dir / "batches.meta.txt", meta + "\n\n");  // CRLF, trailing blank lines
  const vit::data::Cifar10 ds(dir / "test.bin");
  REQUIRE(ds.num_classes() == 10);
  CHECK(ds.class_names()[0] == "name 0");
  CHECK(ds.class_names()[9] == "name 9");

  write_text(dir / "batches.meta.txt", "cat\ndog\nbird\n");
  const std::string m =
      message_of<vit::io_error>([&] { vit::data::Cifar10 bad(dir / "test.bin"); });
  CHECK(contains(m, dir / "batches.meta.txt"));
  CHECK(contains(m, "3 class names"));
}

TEST_CASE("cifar10: every malformed file is an io_error naming the file") {
  TempDir dir;
  const auto open = [](const std::string& p) { vit::data::Cifar10 ds(p); };

  const std::string missing = dir / "missing.bin";
  std::string m = message_of<vit::io_error>([&] { open(missing); });
  CHECK(contains(m, missing));
  CHECK(contains(m, "cannot open"));

  fs::create_directories(dir / "folder.bin");
  m = message_of<vit::io_error>([&] { open(dir / "folder.bin"); });
  CHECK(contains(m, dir / "folder.bin"));

  write_bytes(dir / "empty.bin", {});
  m = message_of<vit::io_error>([&] { open(dir / "empty.bin"); });
  CHECK(contains(m, dir / "empty.bin"));
  CHECK(contains(m, "empty"));

  Bytes b = cifar_bytes({1, 2});
  b.resize(b.size() + 5);
  write_bytes(dir / "odd.bin", b);
  m = message_of<vit::io_error>([&] { open(dir / "odd.bin"); });
  CHECK(contains(m, dir / "odd.bin"));
  CHECK(contains(m, "size 6151 bytes is not a multiple of the 3073-byte"));
  CHECK(contains(m, "2 whole records and 5 bytes left over"));

  write_bytes(dir / "label.bin", cifar_bytes({1, 10, 2}));
  m = message_of<vit::io_error>([&] { open(dir / "label.bin"); });
  CHECK(contains(m, dir / "label.bin"));
  CHECK(contains(m, "record 1 has label 10"));
}

// ======================================================================================
// Fashion-MNIST
// ======================================================================================

TEST_CASE("fashion_mnist: synthetic IDX files, exact pixels, gray to RGB") {
  TempDir dir;
  const std::vector<int> labels{4, 0, 9, 7};
  write_bytes(dir / "train-images-idx3-ubyte", idx_images(4));
  write_bytes(dir / "train-labels-idx1-ubyte", idx_labels(labels));
  const vit::data::FashionMnist ds(dir / "train-images-idx3-ubyte");
  CHECK(ds.labels_path() == dir / "train-labels-idx1-ubyte");
  REQUIRE(ds.size() == 4);
  CHECK(ds.width() == 28);
  CHECK(ds.height() == 28);
  CHECK(ds.num_classes() == 10);
  CHECK(ds.class_names().front() == "T-shirt/top");
  CHECK(ds.class_names()[5] == "Sandal");
  CHECK(ds.class_names().back() == "Ankle boot");
  for (int i = 0; i < 4; ++i) {
    CHECK(ds.label(i) == labels[std::size_t(i)]);
    const vit::Image im = ds.load(i);
    REQUIRE(im.width == 28);
    REQUIRE(im.height == 28);
    int bad = 0;
    for (int y = 0; y < 28; ++y)
      for (int x = 0; x < 28; ++x)
        for (int c = 0; c < 3; ++c) bad += im.at(x, y, c) != idx_pixel(i, y, x);
    CHECK(bad == 0);
  }
  CHECK(int(ds.load(2).at(3, 1, 1)) == 74 + 28 + 3);

  // Other sizes are read too, with an explicit labels path.
  write_bytes(dir / "small.idx", idx_images(2, 3, 5));
  write_bytes(dir / "small.lab", idx_labels({1, 2}));
  const vit::data::FashionMnist small(dir / "small.idx", dir / "small.lab");
  CHECK(small.load(1).width == 5);
  CHECK(small.load(1).height == 3);
  CHECK(int(small.load(1).at(4, 2, 0)) == 37 + 56 + 4);
}

TEST_CASE("fashion_mnist: gzip files and the labels path") {
  // Committed fixture: 5 images, pixel (37 i + 28 y + x) mod 256, labels 3 i mod 10.
  const vit::data::FashionMnist ds(kFixtures + "tiny-images-idx3-ubyte.gz");
  CHECK(ds.labels_path() == kFixtures + "tiny-labels-idx1-ubyte.gz");
  REQUIRE(ds.size() == 5);
  for (int i = 0; i < 5; ++i) {
    CHECK(ds.label(i) == 3 * i % 10);
    const vit::Image im = ds.load(i);
    int bad = 0;
    for (int y = 0; y < 28; ++y)
      for (int x = 0; x < 28; ++x) bad += im.at(x, y, 2) != idx_pixel(i, y, x);
    CHECK(bad == 0);
  }

  using vit::data::FashionMnist;
  CHECK(FashionMnist::labels_path_for("d/t10k-images-idx3-ubyte.gz") ==
        (fs::path("d") / "t10k-labels-idx1-ubyte.gz").string());
  CHECK(contains(
      message_of<vit::argument_error>([] { FashionMnist::labels_path_for("d/images.bin"); }),
      "d/images.bin"));

  // Compressed images beside uncompressed labels: the labels are still found.
  TempDir dir;
  fs::copy_file(kFixtures + "tiny-images-idx3-ubyte.gz", dir / "x-images-idx3-ubyte.gz");
  write_bytes(dir / "x-labels-idx1-ubyte", idx_labels({1, 1, 2, 2, 3}));
  const FashionMnist mixed(dir / "x-images-idx3-ubyte.gz");
  CHECK(mixed.labels_path() == dir / "x-labels-idx1-ubyte");
  CHECK(mixed.label(4) == 3);

  // A damaged .gz is reported with its name.
  Bytes gz = file_bytes(kFixtures + "tiny-images-idx3-ubyte.gz");
  gz[gz.size() - 6] ^= 0xFF;  // CRC-32
  write_bytes(dir / "y-images-idx3-ubyte.gz", gz);
  fs::copy_file(kFixtures + "tiny-labels-idx1-ubyte.gz", dir / "y-labels-idx1-ubyte.gz");
  const std::string m =
      message_of<vit::io_error>([&] { FashionMnist bad(dir / "y-images-idx3-ubyte.gz"); });
  CHECK(contains(m, dir / "y-images-idx3-ubyte.gz"));
  CHECK(contains(m, "CRC-32"));
}

TEST_CASE("fashion_mnist: every malformed file is an io_error naming the file") {
  TempDir dir;
  using vit::data::FashionMnist;
  const std::string img = dir / "a-images-idx3-ubyte", lab = dir / "a-labels-idx1-ubyte";
  const auto open = [&] { FashionMnist ds(img, lab); };
  write_bytes(lab, idx_labels({1, 2, 3}));

  std::string m = message_of<vit::io_error>(open);  // images missing
  CHECK(contains(m, img));
  CHECK(contains(m, "cannot open"));

  write_bytes(img, idx_labels({1, 2, 3}));  // a labels file given as images
  m = message_of<vit::io_error>(open);
  CHECK(contains(m, img));
  CHECK(contains(m, "magic number 0x00000801 is not 0x00000803"));
  CHECK(contains(m, "labels file"));

  Bytes b = idx_images(3);
  b.resize(b.size() - 100);
  write_bytes(img, b);
  m = message_of<vit::io_error>(open);
  CHECK(contains(m, img));
  CHECK(contains(m, "declares 3 images of 28x28"));
  CHECK(contains(m, "truncated"));

  write_bytes(img, Bytes{0, 0, 8, 3, 0, 0});
  CHECK(contains(message_of<vit::io_error>(open), "too short"));
  write_bytes(img, {});
  CHECK(contains(message_of<vit::io_error>(open), "empty"));

  write_bytes(img, idx_images(3));
  write_bytes(lab, idx_labels({1, 2}));
  m = message_of<vit::io_error>(open);
  CHECK(contains(m, img));
  CHECK(contains(m, lab));
  CHECK(contains(m, "3 images"));
  CHECK(contains(m, "2 labels"));

  b = idx_labels({1, 2, 3});
  b.pop_back();
  write_bytes(lab, b);
  m = message_of<vit::io_error>(open);
  CHECK(contains(m, lab));
  CHECK(contains(m, "truncated"));

  write_bytes(lab, idx_labels({1, 2, 10}));
  m = message_of<vit::io_error>(open);
  CHECK(contains(m, lab));
  CHECK(contains(m, "item 2 has label 10"));

  write_bytes(lab, idx_images(3));
  CHECK(contains(message_of<vit::io_error>(open), "images file"));

  write_bytes(lab, idx_labels({1, 2, 3}));
  CHECK_NOTHROW(open());
}

TEST_CASE("fashion_mnist: the real test set of Debian's dataset-fashion-mnist") {
  // Installed by scripts/install-deps.sh; this test fails (not skips) without it.
  const std::string images = kFashionMnistDir + "t10k-images-idx3-ubyte.gz";
  REQUIRE_MESSAGE(fs::exists(images),
                  images << " is missing: install Debian's dataset-fashion-mnist package");
  const vit::data::FashionMnist ds(images);
  REQUIRE(ds.size() == 10000);
  CHECK(ds.width() == 28);
  CHECK(ds.height() == 28);
  std::array<int, 10> per_class{};
  for (int i = 0; i < ds.size(); ++i) {
    const int l = ds.label(i);
    REQUIRE(l >= 0);
    REQUIRE(l <= 9);
    ++per_class[std::size_t(l)];
  }
  for (int k = 0; k < 10; ++k) CHECK(per_class[std::size_t(k)] == 1000);
  // The first test items: ankle boot, pullover, trouser, trouser.
  CHECK(ds.label(0) == 9);
  CHECK(ds.label(1) == 2);
  CHECK(ds.label(2) == 1);
  const vit::Image first = ds.load(0);
  long sum = 0;
  for (int y = 0; y < 28; ++y)
    for (int x = 0; x < 28; ++x) sum += first.at(x, y, 0);
  CHECK(sum == 33456);
}

// ======================================================================================
// Image folders
// ======================================================================================

TEST_CASE("image_folder: class order, file order, lazy decoding, corrupt files") {
  TempDir dir;
  const std::string root = dir / "root";
  for (const char* d : {"dog", "bird", "cat", ".git"}) fs::create_directories(dir / "root/" + d);
  vit::write_png(dir / "root/bird/1.png", pattern(4, 4, 10, 0, 1));
  vit::write_png(dir / "root/cat/b.png", pattern(4, 4, 20, 0, 2));
  vit::write_png(dir / "root/cat/a.PNG", pattern(4, 4, 30, 0, 3));
  vit::write_png(dir / "root/cat/.hidden.png", pattern(4, 4, 0, 0, 99));
  write_text(dir / "root/cat/notes.txt", "not an image");
  vit::write_png(dir / "root/.git/x.png", pattern(4, 4, 0, 0, 98));
  // PNG data under a .JPEG name: the decoder goes by content.
  vit::write_png(dir / "root/dog/img.JPEG", pattern(4, 4, 40, 0, 4));
  write_text(dir / "root/dog/broken.png", "this is not a PNG file");
  write_text(dir / "root/readme.txt", "loose file");

  const vit::data::ImageFolder ds(root);
  CHECK(ds.class_names() == std::vector<std::string>{"bird", "cat", "dog"});
  CHECK(ds.num_classes() == 3);
  REQUIRE(ds.size() == 5);
  const std::vector<std::string> want_files{"bird/1.png", "cat/a.PNG", "cat/b.png",
                                            "dog/broken.png", "dog/img.JPEG"};
  const std::vector<int> want_labels{0, 1, 1, 2, 2};
  for (int i = 0; i < 5; ++i) {
    CHECK(fs::path(ds.path(i)) == fs::path(root) / want_files[std::size_t(i)]);
    CHECK(ds.label(i) == want_labels[std::size_t(i)]);
  }
  CHECK(same(ds.load(0), pattern(4, 4, 10, 0, 1)));
  CHECK(same(ds.load(1), pattern(4, 4, 30, 0, 3)));
  CHECK(same(ds.load(2), pattern(4, 4, 20, 0, 2)));
  CHECK(same(ds.load(4), pattern(4, 4, 40, 0, 4)));
  const std::string m = message_of<vit::image_error>([&] { ds.load(3); });
  CHECK(contains(m, "broken.png"));

  // Removed after opening: io_error naming the file.
  const std::string victim = ds.path(0);
  fs::remove(victim);
  CHECK(contains(message_of<vit::io_error>([&] { ds.load(0); }), victim));
}

TEST_CASE("image_folder: layout errors name the folder") {
  TempDir dir;
  const auto open = [](const std::string& p) { vit::data::ImageFolder ds(p); };

  std::string m = message_of<vit::io_error>([&] { open(dir / "nope"); });
  CHECK(contains(m, dir / "nope"));
  CHECK(contains(m, "does not exist"));

  write_text(dir / "file.txt", "x");
  m = message_of<vit::io_error>([&] { open(dir / "file.txt"); });
  CHECK(contains(m, dir / "file.txt"));
  CHECK(contains(m, "not a folder"));

  fs::create_directories(dir / "flat");
  m = message_of<vit::io_error>([&] { open(dir / "flat"); });
  CHECK(contains(m, dir / "flat"));
  CHECK(contains(m, "no class folders"));
  vit::write_png(dir / "flat/a.png", pattern(2, 2, 0, 0, 0));
  CHECK(contains(message_of<vit::io_error>([&] { open(dir / "flat"); }),
                 "1 image files directly in the folder"));

  fs::create_directories(dir / "hollow/a");
  fs::create_directories(dir / "hollow/b");
  write_text(dir / "hollow/b/readme.md", "x");
  m = message_of<vit::io_error>([&] { open(dir / "hollow"); });
  CHECK(contains(m, dir / "hollow"));
  CHECK(contains(m, "no images in any of its 2 class folders"));

  fs::create_directories(dir / "one/only");
  vit::write_png(dir / "one/only/a.png", pattern(2, 2, 0, 0, 0));
  m = message_of<vit::io_error>([&] { open(dir / "one"); });
  CHECK(contains(m, dir / "one"));
  CHECK(contains(m, "only one class folder ('only')"));
  CHECK(contains(m, "at least 2 classes"));

  fs::create_directories(dir / "one/zzz");
  write_text(dir / "one/zzz/a.txt", "x");
  m = message_of<vit::io_error>([&] { open(dir / "one"); });
  CHECK(contains(m, (fs::path(dir / "one") / "zzz").string()));
  CHECK(contains(m, "class folder holds no images"));

  vit::write_png(dir / "one/zzz/b.gif.png", pattern(2, 2, 0, 0, 0));
  CHECK_NOTHROW(open(dir / "one"));
}

// ======================================================================================
// Batches
// ======================================================================================

TEST_CASE("batch: rows are normalised CHW images, labels and indices follow") {
  TempDir dir;
  write_bytes(dir / "b.bin", cifar_bytes({5, 6, 7, 8}));
  const vit::data::Cifar10 ds(dir / "b.bin");
  vit::data::BatchOptions opt;
  opt.image_size = 32;
  opt.mean = {0.5, 0.4, 0.3};
  opt.std = {0.2, 0.25, 0.3};
  std::mt19937_64 rng(1);
  const vit::data::Batch b = vit::data::make_batch(ds, {2, 0, 2}, nullptr, rng, opt);
  REQUIRE(b.images.rows() == 3);
  REQUIRE(b.images.cols() == 3 * 32 * 32);
  CHECK(b.labels == std::vector<int>{7, 5, 7});
  CHECK(b.indices == std::vector<int>{2, 0, 2});
  CHECK(b.skipped == 0);
  // Element (c, y, x) of row n: (pixel / 255 - mean[c]) / std[c] in float.
  for (int c = 0; c < 3; ++c) {
    const float want = (float(cifar_pixel(2, c, 4, 9)) / 255.f - float(opt.mean[std::size_t(c)])) /
                       float(opt.std[std::size_t(c)]);
    CHECK(b.images(0, c * 1024 + 4 * 32 + 9) == want);
    CHECK(b.images(2, c * 1024 + 4 * 32 + 9) == want);
  }
  CHECK(b.images.row(1) != b.images.row(0));

  // BatchOptions from a model's DataConfig.
  vit::DataConfig dc;
  dc.input_size = 32;
  dc.mean = {0.1, 0.2, 0.3};
  const vit::data::BatchOptions o2 = vit::data::BatchOptions::from(dc);
  CHECK(o2.image_size == 32);
  CHECK(o2.mean == dc.mean);
  CHECK(o2.std == dc.std);

  // Errors: bad index, wrong output size, bad size.
  CHECK(contains(message_of<vit::argument_error>([&] {
                   vit::data::make_batch(ds, {0, 4}, nullptr, rng, opt);
                 }),
                 "item index 4"));
  vit::data::BatchOptions wrong = opt;
  wrong.image_size = 28;
  CHECK(contains(
      message_of<vit::argument_error>([&] { vit::data::make_batch(ds, {0}, nullptr, rng, wrong); }),
      "expected 28x28"));
  wrong.image_size = 0;
  CHECK_THROWS_AS(vit::data::make_batch(ds, {0}, nullptr, rng, wrong), vit::argument_error);

  // An augmented batch is reproducible from the generator's seed.
  const vit::data::Transform t = vit::data::make_cifar_train_transform(32, 4);
  std::mt19937_64 r1(9), r2(9), r3(10);
  const std::vector<int> idx{0, 1, 2, 3};
  const vit::data::Batch a1 = vit::data::make_batch(ds, idx, t, r1, opt);
  const vit::data::Batch a2 = vit::data::make_batch(ds, idx, t, r2, opt);
  const vit::data::Batch a3 = vit::data::make_batch(ds, idx, t, r3, opt);
  CHECK(a1.images == a2.images);
  CHECK(a1.images != a3.images);
}

TEST_CASE("batch: corrupt images are skipped and counted when asked") {
  TempDir dir;
  const std::string root = dir / "root";
  fs::create_directories(dir / "root/a");
  fs::create_directories(dir / "root/b");
  vit::write_png(dir / "root/a/1.png", pattern(8, 8, 0, 0, 10));
  write_text(dir / "root/a/2.png", "corrupt");
  vit::write_png(dir / "root/b/1.png", pattern(8, 8, 50, 50, 20));
  write_bytes(dir / "root/b/2.png", {0x89, 'P', 'N', 'G'});
  const vit::data::ImageFolder ds(root);
  REQUIRE(ds.size() == 4);

  vit::data::BatchOptions opt;
  opt.image_size = 8;
  std::mt19937_64 rng(3);
  const std::vector<int> all{0, 1, 2, 3};
  // Default: the first corrupt file stops the batch.
  const std::string m =
      message_of<vit::image_error>([&] { vit::data::make_batch(ds, all, nullptr, rng, opt); });
  CHECK(contains(m, "2.png"));

  std::vector<std::pair<int, std::string>> warnings;
  opt.skip_corrupt = true;
  opt.on_skip = [&](int i, const std::string& msg) { warnings.emplace_back(i, msg); };
  const vit::data::Batch b = vit::data::make_batch(ds, all, nullptr, rng, opt);
  CHECK(b.skipped == 2);
  REQUIRE(b.images.rows() == 2);
  CHECK(b.labels == std::vector<int>{0, 1});
  CHECK(b.indices == std::vector<int>{0, 2});
  REQUIRE(warnings.size() == 2);
  CHECK(warnings[0].first == 1);
  CHECK(contains(warnings[0].second, ds.path(1)));
  CHECK(warnings[1].first == 3);
  CHECK(contains(warnings[1].second, ds.path(3)));
  // The rows that remain are those of the good images.
  vit::Matrix<float> want(1, 3 * 64);
  vit::to_tensor(pattern(8, 8, 50, 50, 20), opt.mean, opt.std, want.data());
  CHECK(b.images.row(1) == want.row(0));

  // Only corrupt ones: an empty batch, all counted; no callback needed.
  opt.on_skip = nullptr;
  const vit::data::Batch none = vit::data::make_batch(ds, {1, 3, 1}, nullptr, rng, opt);
  CHECK(none.images.rows() == 0);
  CHECK(none.skipped == 3);
  // An index out of range is a bug, not a corrupt file: never skipped.
  CHECK_THROWS_AS(vit::data::make_batch(ds, {7}, nullptr, rng, opt), vit::argument_error);
}

// ======================================================================================
// Random numbers, shuffles, augmentations
// ======================================================================================

TEST_CASE("augment: random numbers come from the standard-defined mt19937_64 sequence") {
  // The C++ standard fixes the 10000th output of a default-constructed mt19937_64.
  std::mt19937_64 std_rng;
  std_rng.discard(9999);
  CHECK(std_rng() == 9981545732273789042ull);

  std::mt19937_64 rng(5);
  std::array<int, 3> counts{};
  for (int i = 0; i < 30000; ++i) {
    const double u = vit::data::random_unit(rng);
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
    const std::uint64_t k = vit::data::random_below(rng, 3);
    REQUIRE(k < 3);
    ++counts[k];
  }
  for (int c : counts) CHECK(std::abs(c - 10000) < 500);
  CHECK(vit::data::random_below(rng, 1) == 0);
  CHECK_THROWS_AS(vit::data::random_below(rng, 0), vit::argument_error);
  const double v = vit::data::random_uniform(rng, -2.0, -1.0);
  CHECK(v >= -2.0);
  CHECK(v < -1.0);
}

TEST_CASE("augment: shuffled is a reproducible permutation that depends on seed and epoch") {
  const std::vector<int> a = vit::data::shuffled(1000, 42, 0);
  std::vector<int> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int> iota(1000);
  std::iota(iota.begin(), iota.end(), 0);
  CHECK(sorted == iota);
  CHECK(a != iota);
  CHECK(vit::data::shuffled(1000, 42, 0) == a);
  CHECK(vit::data::shuffled(1000, 42, 1) != a);
  CHECK(vit::data::shuffled(1000, 43, 0) != a);
  CHECK(vit::data::shuffled(0, 1, 0).empty());
  CHECK(vit::data::shuffled(1, 1, 0) == std::vector<int>{0});
  CHECK_THROWS_AS(vit::data::shuffled(-1, 1, 0), vit::argument_error);
  // Pinned: the same on every platform and library version (a change here
  // changes every user's training order). Cross-checked against a separate
  // Python implementation of mt19937_64, mix64 and this Fisher-Yates.
  CHECK(vit::data::shuffled(10, 42, 0) == std::vector<int>{5, 4, 8, 9, 1, 7, 2, 3, 0, 6});
  CHECK(vit::data::shuffled(10, 42, 1) == std::vector<int>{8, 0, 7, 6, 2, 3, 5, 1, 4, 9});
}

TEST_CASE("augment: crop and flip move pixels as they should") {
  const vit::Image im = pattern(3, 2, 100, 50, 7);
  const vit::Image f = vit::data::horizontal_flip(im);
  REQUIRE(f.width == 3);
  REQUIRE(f.height == 2);
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 3; ++x)
      for (int c = 0; c < 3; ++c) CHECK(f.at(x, y, c) == im.at(2 - x, y, c));
  CHECK(same(vit::data::horizontal_flip(f), im));

  std::mt19937_64 rng(1);
  CHECK(same(vit::data::random_horizontal_flip(im, rng, 1.0), f));
  CHECK(same(vit::data::random_horizontal_flip(im, rng, 0.0), im));
  int flips = 0;
  for (int i = 0; i < 1000; ++i) flips += same(vit::data::random_horizontal_flip(im, rng), f);
  CHECK(flips > 400);
  CHECK(flips < 600);

  // A window hanging over the top-left corner: black there, shifted pixels elsewhere.
  const vit::Image c = vit::data::crop(im, -1, -1, 3, 2);
  REQUIRE(c.width == 3);
  REQUIRE(c.height == 2);
  CHECK(int(c.at(0, 0, 2)) == 0);
  CHECK(int(c.at(2, 0, 2)) == 0);
  CHECK(int(c.at(0, 1, 2)) == 0);
  CHECK(int(c.at(1, 1, 0)) == int(im.at(0, 0, 0)));
  CHECK(int(c.at(2, 1, 0)) == int(im.at(1, 0, 0)));
  CHECK(int(c.at(2, 1, 1)) == int(im.at(1, 0, 1)));
  CHECK(vit::data::crop(im, 5, 0, 2, 2).pixels == std::vector<std::uint8_t>(12, 0));
  CHECK_THROWS_AS(vit::data::crop(im, 0, 0, 0, 2), vit::argument_error);
  CHECK_THROWS_AS(vit::data::crop(vit::Image(), 0, 0, 1, 1), vit::argument_error);
}

TEST_CASE("augment: random_crop with padding is a shift of at most the padding") {
  // Blue 1 marks real pixels (padding is black); red / green encode x / y.
  const vit::Image im = pattern(32, 32, 0, 0, 1);
  std::mt19937_64 rng(11);
  std::set<std::pair<int, int>> shifts;
  for (int trial = 0; trial < 400; ++trial) {
    const vit::Image out = vit::data::random_crop(im, 32, 32, 4, rng);
    REQUIRE(out.width == 32);
    REQUIRE(out.height == 32);
    // The shift is told by the first real pixel of the central row/column.
    int dx = -99, dy = -99;
    for (int x = 0; x < 32 && dx == -99; ++x)
      if (out.at(x, 16, 2) == 1) dx = int(out.at(x, 16, 0)) - x;
    for (int y = 0; y < 32 && dy == -99; ++y)
      if (out.at(16, y, 2) == 1) dy = int(out.at(16, y, 1)) - y;
    REQUIRE(dx >= -4);
    REQUIRE(dx <= 4);
    REQUIRE(dy >= -4);
    REQUIRE(dy <= 4);
    int bad = 0;
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x) {
        const int sx = x + dx, sy = y + dy;
        const bool inside = sx >= 0 && sx < 32 && sy >= 0 && sy < 32;
        for (int c = 0; c < 3; ++c) bad += out.at(x, y, c) != (inside ? im.at(sx, sy, c) : 0);
      }
    REQUIRE(bad == 0);
    shifts.insert({dx, dy});
  }
  CHECK(shifts.size() > 60);  // of 81
  CHECK(shifts.count({-4, -4}) + shifts.count({4, 4}) + shifts.count({-4, 4}) +
            shifts.count({4, -4}) >
        0);

  // Without padding a full-size window is the image itself.
  CHECK(same(vit::data::random_crop(im, 32, 32, 0, rng), im));
  CHECK(vit::data::random_crop(im, 20, 10, 0, rng).width == 20);
  CHECK_THROWS_AS(vit::data::random_crop(im, 41, 32, 4, rng), vit::argument_error);
  CHECK_THROWS_AS(vit::data::random_crop(im, 32, 32, -1, rng), vit::argument_error);
}

TEST_CASE("augment: random_resized_crop boxes, fallback and output size") {
  std::mt19937_64 rng(21);
  int fallbacks = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    const vit::data::CropBox b = vit::data::random_resized_crop_box(64, 48, rng);
    REQUIRE(b.width >= 1);
    REQUIRE(b.height >= 1);
    REQUIRE(b.left >= 0);
    REQUIRE(b.top >= 0);
    REQUIRE(b.left + b.width <= 64);
    REQUIRE(b.top + b.height <= 48);
    const double frac = double(b.width) * b.height / (64.0 * 48.0);
    CHECK(frac > 0.05);  // 0.08 less rounding
    const double ratio = double(b.width) / b.height;
    fallbacks += (b.width == 64 && b.height == 48);
    if (!(b.width == 64 && b.height == 48)) {
      CHECK(ratio > 0.6);
      CHECK(ratio < 1.6);
    }
  }
  CHECK(fallbacks < 100);

  // A scale that can never fit makes every try fail: the centred fallback,
  // its ratio clamped to (3/4, 4/3): a 100x50 image gives round(50 * 4/3) = 67 wide.
  vit::data::CropBox b = vit::data::random_resized_crop_box(100, 50, rng, {2.0, 3.0});
  CHECK(b.width == 67);
  CHECK(b.height == 50);
  CHECK(b.left == 16);
  CHECK(b.top == 0);
  b = vit::data::random_resized_crop_box(50, 100, rng, {2.0, 3.0});
  CHECK(b.width == 50);
  CHECK(b.height == 67);
  CHECK(b.left == 0);
  CHECK(b.top == 16);
  b = vit::data::random_resized_crop_box(60, 50, rng, {2.0, 3.0});
  CHECK(b.width == 60);
  CHECK(b.height == 50);
  // scale (1, 1), ratio (1, 1) on a square: the whole image.
  b = vit::data::random_resized_crop_box(40, 40, rng, {1.0, 1.0}, {1.0, 1.0});
  CHECK(b.width == 40);
  CHECK(b.height == 40);

  const vit::Image im = pattern(64, 48, 0, 0, 5);
  std::mt19937_64 r1(4), r2(4), r3(5);
  const vit::Image a = vit::data::random_resized_crop(im, 24, 20, r1);
  CHECK(a.width == 24);
  CHECK(a.height == 20);
  CHECK(same(vit::data::random_resized_crop(im, 24, 20, r2), a));
  bool differs = false;
  for (int i = 0; i < 5; ++i) differs |= !same(vit::data::random_resized_crop(im, 24, 20, r3), a);
  CHECK(differs);

  CHECK_THROWS_AS(vit::data::random_resized_crop_box(0, 5, rng), vit::argument_error);
  CHECK_THROWS_AS(vit::data::random_resized_crop_box(5, 5, rng, {0.5, 0.1}), vit::argument_error);
  CHECK_THROWS_AS(vit::data::random_resized_crop_box(5, 5, rng, {0.1, 1.0}, {0.0, 1.0}),
                  vit::argument_error);
}

TEST_CASE("augment: transforms for make_batch") {
  const vit::Image im = pattern(40, 30, 0, 0, 5);
  std::mt19937_64 rng(8);

  vit::DataConfig dc;
  dc.input_size = 16;
  dc.crop_pct = 0.875;
  dc.interpolation = "bilinear";
  const vit::data::Transform eval = vit::data::make_eval_transform(dc);
  CHECK(same(eval(im, rng), vit::eval_transform(im, dc)));
  dc.interpolation = "cubic";
  CHECK_THROWS_AS(vit::data::make_eval_transform(dc), vit::argument_error);

  const vit::data::Transform train = vit::data::make_train_transform(24);
  const vit::Image t = train(im, rng);
  CHECK(t.width == 24);
  CHECK(t.height == 24);
  CHECK_THROWS_AS(vit::data::make_train_transform(24, vit::Interpolation::bilinear, {0.5, 0.1}),
                  vit::argument_error);

  // CIFAR: 32x32 in, 32x32 out (or resized to the model's size).
  const vit::Image small = pattern(32, 32, 0, 0, 1);
  const vit::data::Transform cifar = vit::data::make_cifar_train_transform();
  const vit::Image c = cifar(small, rng);
  CHECK(c.width == 32);
  CHECK(c.height == 32);
  const vit::Image c48 = vit::data::make_cifar_train_transform(48)(small, rng);
  CHECK(c48.width == 48);
  CHECK(c48.height == 48);
  CHECK_THROWS_AS(vit::data::make_cifar_train_transform(32, -1), vit::argument_error);
}

TEST_CASE("augment: random_erasing replaces one box with noise, the rest untouched") {
  const vit::Image im = pattern(40, 30, 0, 0, 7);
  std::mt19937_64 rng(21);
  // p = 0: a copy, one number drawn.
  std::mt19937_64 probe = rng;
  CHECK(same(vit::data::random_erasing(im, rng, 0.0), im));
  probe();
  CHECK(rng() == probe());

  int erased = 0;
  for (int trial = 0; trial < 200; ++trial) {
    std::mt19937_64 a{std::uint64_t(trial)}, b{std::uint64_t(trial)};
    const vit::Image out = vit::data::random_erasing(im, a, 1.0);
    CHECK(same(out, vit::data::random_erasing(im, b, 1.0)));  // reproducible
    // The changed pixels lie in one box no larger than a third of the image
    // (noise can equal the original byte, so the box is bounded from outside).
    int x0 = im.width, y0 = im.height, x1 = -1, y1 = -1;
    for (int y = 0; y < im.height; ++y)
      for (int x = 0; x < im.width; ++x)
        for (int c = 0; c < 3; ++c)
          if (out.at(x, y, c) != im.at(x, y, c)) {
            x0 = std::min(x0, x);
            y0 = std::min(y0, y);
            x1 = std::max(x1, x);
            y1 = std::max(y1, y);
          }
    if (x1 < 0) continue;  // all 10 tries failed: nothing erased
    ++erased;
    CHECK(x1 - x0 + 1 < im.width);
    CHECK(y1 - y0 + 1 < im.height);
    CHECK((x1 - x0 + 1) * (y1 - y0 + 1) <= im.width * im.height / 3 + im.width + im.height);
  }
  CHECK(erased > 150);  // most tries find a box that fits

  CHECK_THROWS_AS(vit::data::random_erasing(im, rng, 1.5), vit::argument_error);
  CHECK_THROWS_AS(vit::data::random_erasing(im, rng, 0.5, {0.5, 0.1}), vit::argument_error);
  CHECK_THROWS_AS(vit::data::random_erasing(im, rng, 0.5, {0.1, 0.2}, {0.0, 1.0}),
                  vit::argument_error);
  CHECK_THROWS_AS(vit::data::random_erasing(vit::Image(), rng), vit::argument_error);
  // The transforms take the probability and check it.
  CHECK_THROWS_AS(vit::data::make_cifar_train_transform(32, 4, vit::Interpolation::bilinear, 2.0),
                  vit::argument_error);
  const vit::Image small = pattern(32, 32, 0, 0, 1);
  std::mt19937_64 r1(5), r2(5);
  const auto plain = vit::data::make_cifar_train_transform(32, 4);
  const auto erasing =
      vit::data::make_cifar_train_transform(32, 4, vit::Interpolation::bilinear, 1.0);
  const vit::Image e = erasing(small, r1);
  CHECK_FALSE(same(e, plain(small, r2)));  // same crop and flip, then a box of noise
}
