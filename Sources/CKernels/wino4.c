// Winograd F(4x4,3x3) transforms (see include/ckernels.h), one copy per vector path, chosen at run
// time. The 1-D transforms are generated from the interpolation points (wino4_transforms.h, by
// Cluster/dev/make_winograd4.py); every path applies them in the same order, rows then columns.
#include "ckernels.h"
#include "vectors.h"
#include "wino4_transforms.h"
#include <string.h>

#define CHUNK 64  // tiles gathered and transformed at a time

#define SUFFIX portable
#define TARGET
#define VT v4
#define VL 4
#define VD d2
#define VDL 2
#define VF v2
#include "wino4_body.inc"

#if defined(__x86_64__)
#define SUFFIX avx2
#define TARGET __attribute__((target("avx2,fma")))
#define VT v8
#define VL 8
#define VD d4
#define VDL 4
#define VF v4
#include "wino4_body.inc"

#define SUFFIX avx512
#define TARGET __attribute__((target("avx512f,avx2,fma")))
#define VT v16
#define VL 16
#define VD d8
#define VDL 8
#define VF v8
#include "wino4_body.inc"
#endif

typedef void (*input_fn)(const float *, int, int, int, float *, size_t);
typedef void (*output_fn)(const float *, size_t, int, int, int, float *, int);
typedef void (*output_grad_fn)(const float *, int, int, int, float *, size_t);
#if defined(__x86_64__)
static const input_fn inputs[] = {input_portable, input_avx2, input_avx512};
static const output_fn outputs[] = {output_portable, output_avx2, output_avx512};
static const output_grad_fn output_grads[] = {output_grad_portable, output_grad_avx2, output_grad_avx512};
#else
static const input_fn inputs[] = {input_portable};
static const output_fn outputs[] = {output_portable};
static const output_grad_fn output_grads[] = {output_grad_portable};
#endif

void reid_wino4_input(int path, const float *x, int h, int w, int images, float *v, size_t plane) {
    inputs[reid_kernels_usable_path(path)](x, h, w, images, v, plane);
}

void reid_wino4_output(int path, const float *m, size_t plane, int h, int w, int images, float *y, int accumulate) {
    outputs[reid_kernels_usable_path(path)](m, plane, h, w, images, y, accumulate);
}

void reid_wino4_output_grad(int path, const float *dy, int h, int w, int images, float *z, size_t plane) {
    output_grads[reid_kernels_usable_path(path)](dy, h, w, images, z, plane);
}

typedef void (*weights_fn)(const float *, int, int, int, int, int, float *, size_t);
typedef void (*weight_grad_fn)(const float *, size_t, int, int, int, int, float *);
#if defined(__x86_64__)
static const weights_fn weights[] = {weights_portable, weights_avx2, weights_avx512};
static const weight_grad_fn weight_grads[] = {weight_grad_portable, weight_grad_avx2, weight_grad_avx512};
#else
static const weights_fn weights[] = {weights_portable};
static const weight_grad_fn weight_grads[] = {weight_grad_portable};
#endif

void reid_wino4_weights(int path, const float *w, int cout, int cin, int transpose_flip, int r0, int r1, float *u, size_t plane) {
    weights[reid_kernels_usable_path(path)](w, cout, cin, transpose_flip, r0, r1, u, plane);
}

void reid_wino4_weight_grad(int path, const float *du, size_t plane, int cout, int cin, int o0, int o1, float *dw) {
    weight_grads[reid_kernels_usable_path(path)](du, plane, cout, cin, o0, o1, dw);
}
