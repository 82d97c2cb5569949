// vit/io/labels.hpp - class names, one per line.
#pragma once

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "vit/error.hpp"

namespace vit::io {

/// Splits text into lines (LF or CRLF); a final newline does not add an
/// empty class.
inline std::vector<std::string> parse_labels(const std::string& text) {
  std::vector<std::string> labels;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    labels.push_back(line);
  }
  return labels;
}

/// Reads a labels file: line i names class i. Throws io_error naming the
/// path when it cannot be read, and when it holds no line at all.
inline std::vector<std::string> read_labels(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw io_error(path + ": cannot open labels file");
  std::stringstream ss;
  ss << in.rdbuf();
  std::vector<std::string> labels = parse_labels(ss.str());
  if (labels.empty()) throw io_error(path + ": labels file is empty");
  return labels;
}

}  // namespace vit::io
