// vit/data/cifar10.hpp - reader for the CIFAR-10 binary format.
//
//   vit::data::Cifar10 test("cifar-10-batches-bin/test_batch.bin");
//   vit::Image im = test.load(0);   // 32x32 RGB
//   int y = test.label(0);          // 0..9, test.class_names()[y]
//
// Format (data_batch_N.bin / test_batch.bin of the "binary version"): no
// header, records of 3073 bytes back to back: one label byte (0..9), then the
// 1024 red, 1024 green and 1024 blue values of a 32x32 image, each plane
// row-major (row 0 first). Pixel (c, y, x) of record r is at byte
// r * 3073 + 1 + c * 1024 + y * 32 + x. The file is read whole when opened.
//
// Class names come from `batches.meta.txt` in the same folder when there is
// one (one name per line, blank lines ignored; it must give exactly 10), else
// they are the standard ones (kCifar10Classes).
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

namespace vit {
namespace data {

/// The CIFAR-10 class names, label order.
inline const std::vector<std::string>& cifar10_class_names() {
  static const std::vector<std::string> names{"airplane", "automobile", "bird",  "cat",  "deer",
                                              "dog",      "frog",       "horse", "ship", "truck"};
  return names;
}

/// One CIFAR-10 binary file, held in memory.
class Cifar10 : public Dataset {
 public:
  static constexpr int kSide = 32;
  static constexpr int kClasses = 10;
  static constexpr std::size_t kRecordBytes = 1 + 3 * kSide * kSide;  // 3073

  /// Reads and checks the file at `path`. Throws io_error, its message
  /// starting with the path, if the file cannot be opened or read, is empty,
  /// is not a whole number of 3073-byte records, or holds a label above 9
  /// (naming the record); and if a batches.meta.txt beside it cannot be read
  /// or does not list 10 names.
  explicit Cifar10(const std::string& path) : path_(path) {
    std::vector<std::uint8_t> bytes = detail::read_file(path);
    if (bytes.empty())
      throw io_error(path + ": file is empty (0 bytes); a CIFAR-10 binary file holds records of " +
                     std::to_string(kRecordBytes) + " bytes");
    if (bytes.size() % kRecordBytes != 0)
      throw io_error(path + ": size " + std::to_string(bytes.size()) +
                     " bytes is not a multiple of the " + std::to_string(kRecordBytes) +
                     "-byte CIFAR-10 record (" + std::to_string(bytes.size() / kRecordBytes) +
                     " whole records and " + std::to_string(bytes.size() % kRecordBytes) +
                     " bytes left over); truncated, or not a CIFAR-10 binary file");
    const std::size_t n = bytes.size() / kRecordBytes;
    if (n > std::size_t(std::numeric_limits<int>::max()))
      throw io_error(path + ": " + std::to_string(n) + " records, more than this reader indexes");
    for (std::size_t r = 0; r < n; ++r)
      if (bytes[r * kRecordBytes] >= kClasses)
        throw io_error(path + ": record " + std::to_string(r) + " has label " +
                       std::to_string(bytes[r * kRecordBytes]) + "; CIFAR-10 labels are 0..9");
    names_ = read_class_names(path);
    bytes_ = std::move(bytes);
  }

  int size() const override { return int(bytes_.size() / kRecordBytes); }
  const std::vector<std::string>& class_names() const override { return names_; }
  const std::string& source() const override { return path_; }

 protected:
  int label_at(int i) const override { return bytes_[std::size_t(i) * kRecordBytes]; }

  Image load_at(int i) const override {
    // Planes (CHW) to interleaved pixels (HWC).
    const std::uint8_t* rec = &bytes_[std::size_t(i) * kRecordBytes + 1];
    constexpr std::size_t plane = std::size_t(kSide) * kSide;
    Image im(kSide, kSide);
    for (std::size_t p = 0; p < plane; ++p)
      for (std::size_t c = 0; c < 3; ++c) im.pixels[p * 3 + c] = rec[c * plane + p];
    return im;
  }

 private:
  /// Names from batches.meta.txt beside `path`, or the standard ones.
  static std::vector<std::string> read_class_names(const std::string& path) {
    const std::filesystem::path meta =
        std::filesystem::path(path).parent_path() / "batches.meta.txt";
    std::error_code ec;
    if (!std::filesystem::exists(meta, ec)) return cifar10_class_names();
    const std::vector<std::uint8_t> text = detail::read_file(meta.string());
    std::vector<std::string> names;
    std::string line;
    auto flush = [&] {
      // Trim surrounding blanks (and the \r of CRLF files); skip empty lines.
      const std::size_t b = line.find_first_not_of(" \t\r");
      if (b != std::string::npos) {
        const std::size_t e = line.find_last_not_of(" \t\r");
        names.push_back(line.substr(b, e - b + 1));
      }
      line.clear();
    };
    for (const std::uint8_t ch : text) {
      if (ch == '\n')
        flush();
      else
        line.push_back(char(ch));
    }
    flush();
    if (names.size() != std::size_t(kClasses))
      throw io_error(meta.string() + ": lists " + std::to_string(names.size()) +
                     " class names, CIFAR-10 has " + std::to_string(kClasses));
    return names;
  }

  std::string path_;
  std::vector<std::uint8_t> bytes_;  // the whole file
  std::vector<std::string> names_;
};

}  // namespace data
}  // namespace vit
