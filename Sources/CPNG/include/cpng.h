// CPNG: PNG decode/encode over libpng's simplified API, which reports errors
// in its png_image structure instead of longjmp-ing through the caller.
#ifndef REID_CPNG_H
#define REID_CPNG_H
#include <stddef.h>

/// Decodes a PNG held in memory to packed RGB8 (palette, grey, 16-bit and alpha
/// are converted; alpha is composed over black). Returns 0 and sets *rgb (free
/// with rd_png_free), *width, *height; -1 with a message in err; -3 when the image
/// has more than max_pixels pixels (0: no limit), read from its header, with
/// *width and *height set and nothing decoded.
int rd_png_decode(const unsigned char *data, size_t size, size_t max_pixels, unsigned char **rgb,
                  int *width, int *height, char *err, size_t errlen);

/// Reads only the header: the image's size. Returns 0, or -1 with a message.
int rd_png_header(const unsigned char *data, size_t size, int *width, int *height, char *err, size_t errlen);

/// Encodes packed RGB8 as PNG. Returns 0 and sets *out (free with rd_png_free) and *outsize.
int rd_png_encode(const unsigned char *rgb, int width, int height, unsigned char **out, size_t *outsize,
                  char *err, size_t errlen);

void rd_png_free(void *p);
#endif
