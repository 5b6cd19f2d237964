// See include/cjpeg.h. Warnings (corrupt-data recoveries) are treated as errors:
// a truncated or damaged file is reported, never silently half-decoded.
#include "cjpeg.h"
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>

struct rd_error {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

static void rd_error_exit(j_common_ptr cinfo) {
    struct rd_error *e = (struct rd_error *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->message);
    longjmp(e->jump, 1);
}

static void rd_emit_message(j_common_ptr cinfo, int level) {
    // level -1: a warning, e.g. "Premature end of JPEG file": fail on it.
    if (level < 0) rd_error_exit(cinfo);
}

/// Errors and warnings come back through rd_error_exit's longjmp (setjmp is the caller's).
static void install_errors(j_common_ptr cinfo, struct rd_error *jerr) {
    cinfo->err = jpeg_std_error(&jerr->pub);
    jerr->pub.error_exit = rd_error_exit;
    jerr->pub.emit_message = rd_emit_message;
}

static void copy_message(char *err, size_t errlen, const char *msg) {
    if (err && errlen) { strncpy(err, msg, errlen - 1); err[errlen - 1] = 0; }
}

int rd_jpeg_header(const unsigned char *data, size_t size, int *width, int *height, char *err, size_t errlen) {
    struct jpeg_decompress_struct cinfo;
    struct rd_error jerr;
    install_errors((j_common_ptr)&cinfo, &jerr);
    if (setjmp(jerr.jump)) {
        copy_message(err, errlen, jerr.message);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    *width = (int)cinfo.image_width;
    *height = (int)cinfo.image_height;
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

int rd_jpeg_decode(const unsigned char *data, size_t size, size_t max_pixels, unsigned char **rgb,
                   int *width, int *height, char *err, size_t errlen) {
    struct jpeg_decompress_struct cinfo;
    struct rd_error jerr;
    unsigned char *volatile buf = NULL;
    *rgb = NULL;
    install_errors((j_common_ptr)&cinfo, &jerr);
    if (setjmp(jerr.jump)) {
        copy_message(err, errlen, jerr.message);
        jpeg_destroy_decompress(&cinfo);
        free(buf);
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    if (max_pixels && (size_t)cinfo.image_width * cinfo.image_height > max_pixels) {
        *width = (int)cinfo.image_width;
        *height = (int)cinfo.image_height;
        jpeg_destroy_decompress(&cinfo);
        return -3;
    }
    cinfo.out_color_space = JCS_RGB;
    jpeg_start_decompress(&cinfo);
    size_t stride = (size_t)cinfo.output_width * 3;
    buf = malloc(stride * cinfo.output_height);
    if (!buf) { copy_message(err, errlen, "out of memory"); jpeg_destroy_decompress(&cinfo); return -1; }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = buf + stride * cinfo.output_scanline;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    *width = (int)cinfo.output_width;
    *height = (int)cinfo.output_height;
    jpeg_destroy_decompress(&cinfo);
    *rgb = buf;
    return 0;
}

int rd_jpeg_encode(const unsigned char *rgb, int width, int height, int quality,
                   unsigned char **out, size_t *outsize, char *err, size_t errlen) {
    struct jpeg_compress_struct cinfo;
    struct rd_error jerr;
    unsigned char *mem = NULL;
    unsigned long memsize = 0;
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = rd_error_exit;
    if (setjmp(jerr.jump)) {
        copy_message(err, errlen, jerr.message);
        jpeg_destroy_compress(&cinfo);
        free(mem);
        return -1;
    }
    jpeg_create_compress(&cinfo);
    jpeg_mem_dest(&cinfo, &mem, &memsize);
    cinfo.image_width = (JDIMENSION)width;
    cinfo.image_height = (JDIMENSION)height;
    cinfo.input_components = 3;
    cinfo.in_color_space = JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    jpeg_start_compress(&cinfo, TRUE);
    size_t stride = (size_t)width * 3;
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = (JSAMPROW)(rgb + stride * cinfo.next_scanline);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    *out = mem;
    *outsize = memsize;
    return 0;
}

void rd_free(void *p) { free(p); }
