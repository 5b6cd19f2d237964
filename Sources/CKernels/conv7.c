// Direct 7x7 convolution (see include/ckernels.h), one copy per vector path, chosen at run time.
// Numbers: every path sums a pixel's taps in the same (ci, ki, kj) order in one accumulator; the
// weight gradient sums each tap over a block's pixels lane by lane, then across the lanes.
#include "ckernels.h"
#include "vectors.h"
#include <string.h>


// The input rows a block reads, split by column phase (stride 2: even and odd columns) and padded
// with zeros, so that every tap of a tile reads one contiguous vector:
//   p[((ci*rowsIn + r)*stride + phase)*wp + t] = x[ci, img, oy0*stride - pad + r, t*stride + phase - pad]
// and tap (ki, kj) of output pixel (r, ox) is at row r*stride + ki, phase kj % stride, t = ox + kj / stride.
struct phases {
    int wp;          // floats a phase row
    size_t channel;  // floats a channel
    int off[7];      // tap kj's offset within a row pair: phase row, then column
};

// Columns of a phase row: whole 32-pixel tiles of output plus the 6 / stride columns taps reach past them.
static int phase_width(int wo) { return (wo + 31) / 32 * 32 + 8; }

size_t reid_conv7_scratch_floats(int cin, int rows, int wo, int stride) {
    const int s = stride < 1 ? 1 : stride;
    return (size_t)cin * ((rows - 1) * s + 7) * s * phase_width(wo);
}

static struct phases split_phases(float *p, const float *x, int cin, int n, int h, int w, int wo,
                                  int stride, int pad, int img, int oy0, int oy1) {
    struct phases ph;
    ph.wp = phase_width(wo);
    const int rowsIn = (oy1 - oy0 - 1) * stride + 7;
    ph.channel = (size_t)rowsIn * stride * ph.wp;
    for (int kj = 0; kj < 7; kj++) ph.off[kj] = (kj % stride) * ph.wp + kj / stride;
    for (int ci = 0; ci < cin; ci++) {
        for (int r = 0; r < rowsIn; r++) {
            const int iy = oy0 * stride - pad + r;
            for (int f = 0; f < stride; f++) {
                float *dst = p + ((size_t)(ci * rowsIn + r) * stride + f) * ph.wp;
                if (iy < 0 || iy >= h) { memset(dst, 0, (size_t)ph.wp * sizeof(float)); continue; }
                const float *src = x + ((size_t)(ci * n + img) * h + iy) * w;
                for (int t = 0; t < ph.wp; t++) {
                    const int ix = t * stride + f - pad;
                    dst[t] = ix >= 0 && ix < w ? src[ix] : 0.0f;
                }
            }
        }
    }
    return ph;
}

// Portable: 4-wide vectors (SSE2 on x86-64, NEON on arm64), 8 + 14 accumulators.
#define SUFFIX portable
#define TARGET
#define VT v4
#define VL 4
#define NV 2
#define CBF 4
#define CBW 2
#include "conv7_body.inc"

#if defined(__x86_64__)
// AVX2 + FMA: 16 ymm registers; 8 forward accumulators, 7 weight-gradient ones.
#define SUFFIX avx2
#define TARGET __attribute__((target("avx2,fma")))
#define VT v8
#define VL 8
#define NV 2
#define CBF 4
#define CBW 1
#include "conv7_body.inc"

// AVX-512: 32 zmm registers; 16 forward accumulators, 14 weight-gradient ones.
#define SUFFIX avx512
#define TARGET __attribute__((target("avx512f,avx2,fma")))
#define VT v16
#define VL 16
#define NV 2
#define CBF 8
#define CBW 2
#include "conv7_body.inc"
#endif

static int detect_path(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return REID_PATH_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return REID_PATH_AVX2;
#endif
    return REID_PATH_PORTABLE;
}

int reid_kernels_best_path(void) {
    static int best = -1;           // detected once; threads that race here store the same value
    int b = __atomic_load_n(&best, __ATOMIC_RELAXED);
    if (b < 0) { b = detect_path(); __atomic_store_n(&best, b, __ATOMIC_RELAXED); }
    return b;
}

int reid_kernels_usable_path(int path) {
    const int best = reid_kernels_best_path();
    if (path < REID_PATH_PORTABLE) return REID_PATH_PORTABLE;
    return path < best ? path : best;
}

const char *reid_kernels_path_name(int path) {
    switch (path) {
    case REID_PATH_AVX512: return "AVX-512";
    case REID_PATH_AVX2: return "AVX2+FMA";
    default: return "portable C (4-wide vectors)";
    }
}

// Each path's functions, indexed by REID_PATH_*.
typedef void (*forward_fn)(float *, const float *, const float *, int, int, int, int, int, int, int, int, int, int, int,
                           int, float *);
typedef void (*weight_grad_fn)(float *, const float *, const float *, int, int, int, int, int, int, int, int, int, int,
                               int, int, float *);
#if defined(__x86_64__)
static const forward_fn forwards[] = {forward_portable, forward_avx2, forward_avx512};
static const weight_grad_fn weight_grads[] = {weight_grad_portable, weight_grad_avx2, weight_grad_avx512};
#else
static const forward_fn forwards[] = {forward_portable};
static const weight_grad_fn weight_grads[] = {weight_grad_portable};
#endif

void reid_conv7_forward(int path, float *y, const float *x, const float *wt, int cin, int cout, int n, int h, int w,
                        int ho, int wo, int stride, int pad, int img, int oy0, int oy1, float *scratch) {
    forwards[reid_kernels_usable_path(path)](y, x, wt, cin, cout, n, h, w, ho, wo, stride, pad, img, oy0, oy1, scratch);
}

void reid_conv7_weight_grad(int path, float *dwt, const float *dy, const float *x, int cin, int cout, int n, int h, int w,
                            int ho, int wo, int stride, int pad, int img, int oy0, int oy1, float *scratch) {
    weight_grads[reid_kernels_usable_path(path)](dwt, dy, x, cin, cout, n, h, w, ho, wo, stride, pad, img, oy0, oy1, scratch);
}
