// CJPEG: JPEG decode/encode over libjpeg-turbo with errors returned, not exit().
// libjpeg reports errors through a longjmp out of its error manager, which
// Swift cannot host; this C layer catches them and returns a message.
#ifndef REID_CJPEG_H
#define REID_CJPEG_H
#include <stddef.h>

/// Decodes a JPEG held in memory to packed RGB8. On success returns 0 and sets
/// *rgb (free with rd_free), *width, *height. On failure returns -1 and writes
/// a message into err (errlen bytes). An image of more than max_pixels pixels
/// (0: no limit) is refused from its header, before any pixel is decoded:
/// returns -3 with *width and *height set.
int rd_jpeg_decode(const unsigned char *data, size_t size, size_t max_pixels, unsigned char **rgb,
                   int *width, int *height, char *err, size_t errlen);

/// Reads only the header: the image's size. Returns 0, or -1 with a message.
int rd_jpeg_header(const unsigned char *data, size_t size, int *width, int *height, char *err, size_t errlen);

/// Encodes packed RGB8 (width*height*3 bytes) as JPEG at quality 1-100.
/// On success returns 0 and sets *out (free with rd_free) and *outsize.
int rd_jpeg_encode(const unsigned char *rgb, int width, int height, int quality,
                   unsigned char **out, size_t *outsize, char *err, size_t errlen);

void rd_free(void *p);
#endif
