// vit/data/dataset.hpp - what every training-data reader offers, and batches.
//
//   vit::data::Cifar10 train("cifar10/train.bin");
//   const vit::data::Transform aug = vit::data::make_cifar_train_transform();
//   vit::data::BatchOptions opt;  // image size, mean, std
//   opt.image_size = 32;
//   const std::vector<int> order = vit::data::shuffled(train.size(), seed, epoch);
//   std::mt19937_64 rng = vit::data::make_rng(seed, epoch);
//   for (std::size_t at = 0; at < order.size(); at += 128) {
//     const std::vector<int> idx(order.begin() + at,
//                                order.begin() + std::min(at + 128, order.size()));
//     vit::data::Batch b = vit::data::make_batch(train, idx, aug, rng, opt);
//     // b.images: [N, 3 * 32 * 32], one CHW image per row; b.labels: [N]
//   }
//
// A Dataset is a list of (image, label) items with a fixed set of class names.
// Readers: Cifar10 (cifar10.hpp), FashionMnist (fashion_mnist.hpp),
// ImageFolder (image_folder.hpp). Augmentations: augment.hpp.
// Header-only (ImageFolder itself needs the vit::image library).
#pragma once

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <system_error>
#include <vector>

#include "vit/config.hpp"
#include "vit/error.hpp"
#include "vit/image.hpp"
#include "vit/preprocess.hpp"
#include "vit/tensor.hpp"

namespace vit {
namespace data {

/// A labelled image collection: items 0 .. size() - 1, each an 8-bit RGB image
/// and a class index in 0 .. num_classes() - 1.
///
/// label() and load() check the index (argument_error naming the dataset and
/// the index) and are safe to call from several threads at once. load()
/// throws io_error or image_error (naming the file) if the item cannot be read
/// or decoded; the in-memory readers (Cifar10, FashionMnist) never do, having
/// checked everything when opened.
class Dataset {
 public:
  virtual ~Dataset() = default;

  /// Number of items.
  virtual int size() const = 0;
  /// Class names; class k is class_names()[k].
  virtual const std::vector<std::string>& class_names() const = 0;
  /// What the dataset was opened from (a file or folder), for messages.
  virtual const std::string& source() const = 0;

  int num_classes() const { return int(class_names().size()); }

  /// Class index of item i.
  int label(int i) const {
    check_index(i);
    return label_at(i);
  }

  /// The image of item i, 8-bit RGB.
  Image load(int i) const {
    check_index(i);
    return load_at(i);
  }

 protected:
  Dataset() = default;
  // Copyable and movable by derived classes only (no slicing through a base).
  Dataset(const Dataset&) = default;
  Dataset(Dataset&&) = default;
  Dataset& operator=(const Dataset&) = default;
  Dataset& operator=(Dataset&&) = default;

  /// label() and load() for an index already checked to be in range.
  virtual int label_at(int i) const = 0;
  virtual Image load_at(int i) const = 0;

 private:
  void check_index(int i) const {
    if (i < 0 || i >= size())
      throw argument_error(source() + ": item index " + std::to_string(i) + " is out of range (" +
                           std::to_string(size()) + " items)");
  }
};

/// An augmentation or preprocessing step: image in, image out, drawing any
/// randomness from the generator it is given (see augment.hpp).
using Transform = std::function<Image(const Image&, std::mt19937_64&)>;

/// How make_batch turns images into rows.
struct BatchOptions {
  /// S: the transform must produce S x S images; rows get 3 * S * S values.
  int image_size = 224;
  /// Per-channel normalisation, (u8 / 255 - mean) / std as vit::to_tensor.
  std::array<double, 3> mean{0.5, 0.5, 0.5};
  std::array<double, 3> std{0.5, 0.5, 0.5};
  /// false: an item whose load() fails stops make_batch with that exception.
  /// true: such an item (io_error or image_error) is left out of the batch,
  /// counted in Batch::skipped and reported to on_skip.
  bool skip_corrupt = false;
  /// Called for each skipped item with its index and the error's message
  /// (which names the file). May be empty.
  std::function<void(int index, const std::string& message)> on_skip;

  /// image_size, mean and std of a model's preprocessing (input_size, mean, std).
  static BatchOptions from(const DataConfig& data) {
    BatchOptions o;
    o.image_size = data.input_size;
    o.mean = data.mean;
    o.std = data.std;
    return o;
  }
};

/// A mini-batch ready for VisionTransformer::forward.
struct Batch {
  Matrix<float> images;      // [N, 3 * S * S], row n = item indices[n] as CHW floats
  std::vector<int> labels;   // [N]
  std::vector<int> indices;  // [N] dataset index of each row
  int skipped = 0;           // items left out because they could not be read
};

/// Loads `indices` of `ds` in order, applies `transform` (drawing from `rng`,
/// one item after another, so a fixed seed gives a fixed batch; an empty
/// transform passes images through unchanged) and normalises each result into
/// one row. With opt.skip_corrupt, unreadable items are left out (the batch
/// may then have fewer rows, even none); otherwise their exception propagates.
/// Throws argument_error if an index is out of range, opt.image_size is not
/// positive, or the transform does not produce an image_size x image_size image.
inline Batch make_batch(const Dataset& ds, const std::vector<int>& indices,
                        const Transform& transform, std::mt19937_64& rng, const BatchOptions& opt) {
  if (opt.image_size < 1)
    throw argument_error("make_batch: image_size must be positive, got " +
                         std::to_string(opt.image_size));
  const Index cols = Index(3) * opt.image_size * opt.image_size;
  Batch b;
  b.images.resize(Index(indices.size()), cols);
  b.labels.reserve(indices.size());
  b.indices.reserve(indices.size());
  Index row = 0;
  for (const int i : indices) {
    const int label = ds.label(i);  // checks the index even when skipping
    Image im;
    try {
      im = ds.load(i);
    } catch (const io_error& e) {
      if (!opt.skip_corrupt) throw;
      ++b.skipped;
      if (opt.on_skip) opt.on_skip(i, e.what());
      continue;
    } catch (const image_error& e) {
      if (!opt.skip_corrupt) throw;
      ++b.skipped;
      if (opt.on_skip) opt.on_skip(i, e.what());
      continue;
    }
    if (transform) im = transform(im, rng);
    if (im.width != opt.image_size || im.height != opt.image_size)
      throw argument_error("make_batch: the transform made a " + std::to_string(im.width) + "x" +
                           std::to_string(im.height) + " image from item " + std::to_string(i) +
                           " of " + ds.source() + ", expected " + std::to_string(opt.image_size) +
                           "x" + std::to_string(opt.image_size));
    to_tensor(im, opt.mean, opt.std, b.images.row(row).data());
    b.labels.push_back(label);
    b.indices.push_back(i);
    ++row;
  }
  b.images.conservativeResize(row, cols);
  return b;
}

namespace detail {

/// The whole file at `path`. io_error naming it if it cannot be opened or read
/// (also for a folder: opening one succeeds, the first read fails).
inline std::vector<std::uint8_t> read_file(const std::string& path) {
  struct Closer {
    void operator()(std::FILE* f) const {
      if (f) std::fclose(f);
    }
  };
  errno = 0;
  std::unique_ptr<std::FILE, Closer> f(std::fopen(path.c_str(), "rb"));
  if (!f)
    throw io_error(
        path + ": cannot open for reading: " + (errno ? std::strerror(errno) : "unknown error"));
  std::vector<std::uint8_t> bytes;
  std::error_code ec;
  const std::uintmax_t expected = std::filesystem::file_size(path, ec);
  if (!ec) bytes.reserve(std::size_t(expected));  // a hint: the file may change meanwhile
  std::uint8_t buf[65536];
  for (;;) {
    errno = 0;
    const std::size_t got = std::fread(buf, 1, sizeof buf, f.get());
    bytes.insert(bytes.end(), buf, buf + got);
    if (got < sizeof buf) {
      if (std::ferror(f.get()))
        throw io_error(path + ": read error: " + (errno ? std::strerror(errno) : "unknown error"));
      break;
    }
  }
  return bytes;
}

}  // namespace detail
}  // namespace data
}  // namespace vit
