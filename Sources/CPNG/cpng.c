// See include/cpng.h.
#include "cpng.h"
#include <png.h>
#include <stdlib.h>
#include <string.h>

static void copy_message(char *err, size_t errlen, const char *msg) {
    if (err && errlen) { strncpy(err, msg, errlen - 1); err[errlen - 1] = 0; }
}

static int begin(png_image *img, const unsigned char *data, size_t size, char *err, size_t errlen) {
    memset(img, 0, sizeof *img);
    img->version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(img, data, size)) {
        copy_message(err, errlen, img->message);
        png_image_free(img);
        return -1;
    }
    return 0;
}

int rd_png_header(const unsigned char *data, size_t size, int *width, int *height, char *err, size_t errlen) {
    png_image img;
    if (begin(&img, data, size, err, errlen)) return -1;
    *width = (int)img.width;
    *height = (int)img.height;
    png_image_free(&img);
    return 0;
}

int rd_png_decode(const unsigned char *data, size_t size, size_t max_pixels, unsigned char **rgb,
                  int *width, int *height, char *err, size_t errlen) {
    png_image img;
    *rgb = NULL;
    if (begin(&img, data, size, err, errlen)) return -1;
    *width = (int)img.width;
    *height = (int)img.height;
    if (max_pixels && (size_t)img.width * img.height > max_pixels) { png_image_free(&img); return -3; }
    img.format = PNG_FORMAT_RGB;
    size_t bytes = PNG_IMAGE_SIZE(img);
    unsigned char *buf = malloc(bytes ? bytes : 1);
    if (!buf) { copy_message(err, errlen, "out of memory"); png_image_free(&img); return -1; }
    if (!png_image_finish_read(&img, NULL, buf, 0, NULL)) {
        copy_message(err, errlen, img.message);
        free(buf);
        png_image_free(&img);
        return -1;
    }
    // A warning (a CRC error recovered, say) leaves the image usable but not trustworthy.
    if (img.warning_or_error) {
        copy_message(err, errlen, img.message[0] ? img.message : "damaged PNG");
        free(buf);
        return -1;
    }
    *rgb = buf;
    return 0;
}

int rd_png_encode(const unsigned char *rgb, int width, int height, unsigned char **out, size_t *outsize,
                  char *err, size_t errlen) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)width;
    img.height = (png_uint_32)height;
    img.format = PNG_FORMAT_RGB;
    png_alloc_size_t size = 0;
    if (!png_image_write_to_memory(&img, NULL, &size, 0, rgb, 0, NULL)) {
        copy_message(err, errlen, img.message);
        return -1;
    }
    unsigned char *buf = malloc(size);
    if (!buf) { copy_message(err, errlen, "out of memory"); return -1; }
    if (!png_image_write_to_memory(&img, buf, &size, 0, rgb, 0, NULL)) {
        copy_message(err, errlen, img.message);
        free(buf);
        return -1;
    }
    *out = buf;
    *outsize = size;
    return 0;
}

void rd_png_free(void *p) { free(p); }
