// Tests of vit/io/safetensors.hpp: round trips through the writer and reader, the real
// timm fixture, and hostile files that must be rejected with a precise error.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "test_support.hpp"
#include "vit/io/safetensors.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <sys/stat.h>  // mkfifo
#include <unistd.h>    // sysconf
#define VIT_TEST_POSIX 1
#else
#define VIT_TEST_POSIX 0
#endif

#ifndef VIT_TEST_DATA_DIR
#error "VIT_TEST_DATA_DIR must be defined as the absolute path of tests/data"
#endif

namespace {

namespace fs = std::filesystem;
using vit::io::DType;
using vit::io::SafeTensors;
using vit::io::SafeTensorsWriter;

const std::string kSource = "hostile.safetensors";

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// Runs f, expecting exception E; returns its message ("" and a failed check if none is thrown).
template <class E, class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  FAIL_CHECK("no exception thrown");
  return {};
}

// The message must start with "<source>: " and contain every part.
void check_message(const std::string& msg, const std::string& source,
                   std::initializer_list<const char*> parts) {
  INFO("message: " << msg);
  CHECK(starts_with(msg, source + ": "));
  for (const char* p : parts) CHECK(contains(msg, p));
}

// from_bytes(bytes) must throw checkpoint_error naming kSource and every part.
void check_rejected(std::vector<std::uint8_t> bytes, std::initializer_list<const char*> parts) {
  const std::string msg = message_of<vit::checkpoint_error>(
      [&] { SafeTensors::from_bytes(std::move(bytes), kSource); });
  check_message(msg, kSource, parts);
}

void append_u64(std::vector<std::uint8_t>& out, std::uint64_t n) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::uint8_t>(n >> (8 * i)));
}

// A file with the given header text and `data_bytes` zero bytes of data.
std::vector<std::uint8_t> file_with(const std::string& header, std::size_t data_bytes = 0) {
  std::vector<std::uint8_t> out;
  append_u64(out, header.size());
  out.insert(out.end(), header.begin(), header.end());
  out.resize(out.size() + data_bytes, 0);
  return out;
}

// A file with just a header length field followed by `rest` zero bytes.
std::vector<std::uint8_t> length_only(std::uint64_t n, std::size_t rest) {
  std::vector<std::uint8_t> out;
  append_u64(out, n);
  out.resize(out.size() + rest, 0);
  return out;
}

SafeTensors load(std::vector<std::uint8_t> bytes) {
  return SafeTensors::from_bytes(std::move(bytes), "test");
}

std::uint16_t raw_u16(const SafeTensors& st, const std::string& name, std::size_t i) {
  std::uint16_t v;
  std::memcpy(&v, st.raw(name) + 2 * i, 2);
  return v;
}

std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

std::uint64_t bits_of(double d) {
  std::uint64_t u;
  std::memcpy(&u, &d, 8);
  return u;
}

// Independent reference decoder for small IEEE-style formats (exact via ldexp).
double decode_small(std::uint16_t bits, int exp_bits, int man_bits) {
  const bool neg = (bits >> (exp_bits + man_bits)) & 1;
  const int e = (bits >> man_bits) & ((1 << exp_bits) - 1);
  const int m = bits & ((1 << man_bits) - 1);
  const int bias = (1 << (exp_bits - 1)) - 1;
  double v;
  if (e == (1 << exp_bits) - 1)
    v = m ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else if (e == 0)
    v = std::ldexp(m, 1 - bias - man_bits);
  else
    v = std::ldexp(m + (1 << man_bits), e - bias - man_bits);
  return neg ? -v : v;
}

// Writes one tensor of `values` as `dtype` and reads back the stored 16-bit patterns.
std::vector<std::uint16_t> encode16(const std::vector<double>& values, DType dtype) {
  SafeTensorsWriter w;
  w.add("t", {static_cast<std::int64_t>(values.size())}, values, dtype);
  const SafeTensors st = load(w.to_bytes());
  std::vector<std::uint16_t> out;
  for (std::size_t i = 0; i < values.size(); ++i) out.push_back(raw_u16(st, "t", i));
  return out;
}

using vit_test::TempDir;

void write_file(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

const std::string kFixture =
    std::string(VIT_TEST_DATA_DIR) + "/timm_vit_tiny_p16_224/model.safetensors";

// A valid one-tensor entry for hand-made headers.
const std::string kEntry = R"("w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]})";

std::vector<double> random_values(std::size_t n, std::mt19937& rng) {
  std::normal_distribution<double> dist(0.0, 1.0);
  std::vector<double> v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

// Tensors of every float dtype, an integer one, a scalar and an empty one, most spanning
// several pages and starting at unaligned offsets.
SafeTensorsWriter mixed_writer() {
  std::mt19937 rng(7);
  SafeTensorsWriter w;
  w.set_metadata("format", "pt");
  w.add("f32", {3, 4099}, random_values(3 * 4099, rng), DType::F32);
  w.add("f16", {7, 1001}, random_values(7 * 1001, rng), DType::F16);
  w.add("f64", {5003}, random_values(5003, rng), DType::F64);
  w.add("bf16", {9001}, random_values(9001, rng), DType::BF16);
  w.add_raw("ids", DType::I32, {3}, std::vector<std::uint8_t>(12, 7));
  w.add("scalar", {}, random_values(1, rng), DType::F32);
  w.add("empty", {0, 5}, std::vector<double>{}, DType::F32);
  return w;
}

// Same header, same bytes, and the same values read as float and as double.
void check_same_contents(const SafeTensors& a, const SafeTensors& b) {
  CHECK(a.metadata() == b.metadata());
  CHECK(a.data_offset() == b.data_offset());
  REQUIRE(a.tensors().size() == b.tensors().size());
  for (std::size_t i = 0; i < a.tensors().size(); ++i) {
    const auto& ta = a.tensors()[i];
    const auto& tb = b.tensors()[i];
    INFO("tensor " << ta.name);
    CHECK(ta.name == tb.name);
    CHECK(ta.dtype == tb.dtype);
    CHECK(ta.shape == tb.shape);
    CHECK(ta.begin == tb.begin);
    CHECK(ta.end == tb.end);
    CHECK(std::memcmp(a.raw(ta.name), b.raw(tb.name), ta.nbytes()) == 0);
    if (vit::io::is_floating(ta.dtype)) {
      CHECK(a.read<float>(ta.name) == b.read<float>(tb.name));
      CHECK(a.read<double>(ta.name) == b.read<double>(tb.name));
    }
  }
}

#if defined(__linux__)
// Resident pages of this process (anonymous and file-backed).
long resident_pages() {
  std::ifstream f("/proc/self/statm");
  long size = 0, resident = 0;
  f >> size >> resident;
  return resident;
}
#endif

}  // namespace

// --- dtypes -------------------------------------------------------------------------------

TEST_CASE("safetensors: dtype sizes and names") {
  struct Row {
    DType d;
    std::size_t size;
    const char* name;
  };
  const Row rows[] = {{DType::BOOL, 1, "BOOL"}, {DType::U8, 1, "U8"},   {DType::I8, 1, "I8"},
                      {DType::U16, 2, "U16"},   {DType::I16, 2, "I16"}, {DType::F16, 2, "F16"},
                      {DType::BF16, 2, "BF16"}, {DType::U32, 4, "U32"}, {DType::I32, 4, "I32"},
                      {DType::F32, 4, "F32"},   {DType::U64, 8, "U64"}, {DType::I64, 8, "I64"},
                      {DType::F64, 8, "F64"}};
  for (const Row& r : rows) {
    CHECK(vit::io::dtype_size(r.d) == r.size);
    CHECK(std::string(vit::io::dtype_name(r.d)) == r.name);
    CHECK(vit::io::parse_dtype(r.name) == r.d);
  }
  CHECK_FALSE(vit::io::parse_dtype("f32").has_value());
  CHECK_FALSE(vit::io::parse_dtype("F8_E4M3").has_value());
  CHECK(vit::io::is_floating(DType::BF16));
  CHECK_FALSE(vit::io::is_floating(DType::I32));
}

// --- round trips --------------------------------------------------------------------------

TEST_CASE("safetensors: F32 round trip is exact, read as float and as double") {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> v = {0.0f,
                                -0.0f,
                                1.0f,
                                -2.5f,
                                1.0f / 3.0f,
                                std::numeric_limits<float>::max(),
                                std::numeric_limits<float>::denorm_min(),
                                -inf,
                                inf,
                                std::numeric_limits<float>::quiet_NaN()};
  SafeTensorsWriter w;
  w.add("x", {2, 5}, v.data());
  const SafeTensors st = load(w.to_bytes());
  const auto f = st.read<float>("x");
  const auto d = st.read<double>("x");
  REQUIRE(f.size() == v.size());
  REQUIRE(d.size() == v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    CHECK(bits_of(f[i]) == bits_of(v[i]));
    if (std::isnan(v[i]))
      CHECK(std::isnan(d[i]));
    else
      CHECK(bits_of(d[i]) == bits_of(static_cast<double>(v[i])));
  }
  CHECK(st.info("x").dtype == DType::F32);
  CHECK(st.info("x").shape == std::vector<std::int64_t>{2, 5});
  CHECK(st.info("x").numel() == 10);
}

TEST_CASE("safetensors: F64 round trip is exact and reading as float rounds and saturates") {
  const std::vector<double> v = {0.1, -1e300, 1.0 / 3.0, 5e-324, 1e-300, 3.0};
  SafeTensorsWriter w;
  w.add("x", {6}, v, DType::F64);
  const SafeTensors st = load(w.to_bytes());
  const auto d = st.read<double>("x");
  for (std::size_t i = 0; i < v.size(); ++i) CHECK(bits_of(d[i]) == bits_of(v[i]));
  const auto f = st.read<float>("x");
  CHECK(f[0] == 0.1f);
  CHECK(f[1] == -std::numeric_limits<float>::infinity());
  CHECK(f[2] == 1.0f / 3.0f);
  CHECK(f[3] == 0.0f);
  CHECK(f[5] == 3.0f);
}

TEST_CASE("safetensors: double stored as F32 rounds to nearest and overflows to inf") {
  const double max = std::numeric_limits<float>::max();
  const std::vector<double> v = {0.1, 1e300, -1e300, max, max + 0x1p102, max + 0x1p103};
  SafeTensorsWriter w;
  w.add("x", {6}, v, DType::F32);
  const auto f = load(w.to_bytes()).read<float>("x");
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(f[0] == 0.1f);
  CHECK(f[1] == inf);
  CHECK(f[2] == -inf);
  CHECK(f[3] == std::numeric_limits<float>::max());
  CHECK(f[4] == std::numeric_limits<float>::max());  // below the halfway point
  CHECK(f[5] == inf);                                // the tie rounds to even, i.e. inf
}

TEST_CASE("safetensors: F16 round trip of representable values is exact") {
  const std::vector<float> v = {0.0f,     1.0f, -2.0f,           0.5f,   65504.0f, -65504.0f,
                                0x1p-14f, 1.5f, 1.0f + 0x1p-10f, 1000.0f};
  SafeTensorsWriter w;
  w.add("h", {10}, v.data(), DType::F16);
  const SafeTensors st = load(w.to_bytes());
  CHECK(st.info("h").nbytes() == 20);
  const auto f = st.read<float>("h");
  for (std::size_t i = 0; i < v.size(); ++i) CHECK(f[i] == v[i]);
  CHECK(raw_u16(st, "h", 1) == 0x3c00);
  CHECK(raw_u16(st, "h", 2) == 0xc000);
  CHECK(raw_u16(st, "h", 4) == 0x7bff);
  CHECK(raw_u16(st, "h", 6) == 0x0400);
}

TEST_CASE("safetensors: F16 rounds to nearest, ties to even") {
  const auto h = encode16({1.0 / 3.0, 1.0 + 0x1p-11, 1.0 + 3 * 0x1p-11, 1.0 + 0x1p-11 + 0x1p-20,
                           65519.0, 65520.0, -65520.0, 1e10},
                          DType::F16);
  CHECK(h[0] == 0x3555);  // 0.333251953125, the nearest half to 1/3
  CHECK(decode_small(h[0], 5, 10) == 0.333251953125);
  CHECK(h[1] == 0x3c00);  // tie -> even (down)
  CHECK(h[2] == 0x3c02);  // tie -> even (up)
  CHECK(h[3] == 0x3c01);  // just above the tie
  CHECK(h[4] == 0x7bff);  // 65519 < 65520 (halfway to 2^16) -> max
  CHECK(h[5] == 0x7c00);  // tie with odd max -> inf
  CHECK(h[6] == 0xfc00);
  CHECK(h[7] == 0x7c00);
  // float input rounds the same way.
  const float third = 1.0f / 3.0f;
  SafeTensorsWriter w;
  w.add("t", {1}, &third, DType::F16);
  CHECK(load(w.to_bytes()).read<float>("t")[0] == 0.333251953125f);
}

TEST_CASE("safetensors: F16 subnormals encode and decode exactly") {
  const auto h = encode16({0x1p-24, 0x1p-25, 1.5 * 0x1p-25, 1023 * 0x1p-24, 0x1p-15, -0x1p-24,
                           1e-30, 0x1p-14 - 0x1p-25},
                          DType::F16);
  CHECK(h[0] == 0x0001);  // smallest subnormal
  CHECK(h[1] == 0x0000);  // half of it: tie -> even (zero)
  CHECK(h[2] == 0x0001);
  CHECK(h[3] == 0x03ff);  // largest subnormal
  CHECK(h[4] == 0x0200);
  CHECK(h[5] == 0x8001);
  CHECK(h[6] == 0x0000);
  CHECK(h[7] == 0x0400);  // tie between largest subnormal (odd) and smallest normal -> normal

  SafeTensorsWriter w;
  w.add_raw("s", DType::F16, {3}, {0x01, 0x00, 0xff, 0x03, 0x01, 0x80});
  const auto f = load(w.to_bytes()).read<float>("s");
  CHECK(f[0] == 0x1p-24f);
  CHECK(f[1] == 1023 * 0x1p-24f);
  CHECK(f[2] == -0x1p-24f);
}

TEST_CASE("safetensors: F16 inf, nan and signed zero") {
  const double inf = std::numeric_limits<double>::infinity();
  const auto h = encode16({inf, -inf, std::numeric_limits<double>::quiet_NaN(), -0.0}, DType::F16);
  CHECK(h[0] == 0x7c00);
  CHECK(h[1] == 0xfc00);
  CHECK((h[2] & 0x7c00) == 0x7c00);
  CHECK((h[2] & 0x03ff) != 0);
  CHECK(h[3] == 0x8000);

  SafeTensorsWriter w;
  w.add_raw("s", DType::F16, {4}, {0x00, 0x7c, 0x00, 0xfc, 0x01, 0x7e, 0x00, 0x80});
  const SafeTensors st = load(w.to_bytes());
  const auto f = st.read<float>("s");
  CHECK(f[0] == std::numeric_limits<float>::infinity());
  CHECK(f[1] == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(f[2]));
  CHECK(f[3] == 0.0f);
  CHECK(std::signbit(f[3]));
  const auto d = st.read<double>("s");
  CHECK(d[0] == inf);
  CHECK(std::isnan(d[2]));
  CHECK(std::signbit(d[3]));
}

TEST_CASE("safetensors: every F16 bit pattern decodes exactly and re-encodes to itself") {
  std::vector<std::uint8_t> bytes;
  for (std::uint32_t h = 0; h < 65536; ++h) {
    bytes.push_back(static_cast<std::uint8_t>(h & 0xff));
    bytes.push_back(static_cast<std::uint8_t>(h >> 8));
  }
  SafeTensorsWriter w;
  w.add_raw("all", DType::F16, {65536}, bytes);
  const auto f = load(w.to_bytes()).read<float>("all");
  const auto back = encode16(std::vector<double>(f.begin(), f.end()), DType::F16);
  int bad_decode = 0, bad_encode = 0;
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const double ref = decode_small(static_cast<std::uint16_t>(h), 5, 10);
    if (std::isnan(ref)) {
      bad_decode += !std::isnan(f[h]);
      bad_encode += (back[h] & 0x7c00) != 0x7c00 || (back[h] & 0x3ff) == 0;
    } else {
      bad_decode += static_cast<double>(f[h]) != ref || std::signbit(f[h]) != std::signbit(ref);
      bad_encode += back[h] != h;
    }
  }
  CHECK(bad_decode == 0);
  CHECK(bad_encode == 0);
}

TEST_CASE("safetensors: BF16 round trip and rounding to nearest even") {
  const auto b = encode16({1.0, -2.5, 1.0 / 3.0, 1.0 + 0x1p-8, 1.0 + 3 * 0x1p-8,
                           std::numeric_limits<float>::max(), 0x1p-133, 0x1p-134, 3.0e38},
                          DType::BF16);
  CHECK(b[0] == 0x3f80);
  CHECK(b[1] == 0xc020);
  CHECK(b[2] == 0x3eab);  // 0.333984375, the nearest bfloat16 to 1/3
  CHECK(decode_small(b[2], 8, 7) == 0.333984375);
  CHECK(b[3] == 0x3f80);  // tie -> even (down)
  CHECK(b[4] == 0x3f82);  // tie -> even (up)
  CHECK(b[5] == 0x7f80);  // FLT_MAX rounds up to inf in bfloat16
  CHECK(b[6] == 0x0001);  // smallest bfloat16 subnormal
  CHECK(b[7] == 0x0000);  // half of it -> even (zero)
  CHECK(b[8] == 0x7f62);

  const float third = 1.0f / 3.0f;
  SafeTensorsWriter w;
  w.add("t", {}, &third, DType::BF16);
  const SafeTensors st = load(w.to_bytes());
  CHECK(st.info("t").shape.empty());
  CHECK(st.info("t").numel() == 1);
  CHECK(st.read<float>("t")[0] == 0.333984375f);
  CHECK(st.read<double>("t")[0] == 0.333984375);
}

TEST_CASE("safetensors: BF16 inf and nan, and every bit pattern decodes exactly") {
  const double inf = std::numeric_limits<double>::infinity();
  const auto b = encode16({inf, -inf, -std::numeric_limits<double>::quiet_NaN()}, DType::BF16);
  CHECK(b[0] == 0x7f80);
  CHECK(b[1] == 0xff80);
  CHECK((b[2] & 0x7f80) == 0x7f80);
  CHECK((b[2] & 0x007f) != 0);

  std::vector<std::uint8_t> bytes;
  for (std::uint32_t h = 0; h < 65536; ++h) {
    bytes.push_back(static_cast<std::uint8_t>(h & 0xff));
    bytes.push_back(static_cast<std::uint8_t>(h >> 8));
  }
  SafeTensorsWriter w;
  w.add_raw("all", DType::BF16, {256, 256}, bytes);
  const auto d = load(w.to_bytes()).read<double>("all");
  const auto back = encode16(d, DType::BF16);
  int bad_decode = 0, bad_encode = 0;
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const double ref = decode_small(static_cast<std::uint16_t>(h), 8, 7);
    if (std::isnan(ref)) {
      bad_decode += !std::isnan(d[h]);
    } else {
      bad_decode += d[h] != ref || std::signbit(d[h]) != std::signbit(ref);
      bad_encode += back[h] != h;
    }
  }
  CHECK(bad_decode == 0);
  CHECK(bad_encode == 0);
}

TEST_CASE("safetensors: doubles round once to F16/BF16 (no double rounding through float)") {
  // Via float these would first round to the exact tie and then to even (down).
  CHECK(encode16({1.0 + 0x1p-11 + 0x1p-40}, DType::F16)[0] == 0x3c01);
  CHECK(encode16({1.0 + 0x1p-8 + 0x1p-30}, DType::BF16)[0] == 0x3f81);
}

TEST_CASE("safetensors: metadata round trip") {
  SafeTensorsWriter w;
  w.set_metadata("format", "pt");
  w.set_metadata("note", "caf\xc3\xa9 \"quoted\"\n");
  w.set_metadata("empty", "");
  w.set_metadata("format", "vit");  // later value wins
  const float x = 1.0f;
  w.add("x", {1}, &x);
  const SafeTensors st = load(w.to_bytes());
  const std::map<std::string, std::string> expected = {
      {"format", "vit"}, {"note", "caf\xc3\xa9 \"quoted\"\n"}, {"empty", ""}};
  CHECK(st.metadata() == expected);
  CHECK(st.tensors().size() == 1);
  CHECK_FALSE(st.contains("__metadata__"));
}

TEST_CASE("safetensors: no metadata gives an empty map") {
  SafeTensorsWriter w;
  const float x = 1.0f;
  w.add("x", {1}, &x);
  CHECK(load(w.to_bytes()).metadata().empty());
}

TEST_CASE("safetensors: tensors() lists tensors in file (offset) order") {
  const std::vector<float> b = {1, 2, 3};
  const std::vector<double> a = {4, 5};
  const std::vector<float> c = {6};
  SafeTensorsWriter w;
  w.add("b", {3}, b);
  w.add("a", {2, 1}, a, DType::F64);
  w.add("c", {1}, c, DType::F16);
  const SafeTensors st = load(w.to_bytes());
  const auto& t = st.tensors();
  REQUIRE(t.size() == 3);
  CHECK(t[0].name == "b");
  CHECK(t[1].name == "a");
  CHECK(t[2].name == "c");
  CHECK(t[0].begin == 0);
  CHECK(t[0].end == 12);
  CHECK(t[1].begin == 12);
  CHECK(t[1].end == 28);
  CHECK(t[2].begin == 28);
  CHECK(t[2].end == 30);
  CHECK(st.read<double>("a") == a);
  CHECK(st.read<float>("b") == b);
  CHECK(st.read<float>("c") == c);
}

TEST_CASE("safetensors: header starts with '{' and the data section is 8-byte aligned") {
  for (const char* name : {"a", "ab", "abcdefg", "a_much_longer_tensor_name"}) {
    SafeTensorsWriter w;
    const float x = 1.0f;
    w.add(name, {1}, &x);
    const auto bytes = w.to_bytes();
    REQUIRE(bytes.size() > 9);
    CHECK(bytes[8] == '{');
    const SafeTensors st = load(bytes);
    CHECK(st.data_offset() % 8 == 0);
    CHECK(st.data_offset() + 4 == bytes.size());
  }
}

TEST_CASE("safetensors: empty writer and zero-element tensors are valid") {
  const SafeTensors empty = load(SafeTensorsWriter().to_bytes());
  CHECK(empty.tensors().empty());

  SafeTensorsWriter w;
  const float x = 7.0f;
  w.add<float>("none", {0, 3}, nullptr);
  w.add("one", {1}, &x);
  w.add<float>("none2", {4, 0}, nullptr, DType::F16);
  const SafeTensors st = load(w.to_bytes());
  CHECK(st.tensors().size() == 3);
  CHECK(st.info("none").numel() == 0);
  CHECK(st.read<float>("none").empty());
  CHECK(st.read<float>("one") == std::vector<float>{7.0f});
}

TEST_CASE("safetensors: raw() exposes the little-endian bytes of any dtype") {
  SafeTensorsWriter w;
  w.add_raw("ids", DType::I32, {2}, {1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff});
  w.add_raw("mask", DType::BOOL, {3}, {1, 0, 1});
  const SafeTensors st = load(w.to_bytes());
  std::int32_t ids[2];
  std::memcpy(ids, st.raw("ids"), sizeof ids);
  CHECK(ids[0] == 1);
  CHECK(ids[1] == -2);
  CHECK(st.info("mask").dtype == DType::BOOL);
  CHECK(st.raw("mask")[2] == 1);
}

TEST_CASE("safetensors: info/read of a missing tensor name the file and tensor") {
  const SafeTensors st = SafeTensors::from_bytes(SafeTensorsWriter().to_bytes(), "model.st");
  CHECK_FALSE(st.contains("w"));
  CHECK(message_of<vit::checkpoint_error>([&] { st.info("w"); }) == "model.st: no tensor 'w'");
  CHECK(message_of<vit::checkpoint_error>([&] { st.read<float>("w"); }) ==
        "model.st: no tensor 'w'");
  CHECK(message_of<vit::checkpoint_error>([&] { st.raw("w"); }) == "model.st: no tensor 'w'");
}

TEST_CASE("safetensors: writer rejects misuse with argument_error") {
  SafeTensorsWriter w;
  const std::vector<float> v = {1, 2, 3, 4};
  w.add("w", {4}, v);
  CHECK(contains(message_of<vit::argument_error>([&] { w.add("w", {4}, v); }), "duplicate"));
  CHECK(contains(message_of<vit::argument_error>([&] { w.add("__metadata__", {4}, v); }),
                 "reserved"));
  CHECK(contains(message_of<vit::argument_error>([&] {
                   w.add("n", {-1, 4}, v.data());
                 }),
                 "negative"));
  CHECK(contains(message_of<vit::argument_error>([&] { w.add("c", {5}, v); }), "got 4"));
  CHECK(contains(message_of<vit::argument_error>([&] { w.add("i", {4}, v, DType::I32); }),
                 "add_raw"));
  CHECK(contains(message_of<vit::argument_error>([&] {
                   w.add_raw("r", DType::F32, {2}, {1, 2, 3});
                 }),
                 "needs 8 bytes, got 3"));
  CHECK(
      contains(message_of<vit::argument_error>([&] { w.add<float>("z", {2}, nullptr); }), "null"));
  w.set_metadata("bad", "\xff\xfe");
  CHECK(contains(message_of<vit::argument_error>([&] { w.to_bytes(); }), "UTF-8"));
  // The failed adds left no trace.
  w.set_metadata("bad", "ok");
  CHECK(load(w.to_bytes()).tensors().size() == 1);
}

// --- files --------------------------------------------------------------------------------

TEST_CASE("safetensors: write to a path, then open it") {
  TempDir dir;
  const std::string path = dir / "model.safetensors";
  const std::vector<float> v = {1.5f, -2.0f, 3.25f, 0.0f, 8.0f, -0.5f};
  SafeTensorsWriter w;
  w.set_metadata("format", "pt");
  w.add("weight", {2, 3}, v);
  w.write(path);
  const SafeTensors st = SafeTensors::open(path);
  CHECK(st.source() == path);
  CHECK(st.read<float>("weight") == v);
  CHECK(st.metadata().at("format") == "pt");
  CHECK(dir.entries().size() == 1);  // no temporary left behind

  // The bytes on disk are exactly to_bytes().
  std::ifstream f(path, std::ios::binary);
  const std::vector<std::uint8_t> disk((std::istreambuf_iterator<char>(f)),
                                       std::istreambuf_iterator<char>());
  CHECK(disk == w.to_bytes());
}

TEST_CASE("safetensors: write replaces an existing file") {
  TempDir dir;
  const std::string path = dir / "m.safetensors";
  write_file(path, {1, 2, 3});
  SafeTensorsWriter w;
  const double x = 2.0;
  w.add("x", {1}, &x, DType::F64);
  w.write(path);
  CHECK(SafeTensors::open(path).read<double>("x") == std::vector<double>{2.0});
  CHECK(dir.entries().size() == 1);
}

TEST_CASE("safetensors: write into a missing folder throws io_error and leaves nothing") {
  TempDir dir;
  const std::string path = dir / "no_such_dir/model.safetensors";
  SafeTensorsWriter w;
  const float x = 1.0f;
  w.add("x", {1}, &x);
  const std::string msg = message_of<vit::io_error>([&] { w.write(path); });
  check_message(msg, path, {});
  CHECK_FALSE(fs::exists(path));
  CHECK(dir.entries().size() == 0);
}

TEST_CASE("safetensors: write over a directory throws io_error and cleans up") {
  TempDir dir;
  const std::string path = dir / "taken";
  fs::create_directory(path);
  SafeTensorsWriter w;
  const std::string msg = message_of<vit::io_error>([&] { w.write(path); });
  check_message(msg, path, {"rename"});
  CHECK(fs::is_directory(path));
  CHECK(dir.entries().size() == 1);
}

// --- memory-mapped files ------------------------------------------------------------------

TEST_CASE("safetensors: a mapped file and the same bytes in memory read identically") {
  TempDir dir;
  const std::string path = dir / "mixed.safetensors";
  const SafeTensorsWriter w = mixed_writer();
  w.write(path);
  const SafeTensors mapped = SafeTensors::open(path);
  const SafeTensors in_memory = SafeTensors::from_bytes(w.to_bytes(), path);
  CHECK(mapped.mapped() == bool(VIT_TEST_POSIX));
  CHECK_FALSE(in_memory.mapped());
  check_same_contents(mapped, in_memory);
  CHECK(mapped.read<float>("scalar").size() == 1);
  CHECK(mapped.read<float>("empty").empty());
  check_message(message_of<vit::checkpoint_error>([&] { mapped.read<float>("ids"); }), path,
                {"tensor 'ids'", "dtype I32"});
}

TEST_CASE("safetensors: check_read throws what read would, and returns the tensor's info") {
  const SafeTensors st = SafeTensors::from_bytes(mixed_writer().to_bytes(), kSource);
  CHECK(&st.check_read("f16", 7 * 1001) == &st.info("f16"));
  CHECK(&st.check_read("empty", 0) == &st.info("empty"));
  float out[3];
  for (std::size_t count : {std::size_t(3), std::size_t(7007)})
    CHECK(message_of<vit::checkpoint_error>([&] { st.check_read("ids", count); }) ==
          message_of<vit::checkpoint_error>([&] { st.read("ids", out, 3); }));
  CHECK(message_of<vit::checkpoint_error>([&] { st.check_read("f16", 3); }) ==
        message_of<vit::checkpoint_error>([&] { st.read("f16", out, 3); }));
  CHECK(message_of<vit::checkpoint_error>([&] { st.check_read("nope", 3); }) ==
        kSource + ": no tensor 'nope'");
}

TEST_CASE("safetensors: release() gives back a mapped tensor's pages, and reads stay correct") {
  TempDir dir;
  const std::string path = dir / "big.safetensors";
  std::mt19937 rng(11);
  const std::size_t n = std::size_t(1) << 20;  // 4 MiB of F32 per tensor
  const std::vector<double> a = random_values(n, rng), b = random_values(n, rng);
  const std::vector<double> c = random_values(5, rng);
  SafeTensorsWriter w;
  w.add("a", {std::int64_t(n)}, a, DType::F32);
  w.add("b", {std::int64_t(n)}, b, DType::F32);
  w.add("c", {5}, c, DType::F32);
  w.write(path);
  const SafeTensors ref = SafeTensors::from_bytes(w.to_bytes(), path);
  const std::vector<float> fa = ref.read<float>("a"), fb = ref.read<float>("b");

  const SafeTensors st = SafeTensors::open(path);
  REQUIRE(st.mapped() == bool(VIT_TEST_POSIX));
  std::vector<float> out(n);
  st.read("a", out.data(), n);  // touches every page of "a"
  CHECK(out == fa);
#if defined(__linux__)
  const long page = ::sysconf(_SC_PAGESIZE);
  const long before = resident_pages();
  st.release("a");
  const long after = resident_pages();
  INFO("resident pages before " << before << ", after " << after);
  // Nearly all of the tensor's pages leave the process (the two edge pages may stay, and
  // reading statm may itself cost a few pages, more so under sanitizers).
  CHECK(before - after >= long(n * sizeof(float)) / page * 9 / 10);
#endif
  // Other tensors are untouched, and the released one faults back in from the file.
  CHECK(st.read<float>("b") == fb);
  CHECK(st.read<float>("a") == fa);
  for (const auto& t : st.tensors()) st.release(t.name);
  check_same_contents(st, ref);
  st.release("c");
  st.release("c");  // idempotent
  CHECK(st.read<float>("c") == ref.read<float>("c"));
  // A private read-only mapping never writes back.
  std::ifstream f(path, std::ios::binary);
  const std::vector<std::uint8_t> disk((std::istreambuf_iterator<char>(f)),
                                       std::istreambuf_iterator<char>());
  CHECK(disk == w.to_bytes());

  check_message(message_of<vit::checkpoint_error>([&] { st.release("d"); }), path,
                {"no tensor 'd'"});
  // In memory, release() must leave the bytes alone.
  ref.release("a");
  CHECK(ref.read<float>("a") == fa);
}

TEST_CASE("safetensors: moved and copied SafeTensors keep the mapping alive") {
  static_assert(std::is_move_constructible_v<SafeTensors> &&
                std::is_move_assignable_v<SafeTensors>);
  TempDir dir;
  const std::string path = dir / "m.safetensors";
  const SafeTensorsWriter w = mixed_writer();
  w.write(path);
  const SafeTensors ref = SafeTensors::from_bytes(w.to_bytes(), path);
  std::optional<SafeTensors> first(SafeTensors::open(path));
  const std::uint8_t* raw = first->raw("f32");
  SafeTensors moved = std::move(*first);
  first.reset();
  CHECK(moved.raw("f32") == raw);  // the same mapping, not a copy
  check_same_contents(moved, ref);
  std::optional<SafeTensors> copy(moved);
  moved = SafeTensors::open(path);  // drops the first mapping's last-but-one owner
  check_same_contents(*copy, ref);
  copy.reset();
  check_same_contents(moved, ref);
}

TEST_CASE("safetensors: replacing an open file by rename keeps the opened contents") {
  TempDir dir;
  const std::string path = dir / "m.safetensors";
  const std::vector<float> v1 = {1, 2, 3, 4}, v2 = {5, 6, 7, 8, 9};
  SafeTensorsWriter w1, w2;
  w1.add("x", {4}, v1);
  w2.add("x", {5}, v2);
  w1.write(path);
  const SafeTensors st = SafeTensors::open(path);
  w2.write(path);  // a new file renamed over the old one
  CHECK(st.read<float>("x") == v1);
  CHECK(SafeTensors::open(path).read<float>("x") == v2);
}

TEST_CASE("safetensors: concurrent reads and releases of a mapped file agree") {
  TempDir dir;
  const std::string path = dir / "mixed.safetensors";
  const SafeTensorsWriter w = mixed_writer();
  w.write(path);
  const SafeTensors ref = SafeTensors::from_bytes(w.to_bytes(), path);
  const SafeTensors st = SafeTensors::open(path);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int round = 0; round < 20; ++round)
        for (const auto& info : st.tensors()) {
          if (!vit::io::is_floating(info.dtype)) continue;
          if (st.read<float>(info.name) != ref.read<float>(info.name)) ++mismatches;
          st.release(info.name);
        }
    });
  for (auto& th : threads) th.join();
  CHECK(mismatches == 0);
}

#if VIT_TEST_POSIX
TEST_CASE("safetensors: a pipe is read rather than mapped, with the same result") {
  TempDir dir;
  const std::string path = dir / "pipe.safetensors";
  REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
  const std::vector<std::uint8_t> bytes = mixed_writer().to_bytes();
  // Opening a FIFO blocks until the other end is open too.
  std::thread writer([&] {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  });
  std::optional<SafeTensors> st;
  std::string error;
  try {
    st.emplace(SafeTensors::open(path));
  } catch (const std::exception& e) {
    error = e.what();
  }
  writer.join();
  REQUIRE(error.empty());
  CHECK_FALSE(st->mapped());
  check_same_contents(*st, SafeTensors::from_bytes(bytes, path));
}
#endif

// --- the real fixture ---------------------------------------------------------------------

TEST_CASE("safetensors: timm vit_tiny fixture reads patch_embed.proj.weight") {
  const SafeTensors st = SafeTensors::open(kFixture);
  REQUIRE(st.contains("patch_embed.proj.weight"));
  const auto& info = st.info("patch_embed.proj.weight");
  CHECK(info.dtype == DType::F32);
  CHECK(info.shape == std::vector<std::int64_t>{192, 3, 16, 16});
  CHECK(info.numel() == 147456);
  CHECK(info.nbytes() == 147456 * 4);
  const auto w = st.read<float>("patch_embed.proj.weight");
  REQUIRE(w.size() == 147456);
  CHECK(w[0] == -0.03920375555753708f);
  CHECK(w[1] == -0.032333966344594955f);
  CHECK(w.back() == -0.02573959343135357f);
  double sum = 0;
  for (float x : w) sum += x;
  CHECK(sum == doctest::Approx(4.697067565592562).epsilon(1e-9));
  const auto d = st.read<double>("patch_embed.proj.weight");
  CHECK(d[0] == static_cast<double>(w[0]));
}

TEST_CASE("safetensors: timm vit_tiny fixture layout and metadata") {
  const SafeTensors st = SafeTensors::open(kFixture);
  CHECK(st.metadata().at("format") == "pt");
  CHECK(st.tensors().size() == 32);
  CHECK(st.info("cls_token").shape == std::vector<std::int64_t>{1, 1, 192});
  CHECK(st.info("pos_embed").shape == std::vector<std::int64_t>{1, 197, 192});
  CHECK(st.info("head.weight").shape == std::vector<std::int64_t>{1000, 192});
  std::uint64_t pos = 0;
  for (const auto& t : st.tensors()) {
    CHECK(t.begin == pos);
    CHECK(t.dtype == DType::F32);
    pos = t.end;
  }
  CHECK(st.data_offset() + pos == fs::file_size(kFixture));
  std::vector<float> wrong(10);
  check_message(message_of<vit::checkpoint_error>(
                    [&] { st.read("patch_embed.proj.weight", wrong.data(), wrong.size()); }),
                kFixture, {"'patch_embed.proj.weight'", "147456", "10"});
}

// --- hostile inputs: lengths --------------------------------------------------------------

TEST_CASE("safetensors hostile: missing file is an io_error naming the path") {
  TempDir dir;
  const std::string path = dir / "absent.safetensors";
  const std::string msg = message_of<vit::io_error>([&] { SafeTensors::open(path); });
  check_message(msg, path, {"No such file"});
}

TEST_CASE("safetensors hostile: a directory is an io_error naming the path") {
  TempDir dir;
  const std::string msg = message_of<vit::io_error>([&] { SafeTensors::open(dir.path.string()); });
  check_message(msg, dir.path.string(), {});
}

TEST_CASE("safetensors hostile: 0-byte file") {
  TempDir dir;
  const std::string path = dir / "empty.safetensors";
  write_file(path, {});
  check_message(message_of<vit::checkpoint_error>([&] { SafeTensors::open(path); }), path,
                {"empty file"});
  check_rejected({}, {"empty file"});
}

TEST_CASE("safetensors hostile: 5-byte file") {
  TempDir dir;
  const std::string path = dir / "five.safetensors";
  write_file(path, {1, 2, 3, 4, 5});
  check_message(message_of<vit::checkpoint_error>([&] { SafeTensors::open(path); }), path,
                {"5 bytes", "8-byte header length"});
}

TEST_CASE("safetensors hostile: header length 0") {
  check_rejected(length_only(0, 16), {"header length is 0"});
}

TEST_CASE("safetensors hostile: header length larger than the file") {
  check_rejected(length_only(100, 12), {"header length 100", "12 bytes"});
}

TEST_CASE("safetensors hostile: header length 2^63") {
  check_rejected(length_only(std::uint64_t{1} << 63, 12),
                 {"header length 9223372036854775808", "limit"});
}

TEST_CASE("safetensors hostile: header length 200 MiB in a small file") {
  check_rejected(length_only(std::uint64_t{200} << 20, 64), {"209715200", "limit of 104857600"});
}

TEST_CASE("safetensors hostile: more tensors than the limit") {
  // Empty tensors cost no data bytes, so only the count limit stops this file.
  const auto header = [](std::size_t count) {
    std::string h = "{";
    for (std::size_t i = 0; i < count; ++i)
      h += (i ? ",\"t" : "\"t") + std::to_string(i) +
           R"(":{"dtype":"F32","shape":[0],"data_offsets":[0,0]})";
    return h + "}";
  };
  CHECK(load(file_with(header(3))).tensors().size() == 3);
  check_rejected(file_with(header(vit::io::detail::kMaxTensors + 1)),
                 {"100001 tensors", "limit of 100000"});
}

// --- hostile inputs: JSON -----------------------------------------------------------------

TEST_CASE("safetensors hostile: malformed JSON") {
  check_rejected(file_with(R"({"w": {"dtype": "F32",)"), {"not valid JSON"});
  check_rejected(file_with("{} trailing"), {"not valid JSON"});
  check_rejected(file_with(std::string("{\"w\"\0:1}", 8)), {"not valid JSON"});
}

TEST_CASE("safetensors hostile: header is not UTF-8") {
  check_rejected(file_with("{\"w\xff\":{}}"), {"not valid JSON"});
}

TEST_CASE("safetensors hostile: header is a JSON array or scalar") {
  check_rejected(file_with("[]"), {"not a JSON object", "array"});
  check_rejected(file_with("42"), {"not a JSON object", "number"});
}

TEST_CASE("safetensors hostile: header with leading whitespace") {
  check_rejected(file_with(" {}"), {"must start with '{'"});
}

TEST_CASE("safetensors hostile: trailing space padding is accepted") {
  CHECK(load(file_with("{}      ")).tensors().empty());
  CHECK(load(file_with("{" + kEntry + "}   ", 24)).contains("w"));
}

TEST_CASE("safetensors hostile: duplicate tensor key") {
  check_rejected(file_with("{" + kEntry + "," + kEntry + "}", 24), {"duplicate key 'w'"});
}

TEST_CASE("safetensors hostile: duplicate field inside an entry") {
  check_rejected(
      file_with(R"({"w":{"dtype":"F32","dtype":"I32","shape":[1],"data_offsets":[0,4]}})", 4),
      {"duplicate key 'dtype'"});
}

TEST_CASE("safetensors hostile: deeply nested JSON does not crash") {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  check_rejected(file_with(R"({"w":)" + deep + "}"), {"'w'", "not an object"});
  check_rejected(file_with(R"({"w":)" + std::string(100000, '[') + "}"), {"not valid JSON"});
}

TEST_CASE("safetensors hostile: entry is not an object") {
  check_rejected(file_with(R"({"w":3})"), {"tensor 'w'", "not an object"});
}

TEST_CASE("safetensors hostile: missing field") {
  check_rejected(file_with(R"({"w":{"dtype":"F32","shape":[1]}})", 4),
                 {"tensor 'w'", "missing field 'data_offsets'"});
  check_rejected(file_with(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4),
                 {"tensor 'w'", "missing field 'dtype'"});
}

TEST_CASE("safetensors hostile: extra field") {
  check_rejected(
      file_with(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"offset":0}})", 4),
      {"tensor 'w'", "unexpected field 'offset'"});
}

TEST_CASE("safetensors hostile: unknown dtype") {
  check_rejected(file_with(R"({"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", 1),
                 {"tensor 'w'", "unknown dtype 'F8_E4M3'"});
  check_rejected(file_with(R"({"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", 4),
                 {"tensor 'w'", "unknown dtype 'f32'"});
  check_rejected(file_with(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", 4),
                 {"tensor 'w'", "dtype is not a string"});
}

TEST_CASE("safetensors hostile: negative dim") {
  check_rejected(file_with(R"({"w":{"dtype":"F32","shape":[2,-3],"data_offsets":[0,24]}})", 24),
                 {"tensor 'w'", "shape[1] = -3", "non-negative integer"});
}

TEST_CASE("safetensors hostile: non-integer dims") {
  check_rejected(file_with(R"({"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8),
                 {"tensor 'w'", "shape[0] = 2.5"});
  check_rejected(file_with(R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8),
                 {"tensor 'w'", "shape[0]"});
  check_rejected(file_with(R"({"w":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", 8),
                 {"tensor 'w'", "shape[0] = \"2\""});
  check_rejected(file_with(R"({"w":{"dtype":"F32","shape":[null],"data_offsets":[0,8]}})", 8),
                 {"tensor 'w'", "shape[0] = null"});
  check_rejected(file_with(R"({"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8),
                 {"tensor 'w'", "shape is not an array"});
}

TEST_CASE("safetensors hostile: dims that do not fit in 64 bits") {
  check_rejected(
      file_with(R"({"w":{"dtype":"U8","shape":[100000000000000000000],"data_offsets":[0,1]}})", 1),
      {"tensor 'w'", "shape[0]"});
  check_rejected(
      file_with(R"({"w":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,1]}})", 1),
      {"tensor 'w'", "too large"});
}

TEST_CASE("safetensors hostile: dims whose product overflows") {
  check_rejected(file_with(R"({"w":{"dtype":"F32","shape":[1099511627776,1099511627776],)"
                           R"("data_offsets":[0,4]}})",
                           4),
                 {"tensor 'w'", "overflows"});
  // The element count fits, but not times the dtype size.
  check_rejected(
      file_with(R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]}})", 4),
      {"tensor 'w'", "byte size", "overflows"});
}

TEST_CASE("safetensors hostile: malformed data_offsets") {
  for (const char* offsets : {"[0]", "[0,4,8]", "[-4,4]", "[\"0\",4]", "[0,4.0]", "{}", "4"}) {
    INFO(offsets);
    check_rejected(
        file_with(
            std::string(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":)") + offsets + "}}", 4),
        {"tensor 'w'", "data_offsets"});
  }
}

TEST_CASE("safetensors hostile: data_offsets begin > end") {
  check_rejected(file_with(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[8,4]}})", 8),
                 {"tensor 'w'", "begin 8 > end 4"});
}

TEST_CASE("safetensors hostile: byte size does not match the shape") {
  check_rejected(file_with(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 20),
                 {"tensor 'w'", "span 20 bytes", "needs 24 bytes"});
}

TEST_CASE("safetensors hostile: offsets past the end of the data section") {
  check_rejected(file_with("{" + kEntry + "}", 16),
                 {"tensor 'w'", "[0, 24]", "16-byte data section"});
  check_rejected(file_with(R"({"w":{"dtype":"U8","shape":[4],)"
                           R"("data_offsets":[18446744073709551611,18446744073709551615]}})"),
                 {"tensor 'w'", "past the end"});
}

TEST_CASE("safetensors hostile: overlapping tensors") {
  check_rejected(file_with(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                           12),
                 {"'a'", "'b'", "overlap"});
  // Two names for the very same bytes.
  check_rejected(file_with(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                           8),
                 {"'a'", "'b'", "overlap"});
}

TEST_CASE("safetensors hostile: a hole between tensors") {
  check_rejected(file_with(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                           R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                           12),
                 {"[4, 8]", "hole between 'a' and 'b'"});
}

TEST_CASE("safetensors hostile: a hole before the first or after the last tensor") {
  check_rejected(file_with(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
                 {"hole before 'a'"});
  check_rejected(file_with("{" + kEntry + "}", 28), {"[24, 28]", "hole after 'w'"});
  check_rejected(file_with("{}", 3), {"no tensors"});
}

TEST_CASE("safetensors hostile: truncated file") {
  SafeTensorsWriter w;
  const std::vector<float> a = {1, 2, 3, 4};
  w.add("first", {4}, a);
  w.add("last", {2, 2}, a);
  auto bytes = w.to_bytes();
  REQUIRE_NOTHROW(load(bytes));
  for (std::size_t cut : {1, 3, 16}) {
    INFO("cut " << cut);
    std::vector<std::uint8_t> shorter(bytes.begin(),
                                      bytes.end() - static_cast<std::ptrdiff_t>(cut));
    check_rejected(shorter, {"tensor 'last'", "past the end", "truncated"});
  }
  // Cut inside the header.
  check_rejected(std::vector<std::uint8_t>(bytes.begin(), bytes.begin() + 20),
                 {"exceeds", "truncated"});

  TempDir dir;
  const std::string path = dir / "cut.safetensors";
  write_file(path, std::vector<std::uint8_t>(bytes.begin(), bytes.end() - 2));
  check_message(message_of<vit::checkpoint_error>([&] { SafeTensors::open(path); }), path,
                {"tensor 'last'", "past the end"});
}

// --- hostile inputs: reads and metadata ---------------------------------------------------

TEST_CASE("safetensors hostile: reading into a wrong count") {
  SafeTensorsWriter w;
  const std::vector<float> v = {1, 2, 3, 4, 5, 6};
  w.add("w", {2, 3}, v);
  const SafeTensors st = SafeTensors::from_bytes(w.to_bytes(), kSource);
  std::vector<float> out(5);
  check_message(message_of<vit::checkpoint_error>([&] { st.read("w", out.data(), out.size()); }),
                kSource, {"tensor 'w'", "6 elements", "[2, 3]", "5 were requested"});
  std::vector<double> more(7);
  check_message(message_of<vit::checkpoint_error>([&] { st.read("w", more.data(), more.size()); }),
                kSource, {"tensor 'w'", "7 were requested"});
}

TEST_CASE("safetensors hostile: reading an I32 tensor as float") {
  SafeTensorsWriter w;
  w.add_raw("ids", DType::I32, {2}, std::vector<std::uint8_t>(8, 0));
  const SafeTensors st = SafeTensors::from_bytes(w.to_bytes(), kSource);
  check_message(message_of<vit::checkpoint_error>([&] { st.read<float>("ids"); }), kSource,
                {"tensor 'ids'", "dtype I32", "floating-point"});
  float out[2];
  check_message(message_of<vit::checkpoint_error>([&] { st.read("ids", out, 2); }), kSource,
                {"tensor 'ids'", "dtype I32"});
}

TEST_CASE("safetensors hostile: metadata with a non-string value") {
  check_rejected(file_with(R"({"__metadata__":{"format":"pt","epoch":3}})"),
                 {"'__metadata__'", "'epoch'", "not a string"});
}

TEST_CASE("safetensors hostile: metadata that is not an object") {
  check_rejected(file_with(R"({"__metadata__":["pt"]})"), {"'__metadata__'", "not an object"});
  check_rejected(file_with(R"({"__metadata__":null})"), {"'__metadata__'", "not an object"});
}
