// src/image_io.cpp - vit::image: image files in and out (see vit/io/image_io.hpp).
// The decoders and the PNG encoder are stb's, reached through stb_bridge.hpp.
#include "vit/io/image_io.hpp"

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

/// Width and height from a PNG's IHDR chunk (signature, then IHDR first, as the
/// format requires). stbi_info refuses huge PNGs with a bare "too large"; this
/// lets the error name the dimensions. False if `head` is not a PNG header.
bool png_header(const std::uint8_t* head, std::size_t size, std::uint32_t* w, std::uint32_t* h,
                int* channels) {
  static const std::uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  // 8 signature + 4 length + "IHDR" + width, height (4 each) + depth, colour type.
  if (size < 26 || std::memcmp(head, signature, 8) != 0 || std::memcmp(head + 12, "IHDR", 4) != 0)
    return false;
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

bool within_limits(std::uint64_t w, std::uint64_t h) {
  return w >= 1 && h >= 1 && w <= std::uint64_t(kMaxImageSide) &&
         h <= std::uint64_t(kMaxImageSide) && w * h <= std::uint64_t(kMaxImagePixels);
}

[[noreturn]] void throw_too_large(const std::string& source, std::uint64_t w, std::uint64_t h) {
  throw image_error(
      source + ": image is " + std::to_string(w) + "x" + std::to_string(h) +
      " pixels, beyond the supported limits (each side <= " + std::to_string(kMaxImageSide) +
      ", at most " + std::to_string(kMaxImagePixels) + " pixels)");
}

/// stb failed on the header: name the dimensions if a PNG header says they are
/// beyond our limits (the cause of stb's refusal), otherwise give stb's reason.
[[noreturn]] void throw_bad_header(const std::string& source, const std::uint8_t* head,
                                   std::size_t size, const std::string& reason) {
  std::uint32_t w = 0, h = 0;
  int channels = 0;
  if (png_header(head, size, &w, &h, &channels) && !within_limits(w, h))
    throw_too_large(source, w, h);
  throw image_error(source + ": cannot decode image: " + reason);
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

Image decode_image(const std::uint8_t* data, std::size_t size, const std::string& source) {
  if (size == 0) throw image_error(source + ": empty file (0 bytes), not an image");
  if (!data) throw argument_error(source + ": decode_image: data is null but size is not 0");
  if (size > std::size_t(INT_MAX))
    throw image_error(source + ": " + std::to_string(size) +
                      " bytes is beyond the decoder's limit of " + std::to_string(INT_MAX));
  const int len = static_cast<int>(size);

  // Header first: refuse huge dimensions before anything is allocated.
  int w = 0, h = 0, channels = 0;
  if (!detail::stb::info_from_memory(data, len, &w, &h, &channels))
    detail::throw_bad_header(source, data, size, detail::stb_reason());
  if (!detail::within_limits(std::uint64_t(w), std::uint64_t(h)))
    detail::throw_too_large(source, std::uint64_t(w), std::uint64_t(h));

  // 3 channels requested: stb replicates gray, drops alpha, expands palettes,
  // keeps the high byte of 16-bit samples, and decodes a GIF's first frame.
  int dw = 0, dh = 0;
  std::unique_ptr<unsigned char, detail::PixelsFree> rgb(
      detail::stb::load_from_memory(data, len, &dw, &dh, &channels, 3));
  if (!rgb) throw image_error(source + ": cannot decode image: " + detail::stb_reason());
  if (dw != w || dh != h)  // the header and the decoder disagree: do not trust either
    throw image_error(source + ": header says " + std::to_string(w) + "x" + std::to_string(h) +
                      ", decoder produced " + std::to_string(dw) + "x" + std::to_string(dh));

  Image image;
  image.width = w;
  image.height = h;
  image.pixels.assign(rgb.get(), rgb.get() + std::size_t(w) * std::size_t(h) * 3);
  return image;
}

Image load_image(const std::string& path) {
  const std::vector<std::uint8_t> bytes = detail::read_all(path);
  return decode_image(bytes.data(), bytes.size(), path);
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
