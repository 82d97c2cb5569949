// The data sets vit-train and vit-eval read, chosen from a path: a CIFAR-10
// binary file, a Fashion-MNIST IDX image file (labels beside it) or an image
// folder (one sub-folder per class).
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "vit/data/cifar10.hpp"
#include "vit/data/fashion_mnist.hpp"
#include "vit/data/image_folder.hpp"
#include "vit/error.hpp"

namespace vit_examples {

inline bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

/// Opens `path` by what it is: a folder is an image folder; a file ending in
/// .bin is CIFAR-10 binary; a file whose name holds "idx3-ubyte" is an IDX
/// image file. Throws vit::argument_error for anything else.
inline std::unique_ptr<vit::data::Dataset> open_dataset(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) return std::make_unique<vit::data::ImageFolder>(path);
  if (!fs::exists(path, ec)) throw vit::io_error(path + ": no such file or folder");
  const std::string name = fs::path(path).filename().string();
  if (ends_with(name, ".bin")) return std::make_unique<vit::data::Cifar10>(path);
  if (name.find("idx3-ubyte") != std::string::npos)
    return std::make_unique<vit::data::FashionMnist>(path);
  throw vit::argument_error(path +
                            ": not a data set this program reads (a CIFAR-10 .bin file, an IDX "
                            "'*-images-idx3-ubyte[.gz]' file, or a folder of class folders)");
}

}  // namespace vit_examples
