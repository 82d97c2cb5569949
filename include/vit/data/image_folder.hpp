// vit/data/image_folder.hpp - a dataset of image files, one folder per class.
//
//   root/
//     cat/ 001.jpg 002.png ...
//     dog/ a.jpeg b.bmp ...
//   vit::data::ImageFolder train("root");   // classes {"cat", "dog"}
//   vit::Image im = train.load(0);          // decoded from disk on each call
//
// Layout as torchvision's ImageFolder: each sub-folder of root is a class,
// its index the folder's position in the sorted folder names; its images are
// the files directly inside it (sub-folders are not searched) whose extension
// is one of jpg, jpeg, png, bmp, gif, tga, pnm, ppm, pgm (any case), in sorted
// name order. Names sort by bytes (code points for UTF-8), as Python sorts
// str. Entries whose name starts with '.' (hidden: ".git", ".ipynb_checkpoints",
// macOS "._x.jpg" metadata files) are ignored. Symbolic links are followed.
//
// Images are decoded lazily by vit::load_image, so this header needs the
// compiled vit::image library (link vit::image).
#pragma once

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <filesystem>
#include <limits>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "vit/data/dataset.hpp"
#include "vit/error.hpp"
#include "vit/image.hpp"
#include "vit/io/image_io.hpp"

namespace vit {
namespace data {

namespace detail {

/// True if `name`'s extension (after the last '.') is one ImageFolder reads.
inline bool has_image_extension(const std::string& name) {
  const std::size_t dot = name.find_last_of('.');
  if (dot == std::string::npos) return false;
  std::string ext = name.substr(dot + 1);
  for (char& c : ext) c = char(std::tolower(static_cast<unsigned char>(c)));
  static const char* const known[] = {"jpg", "jpeg", "png", "bmp", "gif",
                                      "tga", "pnm",  "ppm", "pgm"};
  for (const char* k : known)
    if (ext == k) return true;
  return false;
}

/// Sorted names of the non-hidden entries of `dir` that are folders
/// (`folders`) or regular files (otherwise), following symbolic links.
inline std::vector<std::string> list_entries(const std::filesystem::path& dir, bool folders) {
  namespace fs = std::filesystem;
  std::vector<std::string> names;
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    std::error_code type_ec;
    const fs::file_status st = fs::status(it->path(), type_ec);  // follows links
    if (type_ec) continue;                                       // e.g. a dangling link
    if (folders ? fs::is_directory(st) : fs::is_regular_file(st)) names.push_back(name);
  }
  if (ec) throw io_error(dir.string() + ": cannot list the folder: " + ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace detail

/// Image files under root/<class>/, decoded on demand.
class ImageFolder : public Dataset {
 public:
  /// Scans `root`. Throws io_error naming the folder if root does not exist,
  /// is not a folder or cannot be listed; if it holds no class folders; if
  /// no class folder holds an image; if there is only one class (training a
  /// classifier needs at least two); or if a class folder holds no image.
  explicit ImageFolder(const std::string& root) : root_(root) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::file_status st = fs::status(root, ec);
    if (!fs::exists(st))
      throw io_error(root + ": image folder does not exist" +
                     (ec && ec != std::errc::no_such_file_or_directory ? " (" + ec.message() + ")"
                                                                       : std::string()));
    if (!fs::is_directory(st))
      throw io_error(root + ": is not a folder; expected root/<class name>/<image files>");

    std::vector<std::string> classes = detail::list_entries(root, true);
    if (classes.empty()) {
      std::size_t loose = 0;
      for (const std::string& f : detail::list_entries(root, false))
        loose += detail::has_image_extension(f);
      throw io_error(root + ": no class folders; expected root/<class name>/<image files>" +
                     (loose ? " (found " + std::to_string(loose) +
                                  " image files directly in the folder: put each class in "
                                  "its own sub-folder)"
                            : std::string()));
    }
    std::vector<std::vector<std::string>> files(classes.size());
    std::size_t total = 0;
    for (std::size_t k = 0; k < classes.size(); ++k) {
      for (const std::string& f : detail::list_entries(fs::path(root) / classes[k], false))
        if (detail::has_image_extension(f)) files[k].push_back(f);
      total += files[k].size();
    }
    if (total == 0)
      throw io_error(root + ": no images in any of its " + std::to_string(classes.size()) +
                     " class folders (looking for .jpg .jpeg .png .bmp .gif .tga .pnm .ppm "
                     ".pgm files directly inside each)");
    if (classes.size() < 2)
      throw io_error(root + ": only one class folder ('" + classes[0] +
                     "'); training a classifier needs at least 2 classes");
    for (std::size_t k = 0; k < classes.size(); ++k)
      if (files[k].empty())
        throw io_error((fs::path(root) / classes[k]).string() +
                       ": class folder holds no images (looking for .jpg .jpeg .png .bmp .gif "
                       ".tga .pnm .ppm .pgm files directly inside it)");
    if (total > std::size_t(std::numeric_limits<int>::max()))
      throw io_error(root + ": " + std::to_string(total) +
                     " images, more than this reader indexes");

    paths_.reserve(total);
    labels_.reserve(total);
    for (std::size_t k = 0; k < classes.size(); ++k)
      for (const std::string& f : files[k]) {
        paths_.push_back((fs::path(root) / classes[k] / f).string());
        labels_.push_back(int(k));
      }
    names_ = std::move(classes);
  }

  int size() const override { return int(paths_.size()); }
  const std::vector<std::string>& class_names() const override { return names_; }
  const std::string& source() const override { return root_; }

  /// The file of item i (argument_error if out of range).
  const std::string& path(int i) const {
    if (i < 0 || i >= size())
      throw argument_error(root_ + ": item index " + std::to_string(i) + " is out of range (" +
                           std::to_string(size()) + " items)");
    return paths_[std::size_t(i)];
  }

 protected:
  int label_at(int i) const override { return labels_[std::size_t(i)]; }

  /// vit::load_image: io_error if the file cannot be read, image_error if it
  /// cannot be decoded; both messages start with the file's path.
  Image load_at(int i) const override { return load_image(paths_[std::size_t(i)]); }

 private:
  std::string root_;
  std::vector<std::string> names_;
  std::vector<std::string> paths_;  // [n], grouped by class, sorted within each
  std::vector<int> labels_;         // [n]
};

}  // namespace data
}  // namespace vit
