// vit/error.hpp - the exceptions the library throws.
//
// Every failure a caller can cause (a bad file, a tensor of the wrong shape,
// an impossible configuration, a bad argument) is reported as a vit::error
// whose message names the file, tensor or argument and, where it applies,
// the expected and the actual value.
#pragma once

#include <stdexcept>
#include <string>

namespace vit {

/// Base of every exception thrown by the library.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A file could not be opened, read or written.
class io_error : public error {
 public:
  using error::error;
};

/// A checkpoint file is malformed, truncated, or does not fit the model
/// (missing, unknown or mis-shaped tensors, unsupported dtype).
class checkpoint_error : public error {
 public:
  using error::error;
};

/// A model configuration is inconsistent (e.g. embed_dim not divisible by
/// num_heads) or a config file says something the library cannot run.
class config_error : public error {
 public:
  using error::error;
};

/// An image file could not be decoded (corrupt, truncated, unsupported,
/// or dimensions beyond the supported limits).
class image_error : public error {
 public:
  using error::error;
};

/// A function was called with arguments of the wrong shape or value.
class argument_error : public error {
 public:
  using error::error;
};

}  // namespace vit
