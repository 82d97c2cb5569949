// src/stb_bridge.hpp - private to vit::image (not installed): the few stb
// functions image_io.cpp uses, under vit's own names.
//
// stb is compiled with STB_IMAGE_STATIC / STB_IMAGE_WRITE_STATIC inside
// stb_impl.cpp, so vit::image exports no stbi_* symbols and can be linked into
// programs that compile their own copy of stb.
#pragma once

#include <cstdio>

namespace vit::detail::stb {

/// stbi_info_from_memory / stbi_info_from_file: true on success.
bool info_from_memory(const unsigned char* data, int len, int* w, int* h, int* comp);
bool info_from_file(std::FILE* f, int* w, int* h, int* comp);
/// stbi_is_16_bit_from_memory: true if the samples have 16 bits.
bool is_16_bit_from_memory(const unsigned char* data, int len);

/// stbi_load_from_memory converted to `req_comp` 8-bit channels; nullptr on
/// failure. Free the result with free_pixels.
unsigned char* load_from_memory(const unsigned char* data, int len, int* w, int* h, int* comp,
                                int req_comp);
void free_pixels(void* pixels);

/// stbi_failure_reason(): why the last call on this thread failed.
const char* failure_reason();

/// stbi_write_png_to_func: the encoded bytes are passed to `write` in pieces.
using WriteFunc = void(void* context, void* data, int size);
bool write_png_to_func(WriteFunc* write, void* context, int w, int h, int comp, const void* data,
                       int stride_bytes);

}  // namespace vit::detail::stb
