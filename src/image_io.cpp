// src/image_io.cpp - vit::image: image files in and out (see vit/io/image_io.hpp).
// The decoders and the PNG encoder are stb's, reached through stb_bridge.hpp.
#include "vit/io/image_io.hpp"

#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <system_error>
#include <vector>

#include "stb_bridge.hpp"

namespace vit {
namespace detail {
namespace {

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f) std::fclose(f);
  }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

struct PixelsFree {
  void operator()(unsigned char* p) const { stb::free_pixels(p); }
};

std::string errno_text(int err) { return err ? std::strerror(err) : "unknown error"; }

std::string stb_reason() {
  const char* r = stb::failure_reason();
  return r ? r : "unknown error";
}

File open_for_reading(const std::string& path) {
  errno = 0;
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) throw io_error(path + ": cannot open for reading: " + errno_text(errno));
  return f;
}

/// The whole file; io_error if it cannot be read (also for a directory: fopen
/// succeeds on one, the first read fails with EISDIR).
std::vector<std::uint8_t> read_all(const std::string& path) {
  File f = open_for_reading(path);
  std::vector<std::uint8_t> bytes;
  std::uint8_t buf[65536];
  for (;;) {
    errno = 0;
    const std::size_t got = std::fread(buf, 1, sizeof buf, f.get());
    if (got > 0) {
      // stb takes an int length: stop early rather than read gigabytes we must refuse.
      if (bytes.size() + got > std::size_t(INT_MAX))
        throw image_error(path + ": file is larger than the decoder's limit of " +
                          std::to_string(INT_MAX) + " bytes");
      bytes.insert(bytes.end(), buf, buf + got);
    }
    if (got < sizeof buf) break;
  }
  if (std::ferror(f.get())) throw io_error(path + ": cannot read: " + errno_text(errno));
  return bytes;
}

std::uint32_t load_be32(const std::uint8_t* p) {
  return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) |
         std::uint32_t(p[3]);
}

/// True if the bytes start with the 8-byte PNG signature.
bool is_png(const std::uint8_t* p, std::size_t size) {
  static const std::uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  return size >= 8 && std::memcmp(p, signature, 8) == 0;
}

/// Width and height from a PNG's IHDR chunk (signature, then IHDR first, as the
/// format requires). stbi_info refuses huge PNGs with a bare "too large"; this
/// lets the error name the dimensions. False if `head` is not a PNG header.
bool png_header(const std::uint8_t* head, std::size_t size, std::uint32_t* w, std::uint32_t* h,
                int* channels) {
  // 8 signature + 4 length + "IHDR" + width, height (4 each) + depth, colour type.
  if (size < 26 || !is_png(head, size) || std::memcmp(head + 12, "IHDR", 4) != 0) return false;
  *w = load_be32(head + 16);
  *h = load_be32(head + 20);
  switch (head[25]) {  // colour type
    case 0:
      *channels = 1;
      break;  // gray
    case 4:
      *channels = 2;
      break;  // gray + alpha
    case 6:
      *channels = 4;
      break;  // RGBA
    default:
      *channels = 3;
      break;  // RGB, palette
  }
  return true;
}

void check_limits(const ImageLimits& limits, const std::string& source) {
  if (limits.max_side < 1 || limits.max_side > kMaxImageSide || limits.max_pixels < 1)
    throw argument_error(source + ": ImageLimits out of range (max_side " +
                         std::to_string(limits.max_side) + " must be in 1.." +
                         std::to_string(kMaxImageSide) + ", max_pixels " +
                         std::to_string(limits.max_pixels) + " must be >= 1)");
}

bool within_limits(std::uint64_t w, std::uint64_t h, const ImageLimits& limits) {
  const auto side = std::uint64_t(limits.max_side);
  // Both sides <= 32768, so the product cannot overflow.
  return w >= 1 && h >= 1 && w <= side && h <= side && w * h <= std::uint64_t(limits.max_pixels);
}

[[noreturn]] void throw_too_large(const std::string& source, std::uint64_t w, std::uint64_t h,
                                  const ImageLimits& limits) {
  throw image_error(source + ": image is " + std::to_string(w) + "x" + std::to_string(h) +
                    " pixels, beyond the limits (each side <= " + std::to_string(limits.max_side) +
                    ", at most " + std::to_string(limits.max_pixels) +
                    " pixels; see vit::ImageLimits)");
}

/// stb failed on the header: name the dimensions if a PNG header says they are
/// beyond our limits (the cause of stb's refusal), otherwise give stb's reason.
[[noreturn]] void throw_bad_header(const std::string& source, const std::uint8_t* head,
                                   std::size_t size, const std::string& reason,
                                   const ImageLimits& limits) {
  std::uint32_t w = 0, h = 0;
  int channels = 0;
  if (png_header(head, size, &w, &h, &channels) && !within_limits(w, h, limits))
    throw_too_large(source, w, h, limits);
  throw image_error(source + ": cannot decode image: " + reason);
}

/// stb_image 2.27 (Debian 12) builds a JPEG Huffman table from whatever code
/// counts a DHT segment claims; more than 256 codes overrun its 257-entry
/// size table (found by fuzz/fuzz_image.cpp, fixed upstream in 2.28). This
/// refuses such a table before stb sees the file: the segments before the
/// first scan are walked as stb walks them (junk and fill bytes skipped,
/// APPn/COM skipped by length, so binary EXIF or ICC data is never mistaken
/// for a table); from the first scan on, where stb's position depends on its
/// entropy decoding, every 0xFF 0xC4 is read as a DHT (entropy-coded data
/// stuffs each 0xFF with 0x00, so in a sound file these are real markers).
void check_jpeg_huffman_tables(const std::uint8_t* p, std::size_t size, const std::string& source) {
  std::size_t pos = 0;
  while (pos < size && p[pos] == 0xFF) ++pos;
  if (pos == 0 || pos >= size || p[pos] != 0xD8) return;  // stb: a JPEG starts with SOI
  ++pos;
  const auto byte = [&](std::size_t i) -> std::size_t {
    return i < size ? p[i] : 0;
  };  // stb: 0 at EOF
  const auto fail = [&](const std::string& what) {
    throw image_error(source + ": cannot decode image: corrupt JPEG (" + what + ")");
  };
  std::size_t tables = 0;
  // The DHT whose length field starts at `at`: class/id byte, 16 code counts,
  // the symbols, repeated until the length is used up (stb reads on past the
  // segment's end).
  const auto check_dht = [&](std::size_t at) {
    std::int64_t left = std::int64_t((byte(at) << 8) | byte(at + 1)) - 2;
    for (std::size_t t = at + 2; left > 0 && t < size;) {
      if (++tables > 4096) fail("more than 4096 Huffman tables");
      std::size_t codes = 0;
      for (std::size_t k = 1; k <= 16; ++k) codes += byte(t + k);
      if (codes > 256)
        fail("a Huffman table with " + std::to_string(codes) + " codes; at most 256");
      t += 17 + codes;
      left -= std::int64_t(17 + codes);
    }
  };
  while (pos < size) {
    while (pos < size && p[pos] != 0xFF) ++pos;  // stb skips junk between segments
    while (pos < size && p[pos] == 0xFF) ++pos;  // and fill bytes
    if (pos >= size) return;
    const std::uint8_t marker = p[pos++];
    if (marker == 0xD9) return;  // end of image
    if (marker == 0xDA) break;   // first scan
    if (marker == 0xC4) check_dht(pos);
    pos += (byte(pos) << 8) | byte(pos + 1);
  }
  for (std::size_t m = pos; m + 1 < size; ++m)
    if (p[m] == 0xFF && p[m + 1] == 0xC4) check_dht(m + 2);
}

/// stb_image 2.27 parses a PNM header's width, height and maxval into an int
/// without an overflow check (undefined behaviour; found by
/// fuzz/fuzz_image.cpp). Reads the three numbers as stb does (blanks and
/// '#' comments between them) and refuses one beyond INT_MAX first.
void check_pnm_header(const std::uint8_t* p, std::size_t size, const std::string& source) {
  if (size < 2 || p[0] != 'P' || (p[1] != '5' && p[1] != '6')) return;  // stb reads P5, P6 only
  const auto blank = [](std::uint8_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
  };
  std::size_t i = 2;
  for (int field = 0; field < 3; ++field) {
    for (;;) {
      while (i < size && blank(p[i])) ++i;
      if (i >= size || p[i] != '#') break;
      while (i < size && p[i] != '\n' && p[i] != '\r') ++i;
    }
    std::int64_t value = 0;
    for (; i < size && p[i] >= '0' && p[i] <= '9'; ++i) {
      value = value * 10 + (p[i] - '0');
      if (value > INT_MAX)
        throw image_error(source + ": cannot decode image: corrupt PNM header (a number beyond " +
                          std::to_string(INT_MAX) + ")");
    }
  }
}

/// Bytes as text for a message, '?' for anything but letters and digits.
std::string printable(const std::uint8_t* p, std::size_t n) {
  std::string s;
  for (std::size_t i = 0; i < n; ++i) s += std::isalnum(p[i]) ? char(p[i]) : '?';
  return s;
}

/// stb_image 2.27 grows its IDAT buffer to the length a chunk header claims
/// before reading the chunk, so a 100-byte PNG claiming a 2 GiB chunk costs a
/// 2 GiB allocation (found by fuzz/fuzz_image.cpp). Walks the chunks up to
/// IEND and refuses one that runs past the end of the file: stb would fail on
/// it anyway, only later.
void check_png_chunks(const std::uint8_t* p, std::size_t size, const std::string& source) {
  if (!is_png(p, size)) return;
  for (std::size_t pos = 8; pos + 8 <= size;) {
    const std::uint64_t length = load_be32(p + pos);
    const std::uint64_t left = size - pos - 8;  // after the length and type fields
    if (length + 4 > left)                      // data and CRC
      throw image_error(source + ": cannot decode image: truncated PNG (a '" +
                        printable(p + pos + 4, 4) + "' chunk claims " + std::to_string(length) +
                        " bytes, " + std::to_string(left) + " are left)");
    if (std::memcmp(p + pos + 4, "IEND", 4) == 0) return;
    pos += 8 + std::size_t(length) + 4;
  }
}

/// Appends stb's encoder output to a byte vector; never throws into C code.
struct PngSink {
  std::vector<std::uint8_t> bytes;
  bool failed = false;

  static void write(void* context, void* data, int size) {
    auto* sink = static_cast<PngSink*>(context);
    if (sink->failed || size <= 0) return;
    try {
      const auto* p = static_cast<const std::uint8_t*>(data);
      sink->bytes.insert(sink->bytes.end(), p, p + size);
    } catch (...) {
      sink->failed = true;
    }
  }
};

/// Creates a new file next to `target` (same folder, so rename() is atomic)
/// with a name nobody else uses; io_error naming `target` if impossible.
File create_temp_next_to(const std::filesystem::path& target, std::filesystem::path* temp) {
  static const char hex[] = "0123456789abcdef";
  std::random_device rd;
  std::mt19937_64 rng((std::uint64_t(rd()) << 32) ^ rd());
  const std::filesystem::path dir = target.parent_path();
  int err = 0;
  for (int attempt = 0; attempt < 64; ++attempt) {
    std::string name = "." + target.filename().string() + ".tmp-";
    std::uint64_t r = rng();
    for (int i = 0; i < 12; ++i, r >>= 4) name += hex[r & 15];
    *temp = dir / name;
    errno = 0;
    // "x": fail if it exists (C11 exclusive create), so a concurrent writer's
    // file is never clobbered.
    File f(std::fopen(temp->string().c_str(), "wbx"));
    if (f) return f;
    err = errno;
    if (err != EEXIST) break;
  }
  throw io_error(target.string() + ": cannot create a temporary file in '" +
                 (dir.empty() ? std::string(".") : dir.string()) + "': " + errno_text(err));
}

}  // namespace
}  // namespace detail

Image decode_image(const std::uint8_t* data, std::size_t size, const std::string& source,
                   const ImageLimits& limits) {
  detail::check_limits(limits, source);
  if (size == 0) throw image_error(source + ": empty file (0 bytes), not an image");
  if (!data) throw argument_error(source + ": decode_image: data is null but size is not 0");
  if (size > std::size_t(INT_MAX))
    throw image_error(source + ": " + std::to_string(size) +
                      " bytes is beyond the decoder's limit of " + std::to_string(INT_MAX));
  const int len = static_cast<int>(size);

  detail::check_jpeg_huffman_tables(data, size, source);
  detail::check_pnm_header(data, size, source);
  // Header first: refuse huge dimensions before anything is allocated.
  int w = 0, h = 0, channels = 0;
  if (!detail::stb::info_from_memory(data, len, &w, &h, &channels))
    detail::throw_bad_header(source, data, size, detail::stb_reason(), limits);
  if (!detail::within_limits(std::uint64_t(w), std::uint64_t(h), limits))
    detail::throw_too_large(source, std::uint64_t(w), std::uint64_t(h), limits);

  // stb 2.27 reads 16-bit PNM samples in the machine's byte order, not the
  // format's big-endian one, so it would hand back the wrong byte of each.
  if (size >= 2 && data[0] == 'P' && (data[1] == '5' || data[1] == '6') &&
      detail::stb::is_16_bit_from_memory(data, len))
    throw image_error(source +
                      ": 16-bit PNM (maxval above 255) is not supported; convert it "
                      "to 8 bits or to PNG");
  // Decoded in the file's own channels, then made RGB here: stb 2.27 (Debian
  // 12) converts channels before narrowing 16-bit samples, which overran its
  // buffer for 16-bit PNM files (found by fuzz/fuzz_image.cpp; refused above,
  // but no format should depend on that order). stb still
  // expands palettes, keeps the high byte of 16-bit samples and decodes a
  // GIF's first frame; gray is replicated and alpha dropped, as its own
  // conversion to 3 channels does.
  detail::check_png_chunks(data, size, source);  // before stb allocates from a chunk length
  int dw = 0, dh = 0, n = 0;
  std::unique_ptr<unsigned char, detail::PixelsFree> pixels(
      detail::stb::load_from_memory(data, len, &dw, &dh, &n, 0));
  if (!pixels) throw image_error(source + ": cannot decode image: " + detail::stb_reason());
  if (dw != w || dh != h)  // the header and the decoder disagree: do not trust either
    throw image_error(source + ": header says " + std::to_string(w) + "x" + std::to_string(h) +
                      ", decoder produced " + std::to_string(dw) + "x" + std::to_string(dh));
  if (n < 1 || n > 4)
    throw image_error(source + ": cannot decode image: " + std::to_string(n) + " channels");

  Image image;
  image.width = w;
  image.height = h;
  const std::size_t count = std::size_t(w) * std::size_t(h);
  image.pixels.resize(count * 3);
  const unsigned char* src = pixels.get();
  std::uint8_t* dst = image.pixels.data();
  const std::size_t step = std::size_t(n);
  for (std::size_t i = 0; i < count; ++i, src += step, dst += 3) {
    const bool gray = n < 3;
    dst[0] = src[0];
    dst[1] = gray ? src[0] : src[1];
    dst[2] = gray ? src[0] : src[2];
  }
  return image;
}

Image load_image(const std::string& path, const ImageLimits& limits) {
  detail::check_limits(limits, path);
  const std::vector<std::uint8_t> bytes = detail::read_all(path);
  return decode_image(bytes.data(), bytes.size(), path, limits);
}

ImageInfo probe_image(const std::string& path) {
  detail::File f = detail::open_for_reading(path);
  ImageInfo info;
  // stbi_info_from_file reads only as much as the format needs, then seeks back.
  if (detail::stb::info_from_file(f.get(), &info.width, &info.height, &info.channels)) return info;
  const std::string reason = detail::stb_reason();

  std::uint8_t head[26];
  std::rewind(f.get());
  errno = 0;
  const std::size_t got = std::fread(head, 1, sizeof head, f.get());
  if (std::ferror(f.get())) throw io_error(path + ": cannot read: " + detail::errno_text(errno));
  if (got == 0) throw image_error(path + ": empty file (0 bytes), not an image");
  std::uint32_t w = 0, h = 0;
  // A PNG stb finds too large to decode still has a readable header.
  if (detail::png_header(head, got, &w, &h, &info.channels) && w >= 1 && h >= 1 &&
      w <= std::uint32_t(INT_MAX) && h <= std::uint32_t(INT_MAX)) {
    info.width = static_cast<int>(w);
    info.height = static_cast<int>(h);
    return info;
  }
  throw image_error(path + ": cannot decode image: " + reason);
}

void write_png(const std::string& path, const Image& image) {
  if (image.width <= 0 || image.height <= 0)
    throw argument_error(path + ": write_png: image is " + std::to_string(image.width) + "x" +
                         std::to_string(image.height) + ", nothing to write");
  const std::size_t expected = std::size_t(image.width) * std::size_t(image.height) * 3;
  if (image.pixels.size() != expected)
    throw argument_error(path + ": write_png: pixel buffer holds " +
                         std::to_string(image.pixels.size()) + " bytes, a " +
                         std::to_string(image.width) + "x" + std::to_string(image.height) +
                         " RGB image needs " + std::to_string(expected));
  if (image.width > INT_MAX / 3)  // stb takes the row stride as an int
    throw argument_error(path + ": write_png: image is too wide (" + std::to_string(image.width) +
                         " pixels)");

  // Encode in memory first: stb's file writer cannot report write errors.
  detail::PngSink sink;
  if (!detail::stb::write_png_to_func(&detail::PngSink::write, &sink, image.width, image.height, 3,
                                      image.pixels.data(), image.width * 3) ||
      sink.failed)
    throw io_error(path + ": cannot encode PNG (out of memory)");

  const std::filesystem::path target(path);
  std::filesystem::path temp;
  detail::File f = detail::create_temp_next_to(target, &temp);
  // From here on, any failure removes the temporary file.
  auto fail = [&](const std::string& what) {
    f.reset();
    std::error_code ignored;
    std::filesystem::remove(temp, ignored);
    throw io_error(path + ": " + what);
  };
  errno = 0;
  if (std::fwrite(sink.bytes.data(), 1, sink.bytes.size(), f.get()) != sink.bytes.size() ||
      std::fflush(f.get()) != 0)
    fail("cannot write: " + detail::errno_text(errno));
  errno = 0;
  if (std::fclose(f.release()) != 0) fail("cannot write: " + detail::errno_text(errno));
  std::error_code ec;
  std::filesystem::rename(temp, target, ec);
  if (ec) fail("cannot replace the file: " + ec.message());
}

}  // namespace vit
