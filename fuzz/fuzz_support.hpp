// fuzz/fuzz_support.hpp - shared by the fuzz targets.
//
// The contract every target checks: whatever the bytes, the library either
// succeeds or throws a vit::error (io_error, checkpoint_error, config_error,
// image_error, argument_error). Any other exception escapes the target and
// std::terminate turns it into a finding, like a crash or a sanitizer report.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>

#include "vit/error.hpp"

namespace vit_fuzz {

/// A folder of this process's own under the temporary directory (targets that
/// go through file paths write their input there), removed at exit.
inline const std::filesystem::path& scratch_dir() {
  struct Dir {
    std::filesystem::path path;
    Dir() {
      path = std::filesystem::temp_directory_path() /
             ("vit-fuzz-" + std::to_string(static_cast<long>(::getpid())));
      std::filesystem::create_directories(path);
    }
    ~Dir() {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    }
  };
  static const Dir dir;
  return dir.path;
}

/// Writes `size` bytes to `name` in scratch_dir(); returns the path.
inline std::string write_file(const std::string& name, const std::uint8_t* data, std::size_t size) {
  const std::string path = (scratch_dir() / name).string();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw std::runtime_error("fuzz: cannot create " + path);
  const bool ok = (size == 0 || std::fwrite(data, 1, size, f) == size);
  if (std::fclose(f) != 0 || !ok) throw std::runtime_error("fuzz: cannot write " + path);
  return path;
}

/// Runs `body`; a vit::error is an accepted answer to hostile bytes.
template <class F>
void expect_clean(F&& body) {
  try {
    body();
  } catch (const vit::error&) {
  }
}

}  // namespace vit_fuzz
