// vit/data/fashion_mnist.hpp - reader for Fashion-MNIST (and MNIST-style) IDX files.
//
//   vit::data::FashionMnist test("fashion-mnist/t10k-images-idx3-ubyte.gz");
//   vit::Image im = test.load(0);   // 28x28, gray copied to R = G = B
//   int y = test.label(0);          // 0..9, test.class_names()[y]
//
// IDX format (big-endian): images file = magic 0x00000803 (unsigned bytes,
// 3 dimensions), n, rows, cols, then n * rows * cols pixels, row-major, one
// image after another; labels file = magic 0x00000801, n, then n label bytes.
// Files compressed with gzip (as the dataset is distributed, and as Debian's
// dataset-fashion-mnist installs it in /usr/share/datasets/fashion-mnist) are
// recognised by their content, not their name, and decompressed in memory by
// vit/io/inflate.hpp. Both files are read whole when opened.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "vit/data/dataset.hpp"
#include "vit/error.hpp"
#include "vit/image.hpp"
#include "vit/io/inflate.hpp"

namespace vit {
namespace data {

/// The Fashion-MNIST class names, label order.
inline const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names{"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                              "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                              "Bag",         "Ankle boot"};
  return names;
}

namespace detail {

inline std::uint32_t read_be32(const std::uint8_t* p) {
  return std::uint32_t(p[0]) << 24 | std::uint32_t(p[1]) << 16 | std::uint32_t(p[2]) << 8 |
         std::uint32_t(p[3]);
}

inline std::string hex32(std::uint32_t v) {
  static const char digits[] = "0123456789abcdef";
  std::string s = "0x";
  for (int shift = 28; shift >= 0; shift -= 4) s.push_back(digits[(v >> shift) & 15u]);
  return s;
}

/// The file at `path`, gunzipped if it is gzip data.
inline std::vector<std::uint8_t> read_maybe_gzip(const std::string& path) {
  std::vector<std::uint8_t> bytes = read_file(path);
  if (io::is_gzip(bytes.data(), bytes.size())) return io::gunzip(bytes.data(), bytes.size(), path);
  return bytes;
}

/// io_error unless `bytes` (from `path`) start with IDX magic `magic`.
inline void check_idx_magic(const std::vector<std::uint8_t>& bytes, std::uint32_t magic,
                            const char* kind, const std::string& path) {
  if (bytes.empty()) throw io_error(path + ": file is empty; expected an IDX " + kind + " file");
  if (bytes.size() < 4)
    throw io_error(path + ": " + std::to_string(bytes.size()) +
                   " bytes, too short for an IDX header");
  const std::uint32_t got = read_be32(bytes.data());
  if (got == magic) return;
  std::string hint;
  if (got == 0x00000801u) hint = " (this is an IDX labels file)";
  if (got == 0x00000803u) hint = " (this is an IDX images file)";
  throw io_error(path + ": magic number " + hex32(got) + " is not " + hex32(magic) + " (IDX " +
                 kind + ")" + hint);
}

}  // namespace detail

/// A Fashion-MNIST images file and its labels file, held in memory. Also reads
/// MNIST, KMNIST and other IDX sets of 8-bit images with labels 0..9.
class FashionMnist : public Dataset {
 public:
  /// Images from `images_path`, labels from labels_path_for(images_path).
  explicit FashionMnist(const std::string& images_path)
      : FashionMnist(images_path, labels_path_for(images_path)) {}

  /// Reads and checks both files. Throws io_error, naming the file, if one
  /// cannot be opened or read, is corrupt gzip, has the wrong magic number, is
  /// empty, shorter than its header declares (truncated) or longer, or holds a
  /// label above 9 (naming the item); and if the two counts differ (naming both).
  FashionMnist(const std::string& images_path, const std::string& labels_path)
      : images_path_(images_path), labels_path_(labels_path) {
    std::vector<std::uint8_t> images = detail::read_maybe_gzip(images_path);
    detail::check_idx_magic(images, 0x00000803u, "unsigned-byte images, 3 dimensions", images_path);
    if (images.size() < 16)
      throw io_error(images_path + ": " + std::to_string(images.size()) +
                     " bytes, too short for the 16-byte IDX images header");
    const std::uint32_t n = detail::read_be32(&images[4]);
    const std::uint32_t rows = detail::read_be32(&images[8]);
    const std::uint32_t cols = detail::read_be32(&images[12]);
    if (n == 0) throw io_error(images_path + ": the header declares 0 images");
    if (n > std::uint32_t(std::numeric_limits<int>::max()))
      throw io_error(images_path + ": the header declares " + std::to_string(n) +
                     " images, more than this reader indexes");
    if (rows == 0 || cols == 0 || rows > 32768 || cols > 32768 ||
        std::uint64_t(rows) * cols > (std::uint64_t{1} << 28))
      throw io_error(images_path + ": the header declares " + std::to_string(rows) + "x" +
                     std::to_string(cols) + " images, not in 1 .. 32768 per side");
    const std::uint64_t expected = 16 + std::uint64_t(n) * rows * cols;
    if (images.size() != expected)
      throw io_error(images_path + ": the header declares " + std::to_string(n) + " images of " +
                     std::to_string(rows) + "x" + std::to_string(cols) + " (" +
                     std::to_string(expected) + " bytes with the header) but the data has " +
                     std::to_string(images.size()) + " bytes" +
                     (images.size() < expected ? " (truncated)" : " (extra bytes at the end)"));

    std::vector<std::uint8_t> labels = detail::read_maybe_gzip(labels_path);
    detail::check_idx_magic(labels, 0x00000801u, "unsigned-byte labels, 1 dimension", labels_path);
    if (labels.size() < 8)
      throw io_error(labels_path + ": " + std::to_string(labels.size()) +
                     " bytes, too short for the 8-byte IDX labels header");
    const std::uint32_t n_labels = detail::read_be32(&labels[4]);
    if (labels.size() != 8 + std::uint64_t(n_labels))
      throw io_error(labels_path + ": the header declares " + std::to_string(n_labels) +
                     " labels (" + std::to_string(8 + std::uint64_t(n_labels)) +
                     " bytes with the header) but the data has " + std::to_string(labels.size()) +
                     " bytes" +
                     (labels.size() < 8 + std::uint64_t(n_labels) ? " (truncated)"
                                                                  : " (extra bytes at the end)"));
    if (n_labels != n)
      throw io_error(images_path + " holds " + std::to_string(n) + " images but " + labels_path +
                     " holds " + std::to_string(n_labels) + " labels");
    for (std::size_t i = 0; i < n; ++i)
      if (labels[8 + i] > 9)
        throw io_error(labels_path + ": item " + std::to_string(i) + " has label " +
                       std::to_string(labels[8 + i]) + "; labels must be 0..9");

    width_ = int(cols);
    height_ = int(rows);
    images.erase(images.begin(), images.begin() + 16);
    labels.erase(labels.begin(), labels.begin() + 8);
    pixels_ = std::move(images);
    labels_ = std::move(labels);
  }

  /// The labels file beside an images file: `images-idx3` replaced by
  /// `labels-idx1` in the file name ("t10k-images-idx3-ubyte.gz" ->
  /// "t10k-labels-idx1-ubyte.gz"). If that file does not exist but the same
  /// name with ".gz" added or removed does, that one. Throws argument_error if
  /// the file name does not contain "images-idx3".
  static std::string labels_path_for(const std::string& images_path) {
    namespace fs = std::filesystem;
    const fs::path p(images_path);
    std::string name = p.filename().string();
    const std::size_t at = name.find("images-idx3");
    if (at == std::string::npos)
      throw argument_error(images_path +
                           ": cannot tell the labels file (the name does not contain "
                           "\"images-idx3\"); give the labels path explicitly");
    name.replace(at, 11, "labels-idx1");
    const std::string labels = (p.parent_path() / name).string();
    std::error_code ec;
    if (fs::exists(labels, ec)) return labels;
    const bool gz = name.size() > 3 && name.compare(name.size() - 3, 3, ".gz") == 0;
    const std::string other = gz ? labels.substr(0, labels.size() - 3) : labels + ".gz";
    if (fs::exists(other, ec)) return other;
    return labels;  // opening it reports that it is missing
  }

  int size() const override { return int(labels_.size()); }
  const std::vector<std::string>& class_names() const override {
    return fashion_mnist_class_names();
  }
  const std::string& source() const override { return images_path_; }
  const std::string& labels_path() const { return labels_path_; }

  /// Image size from the header (28 x 28 for Fashion-MNIST).
  int width() const { return width_; }
  int height() const { return height_; }

 protected:
  int label_at(int i) const override { return labels_[std::size_t(i)]; }

  Image load_at(int i) const override {
    const std::size_t plane = std::size_t(width_) * std::size_t(height_);
    const std::uint8_t* src = &pixels_[std::size_t(i) * plane];
    Image im(width_, height_);
    for (std::size_t p = 0; p < plane; ++p)
      im.pixels[3 * p] = im.pixels[3 * p + 1] = im.pixels[3 * p + 2] = src[p];
    return im;
  }

 private:
  std::string images_path_, labels_path_;
  int width_ = 0, height_ = 0;
  std::vector<std::uint8_t> pixels_;  // [n, height, width]
  std::vector<std::uint8_t> labels_;  // [n]
};

}  // namespace data
}  // namespace vit
