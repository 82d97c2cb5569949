// The one compiled copy of stb_image for this example.
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
