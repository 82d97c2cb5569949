// Packaging test: uses vit headers installed with `cmake --install`.
#include <cstdio>
#include <cstring>
#include <vit/vit.hpp>
#ifdef VIT_CONSUMER_HAS_IMAGE
#include <vit/io/image_io.hpp>
#endif

int main() {
  if (std::strcmp(VIT_VERSION_STRING, EXPECTED_VIT_VERSION) != 0) {
    std::fprintf(stderr, "headers say %s, vitConfigVersion.cmake says %s\n", VIT_VERSION_STRING,
                 EXPECTED_VIT_VERSION);
    return 1;
  }

  vit::Matrix<float> m(2, 3);
  m.setOnes();
  vit::detail::check_shape(m, 2, 3, "m");
  try {
    vit::detail::check_shape(m, 3, 2, "m");
    std::fprintf(stderr, "check_shape accepted a wrong shape\n");
    return 1;
  } catch (const vit::argument_error&) {
  }

#ifdef VIT_CONSUMER_HAS_IMAGE
  // vit::image links (stb inside it) and reports a missing file as io_error.
  try {
    vit::probe_image("no-such-image.png");
    std::fprintf(stderr, "probe_image accepted a missing file\n");
    return 1;
  } catch (const vit::io_error&) {
  }
#endif

  std::printf("vit %s: %dx%d matrix, sum %g\n", vit::version_string, static_cast<int>(m.rows()),
              static_cast<int>(m.cols()), static_cast<double>(m.sum()));
  return 0;
}
