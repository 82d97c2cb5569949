// src/stb_impl.cpp - the one compiled copy of stb_image and stb_image_write in
// vit::image. Third-party code: built with warnings off (see CMakeLists.txt);
// only the thin forwarding functions below are ours.
#include "stb_bridge.hpp"

// Static: no stbi_* symbols leave this file (see stb_bridge.hpp).
#define STB_IMAGE_STATIC
#define STB_IMAGE_WRITE_STATIC
// Failure reasons as sentences ("Corrupt PNG") rather than short codes.
#define STBI_FAILURE_USERMSG
// Formats Pillow does not read either (Radiance HDR would also need tone mapping).
#define STBI_NO_HDR
#define STBI_NO_PIC
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

namespace vit::detail::stb {

bool info_from_memory(const unsigned char* data, int len, int* w, int* h, int* comp) {
  return stbi_info_from_memory(data, len, w, h, comp) != 0;
}

bool info_from_file(std::FILE* f, int* w, int* h, int* comp) {
  return stbi_info_from_file(f, w, h, comp) != 0;
}

bool is_16_bit_from_memory(const unsigned char* data, int len) {
  return stbi_is_16_bit_from_memory(data, len) != 0;
}

unsigned char* load_from_memory(const unsigned char* data, int len, int* w, int* h, int* comp,
                                int req_comp) {
  return stbi_load_from_memory(data, len, w, h, comp, req_comp);
}

void free_pixels(void* pixels) { stbi_image_free(pixels); }

const char* failure_reason() { return stbi_failure_reason(); }

bool write_png_to_func(WriteFunc* write, void* context, int w, int h, int comp, const void* data,
                       int stride_bytes) {
  return stbi_write_png_to_func(write, context, w, h, comp, data, stride_bytes) != 0;
}

}  // namespace vit::detail::stb
