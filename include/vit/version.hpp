// vit/version.hpp - the library version.
//
// Kept in step with project(vit VERSION ...) in CMakeLists.txt; configuring
// the project fails if the two disagree.
#pragma once

#define VIT_VERSION_MAJOR 0
#define VIT_VERSION_MINOR 1
#define VIT_VERSION_PATCH 0
#define VIT_VERSION_STRING "0.1.0"

namespace vit {

/// Major, minor and patch version of the headers in use.
inline constexpr int version_major = VIT_VERSION_MAJOR;
inline constexpr int version_minor = VIT_VERSION_MINOR;
inline constexpr int version_patch = VIT_VERSION_PATCH;

/// "MAJOR.MINOR.PATCH"
inline constexpr const char* version_string = VIT_VERSION_STRING;

}  // namespace vit
