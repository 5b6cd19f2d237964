// Winograd F(4x4,3x3) transforms (see include/ckernels.h), one copy per vector path, chosen at run
// time. The 1-D transforms are generated from the interpolation points (wino4_transforms.h, by
// Cluster/tools/make_winograd4.py); every path applies them in the same order, rows then columns.
#include "ckernels.h"
#include "wino4_transforms.h"
#include <string.h>

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define CHUNK 64

typedef float v4 __attribute__((vector_size(16), aligned(4)));
typedef float v8 __attribute__((vector_size(32), aligned(4)));
typedef float v16 __attribute__((vector_size(64), aligned(4)));

#define SUFFIX portable
#define TARGET
#define VT v4
#define VL 4
#include "wino4_body.inc"

#if defined(__x86_64__)
#define SUFFIX avx2
#define TARGET __attribute__((target("avx2,fma")))
#define VT v8
#define VL 8
#include "wino4_body.inc"

#define SUFFIX avx512
#define TARGET __attribute__((target("avx512f,avx2,fma")))
#define VT v16
#define VL 16
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

void reid_wino4_input(const float *x, int h, int w, int images, float *v, size_t plane) {
    inputs[reid_kernels_path()](x, h, w, images, v, plane);
}

void reid_wino4_output(const float *m, size_t plane, int h, int w, int images, float *y, int accumulate) {
    outputs[reid_kernels_path()](m, plane, h, w, images, y, accumulate);
}

void reid_wino4_output_grad(const float *dy, int h, int w, int images, float *z, size_t plane) {
    output_grads[reid_kernels_path()](dy, h, w, images, z, plane);
}

// In double, rounded once per value: G's entries (thirds, fifteenths) are not exact in float.
void reid_wino4_weights(const float *w, int cout, int cin, int transpose_flip, int r0, int r1, float *u, size_t plane) {
    const int cols = transpose_flip ? cout : cin;
    for (int r = r0; r < r1; r++) {
        for (int c = 0; c < cols; c++) {
            const float *k = transpose_flip ? w + ((size_t)c * cin + r) * 9 : w + ((size_t)r * cin + c) * 9;
            double g[9], t[18], e[36];
            for (int i = 0; i < 9; i++) g[i] = transpose_flip ? k[8 - i] : k[i];
            for (int j = 0; j < 3; j++) W4_G(t + j, 3, g + j, 3);               // columns: t[p][j] = (G g)[p][j]
            for (int p = 0; p < 6; p++) W4_G(e + p * 6, 1, t + p * 3, 1);       // rows: e[p][q] = (t G^T)[p][q]
            float *dst = u + (size_t)r * cols + c;
            for (int q = 0; q < 36; q++) dst[q * plane] = (float)e[q];
        }
    }
}

void reid_wino4_weight_grad(const float *du, size_t plane, int cout, int cin, int o0, int o1, float *dw) {
    for (int o = o0; o < o1; o++) {
        for (int i = 0; i < cin; i++) {
            const float *s = du + (size_t)o * cin + i;
            double d[36], t[18], g[9];
            for (int q = 0; q < 36; q++) d[q] = s[q * plane];
            for (int p = 0; p < 6; p++) W4_GT(t + p * 3, 1, d + p * 6, 1);      // rows: t[p][j] = (d[p] G)[j]
            for (int j = 0; j < 3; j++) W4_GT(g + j, 3, t + j, 3);              // columns: g[i][j] = (G^T t)[i][j]
            float *dst = dw + ((size_t)o * cin + i) * 9;
            for (int k = 0; k < 9; k++) dst[k] += (float)g[k];
        }
    }
}
