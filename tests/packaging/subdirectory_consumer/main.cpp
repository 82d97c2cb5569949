// Packaging test: uses vit headers from the source tree, added with add_subdirectory().
#include <cstdio>
#include <vit/vit.hpp>

int main() {
  vit::Matrix<float> m(2, 3);
  m.setOnes();
  vit::detail::check_shape(m, 2, 3, "m");
  try {
    vit::detail::check_shape(m, 2, 4, "m");
    std::fprintf(stderr, "check_shape accepted a wrong shape\n");
    return 1;
  } catch (const vit::argument_error&) {
  }

  std::printf("vit %s: %dx%d matrix, sum %g\n", vit::version_string, static_cast<int>(m.rows()),
              static_cast<int>(m.cols()), static_cast<double>(m.sum()));
  return 0;
}
