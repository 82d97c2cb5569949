// Helpers shared by the tests: a temporary folder, whole-file reads, and
// running a program with its output captured.
#pragma once

#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "vit/io/safetensors.hpp"

namespace vit_test {

/// A fresh folder under the system's temporary directory, removed with its
/// contents when the object goes out of scope.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix = "vit_test_") {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() /
           (prefix + std::to_string(rd()) + "_" + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return (path / name).string(); }
  /// The names in the folder, sorted (to check nothing else was left behind).
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(path))
      names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
};

/// Writes the safetensors file `src` again to `dst` (may be `src`) as float32,
/// with element `at` of tensor `name` set to `value`: a checkpoint with one
/// bad weight for the load-time checks.
inline void copy_with_value(const std::string& src, const std::string& dst, const std::string& name,
                            std::size_t at, float value) {
  const auto in = vit::io::SafeTensors::open(src);
  vit::io::SafeTensorsWriter w;
  for (const auto& t : in.tensors()) {
    std::vector<float> v = in.read<float>(t.name);
    if (t.name == name) v.at(at) = value;
    w.add(t.name, t.shape, v);
  }
  w.write(dst);
}

/// The whole file as bytes in a string ("" if it cannot be read).
inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// `s` quoted for the POSIX shell.
inline std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

/// The outcome of a program run: exit status (-1 if it did not exit normally)
/// and what it wrote to stdout and stderr.
struct Run {
  int status = -1;
  std::string out, err;
};

/// Runs `program` with `args` (already quoted) through the shell.
inline Run run_program(const std::string& program, const std::string& args) {
  TempDir tmp("vit_test_run_");
  const std::string cmd =
      quote(program) + " " + args + " > " + quote(tmp / "out") + " 2> " + quote(tmp / "err");
  const int raw = std::system(cmd.c_str());
  Run r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  r.out = slurp(tmp / "out");
  r.err = slurp(tmp / "err");
  return r;
}

}  // namespace vit_test
