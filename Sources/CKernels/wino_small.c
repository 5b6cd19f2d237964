// Winograd F(2x2,3x3) transforms of small planes (see include/ckernels.h), AVX-512 only.
//
// A plane of h x w (both even) has (h/2)*(w/2) tiles. When that divides 16, one vector holds the
// tiles of 16 / tiles consecutive images of a channel, and those images' pixels are 64
// consecutive floats: four registers. Every value a lane needs is then one two-table permute
// (vpermt2ps) of that window, with a zeroing mask for the padding, so a group of 16 tiles costs
// a few dozen instructions with no loop over rows; the transformed tiles of consecutive images
// are consecutive in the transformed tensor, so each of the 16 results is one 16-float store.
// The arithmetic is that of Winograd.swift's loops, operation by operation: results are bit for bit
// the same.
#include "ckernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f")))

// Tiles of one h x w plane when the small-plane kernels apply (h, w even, tiles dividing 16), else 0.
static int plane_tiles(int h, int w) {
    if (h < 2 || w < 2 || h % 2 || w % 2) return 0;
    const int t = (h / 2) * (w / 2);
    return 16 % t == 0 ? t : 0;
}

// Lane L's tile: image L / tiles of the group, tile row and column within it.
struct lane { int image, ty, tx; };
static struct lane lane_of(int l, int h, int w) {
    const int tiles = (h / 2) * (w / 2), tw = w / 2;
    struct lane r = {l / tiles, (l % tiles) / tw, (l % tiles) % tw};
    return r;
}

// The window's value at (image, y, x) for each lane, as permute indices (0..63) and the masks of
// lanes reading the low pair of registers, the high pair, (none: padding).
struct gather { __m512i idx; __mmask16 lo, hi; };

AVX512 static struct gather gather_of(const int *index) {  // index[l] < 0: padding
    int idx[16];
    __mmask16 lo = 0, hi = 0;
    for (int l = 0; l < 16; l++) {
        idx[l] = index[l] < 0 ? 0 : index[l];
        if (index[l] >= 32) hi |= (__mmask16)(1u << l);
        else if (index[l] >= 0) lo |= (__mmask16)(1u << l);
    }
    struct gather g = {_mm512_loadu_si512(idx), lo, hi};
    return g;
}

AVX512 static inline __m512 take(struct gather g, __m512 s0, __m512 s1, __m512 s2, __m512 s3) {
    const __m512 a = _mm512_maskz_permutex2var_ps(g.lo, s0, g.idx, s1);
    const __m512 b = _mm512_maskz_permutex2var_ps(g.hi, s2, g.idx, s3);
    return _mm512_mask_blend_ps(g.hi, a, b);
}

// Input tile value (i, j) of each lane: x[image][2 ty - 1 + i][2 tx - 1 + j], 0 outside the plane.
AVX512 static void input_gathers(int h, int w, struct gather out[16]) {
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 4; j++) {
            int index[16];
            for (int l = 0; l < 16; l++) {
                const struct lane t = lane_of(l, h, w);
                const int y = 2 * t.ty - 1 + i, x = 2 * t.tx - 1 + j;
                index[l] = y >= 0 && y < h && x >= 0 && x < w ? (t.image * h + y) * w + x : -1;
            }
            out[i * 4 + j] = gather_of(index);
        }
    }
}

// The permutes of one plane shape, built once per thread and shape (the divisions of building
// them cost more than transforming a channel).
struct tables {
    int h, w;
    struct gather in[16];        // input tile value (i, j) of each lane
    struct gather grad[4];       // output-gradient value (a, b) of each lane
    __m512i out_idx[4];          // output: window register q from the lanes of top0/top1 or bot0/bot1
    __mmask16 out_odd[4];        // ... the bot pair (odd rows)
};

AVX512 static const struct tables *tables_for(int h, int w) {
    static _Thread_local struct tables t;
    if (t.h == h && t.w == w) return &t;
    input_gathers(h, w, t.in);
    // each lane's 2x2 output-gradient values: dy[image][2 ty + a][2 tx + b]
    for (int a = 0; a < 2; a++) {
        for (int b = 0; b < 2; b++) {
            int index[16];
            for (int l = 0; l < 16; l++) {
                const struct lane ln = lane_of(l, h, w);
                index[l] = (ln.image * h + 2 * ln.ty + a) * w + 2 * ln.tx + b;
            }
            t.grad[a * 2 + b] = gather_of(index);
        }
    }
    // Output window float k of register q (k = 16 q + lane): pixel (image, y, x), from lane
    // (image, y/2, x/2) of top0/top1 (even y) or bot0/bot1 (odd y), the left (even x) or right (odd x) one.
    const int tiles = (h / 2) * (w / 2), tw = w / 2;
    for (int q = 0; q < 4; q++) {
        int index[16];
        t.out_odd[q] = 0;
        for (int l = 0; l < 16; l++) {
            const int k = 16 * q + l, image = k / (h * w), yy = k % (h * w) / w, xx = k % w;
            index[l] = image * tiles + (yy / 2) * tw + xx / 2 + 16 * (xx & 1);
            if (yy & 1) t.out_odd[q] |= (__mmask16)(1u << l);
        }
        t.out_idx[q] = _mm512_loadu_si512(index);
    }
    t.h = h; t.w = w;
    return &t;
}

AVX512 static void input_avx512(const float *x, int h, int w, int groups, float *v, size_t plane) {
    const struct gather *gt = tables_for(h, w)->in;
    for (int gi = 0; gi < groups; gi++) {
        const float *s = x + (size_t)gi * 64;
        const __m512 s0 = _mm512_loadu_ps(s), s1 = _mm512_loadu_ps(s + 16);
        const __m512 s2 = _mm512_loadu_ps(s + 32), s3 = _mm512_loadu_ps(s + 48);
        // d B on each of the tile's 4 rows: (a, b, c, d) -> (a - c, b + c, c - b, b - d)
        __m512 r[4][4];
        for (int i = 0; i < 4; i++) {
            const __m512 a = take(gt[i * 4], s0, s1, s2, s3), b = take(gt[i * 4 + 1], s0, s1, s2, s3);
            const __m512 c = take(gt[i * 4 + 2], s0, s1, s2, s3), d = take(gt[i * 4 + 3], s0, s1, s2, s3);
            r[i][0] = _mm512_sub_ps(a, c); r[i][1] = _mm512_add_ps(b, c);
            r[i][2] = _mm512_sub_ps(c, b); r[i][3] = _mm512_sub_ps(b, d);
        }
        // B^T (.) across the rows, column k: matrices k, 4 + k, 8 + k, 12 + k
        float *q = v + (size_t)gi * 16;
        for (int k = 0; k < 4; k++) {
            _mm512_storeu_ps(q + (size_t)k * plane, _mm512_sub_ps(r[0][k], r[2][k]));
            _mm512_storeu_ps(q + (size_t)(4 + k) * plane, _mm512_add_ps(r[1][k], r[2][k]));
            _mm512_storeu_ps(q + (size_t)(8 + k) * plane, _mm512_sub_ps(r[2][k], r[1][k]));
            _mm512_storeu_ps(q + (size_t)(12 + k) * plane, _mm512_sub_ps(r[1][k], r[3][k]));
        }
    }
}

AVX512 static void output_avx512(const float *m, size_t plane, int h, int w, int groups, float *y, int accumulate) {
    const struct tables *tb = tables_for(h, w);
    const __m512i *idx = tb->out_idx;
    const __mmask16 *odd = tb->out_odd;
    for (int gi = 0; gi < groups; gi++) {
        const float *s = m + (size_t)gi * 16;
        __m512 e[16];
        for (int k = 0; k < 16; k++) e[k] = _mm512_loadu_ps(s + (size_t)k * plane);
        // A^T (.) A: p = rows 0 + 1 + 2, r = rows 1 - 2 - 3 per column; then the same across columns
        __m512 p[4], r[4];
        for (int k = 0; k < 4; k++) {
            p[k] = _mm512_add_ps(_mm512_add_ps(e[k], e[4 + k]), e[8 + k]);
            r[k] = _mm512_sub_ps(_mm512_sub_ps(e[4 + k], e[8 + k]), e[12 + k]);
        }
        const __m512 top0 = _mm512_add_ps(_mm512_add_ps(p[0], p[1]), p[2]);
        const __m512 top1 = _mm512_sub_ps(_mm512_sub_ps(p[1], p[2]), p[3]);
        const __m512 bot0 = _mm512_add_ps(_mm512_add_ps(r[0], r[1]), r[2]);
        const __m512 bot1 = _mm512_sub_ps(_mm512_sub_ps(r[1], r[2]), r[3]);
        float *d = y + (size_t)gi * 64;
        for (int q = 0; q < 4; q++) {
            const __m512 a = _mm512_permutex2var_ps(top0, idx[q], top1), b = _mm512_permutex2var_ps(bot0, idx[q], bot1);
            __m512 out = _mm512_mask_blend_ps(odd[q], a, b);
            if (accumulate) out = _mm512_add_ps(out, _mm512_loadu_ps(d + 16 * q));
            _mm512_storeu_ps(d + 16 * q, out);
        }
    }
}

AVX512 static inline __m512 neg(__m512 v) {        // 0 - v, as the tile transforms (a zero stays +0)
    return _mm512_sub_ps(_mm512_setzero_ps(), v);
}

AVX512 static void output_grad_avx512(const float *dy, int h, int w, int groups, float *z, size_t plane) {
    const struct gather *gt = tables_for(h, w)->grad;
    for (int gi = 0; gi < groups; gi++) {
        const float *s = dy + (size_t)gi * 64;
        const __m512 s0 = _mm512_loadu_ps(s), s1 = _mm512_loadu_ps(s + 16);
        const __m512 s2 = _mm512_loadu_ps(s + 32), s3 = _mm512_loadu_ps(s + 48);
        const __m512 ye = take(gt[0], s0, s1, s2, s3), yo = take(gt[1], s0, s1, s2, s3);
        const __m512 ze = take(gt[2], s0, s1, s2, s3), zo = take(gt[3], s0, s1, s2, s3);
        // A y on each row: (y0, y0 + y1, y0 - y1, -y1); then (a, a + b, a - b, -b) across the rows
        const __m512 a[4] = {ye, _mm512_add_ps(ye, yo), _mm512_sub_ps(ye, yo), neg(yo)};
        const __m512 b[4] = {ze, _mm512_add_ps(ze, zo), _mm512_sub_ps(ze, zo), neg(zo)};
        float *q = z + (size_t)gi * 16;
        for (int c = 0; c < 4; c++) {
            _mm512_storeu_ps(q + (size_t)c * plane, a[c]);
            _mm512_storeu_ps(q + (size_t)(4 + c) * plane, _mm512_add_ps(a[c], b[c]));
            _mm512_storeu_ps(q + (size_t)(8 + c) * plane, _mm512_sub_ps(a[c], b[c]));
            _mm512_storeu_ps(q + (size_t)(12 + c) * plane, neg(b[c]));
        }
    }
}

// Kernel transform, 16 (row, column) pairs a vector: each of the 9 taps one gather, the
// arithmetic in double as in Winograd.swift (two registers of 8), rounded once per value.
AVX512 static inline __m512 to_float(__m512d lo, __m512d hi) {
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(_mm512_cvtpd_ps(lo))),
                                               _mm256_castps_pd(_mm512_cvtpd_ps(hi)), 1));
}

AVX512 static void weights_avx512(const float *w, int cout, int cin, int transpose_flip, int r0, int r1, float *u,
                                  size_t plane) {
    const int cols = transpose_flip ? cout : cin;
    // lane l, tap k of pair (r, c + l): w[(r cin + c + l) 9 + k], or flipped w[((c + l) cin + r) 9 + 8 - k]
    const int step = transpose_flip ? cin * 9 : 9;
    int lanes[16];
    for (int l = 0; l < 16; l++) lanes[l] = l * step;
    const __m512i base = _mm512_loadu_si512(lanes);
    const __m512d half = _mm512_set1_pd(0.5);
    for (int r = r0; r < r1; r++) {
        float *dst = u + (size_t)r * cols;
        for (int c = 0; c < cols; c += 16) {
            const __mmask16 live = cols - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (cols - c)) - 1);
            const float *k0 = transpose_flip ? w + ((size_t)c * cin + r) * 9 : w + ((size_t)r * cin + c) * 9;
            __m512d lo[9], hi[9];
            for (int k = 0; k < 9; k++) {
                const int tap = transpose_flip ? 8 - k : k;
                const __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live,
                                                          _mm512_add_epi32(base, _mm512_set1_epi32(tap)), k0, 4);
                lo[k] = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
                hi[k] = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
            }
            // G g: rows g0..2, t1 = (g0 + g3 + g6)/2 per column, t2 = (g0 - g3 + g6)/2, g6..8
            __m512d t[2][12];
            for (int h = 0; h < 2; h++) {
                const __m512d *g = h ? hi : lo;
                for (int j = 0; j < 3; j++) {
                    t[h][j] = g[j];
                    t[h][3 + j] = _mm512_mul_pd(half, _mm512_add_pd(_mm512_add_pd(g[j], g[3 + j]), g[6 + j]));
                    t[h][6 + j] = _mm512_mul_pd(half, _mm512_add_pd(_mm512_sub_pd(g[j], g[3 + j]), g[6 + j]));
                    t[h][9 + j] = g[6 + j];
                }
            }
            // (G g) G^T: each row (a, b, c) -> (a, (a + b + c)/2, (a - b + c)/2, c), matrices 4 row + 0..3
            for (int row = 0; row < 4; row++) {
                __m512d o[2][4];
                for (int h = 0; h < 2; h++) {
                    const __m512d a = t[h][3 * row], b = t[h][3 * row + 1], cc = t[h][3 * row + 2];
                    o[h][0] = a;
                    o[h][1] = _mm512_mul_pd(half, _mm512_add_pd(_mm512_add_pd(a, b), cc));
                    o[h][2] = _mm512_mul_pd(half, _mm512_add_pd(_mm512_sub_pd(a, b), cc));
                    o[h][3] = cc;
                }
                for (int j = 0; j < 4; j++)
                    _mm512_mask_storeu_ps(dst + (size_t)(4 * row + j) * plane + c, live, to_float(o[0][j], o[1][j]));
            }
        }
    }
}

int reid_wino_weights(const float *w, int cout, int cin, int transpose_flip, int r0, int r1, float *u, size_t plane) {
    if (reid_kernels_path() < REID_PATH_AVX512) return 0;
    weights_avx512(w, cout, cin, transpose_flip, r0, r1, u, plane);
    return 1;
}

int reid_wino_small_images(int h, int w) {
    const int t = plane_tiles(h, w);
    return t > 0 && reid_kernels_path() >= REID_PATH_AVX512 ? 16 / t : 0;
}

void reid_wino_input_small(const float *x, int h, int w, int groups, float *v, size_t plane) {
    input_avx512(x, h, w, groups, v, plane);
}

void reid_wino_output_small(const float *m, size_t plane, int h, int w, int groups, float *y, int accumulate) {
    output_avx512(m, plane, h, w, groups, y, accumulate);
}

void reid_wino_output_grad_small(const float *dy, int h, int w, int groups, float *z, size_t plane) {
    output_grad_avx512(dy, h, w, groups, z, plane);
}

#else
int reid_wino_small_images(int h, int w) { (void)h; (void)w; return 0; }
int reid_wino_weights(const float *w, int cout, int cin, int transpose_flip, int r0, int r1, float *u, size_t plane) {
    (void)w; (void)cout; (void)cin; (void)transpose_flip; (void)r0; (void)r1; (void)u; (void)plane;
    return 0;
}
void reid_wino_input_small(const float *x, int h, int w, int groups, float *v, size_t plane) {
    (void)x; (void)h; (void)w; (void)groups; (void)v; (void)plane;
}
void reid_wino_output_small(const float *m, size_t plane, int h, int w, int groups, float *y, int accumulate) {
    (void)m; (void)plane; (void)h; (void)w; (void)groups; (void)y; (void)accumulate;
}
void reid_wino_output_grad_small(const float *dy, int h, int w, int groups, float *z, size_t plane) {
    (void)dy; (void)h; (void)w; (void)groups; (void)z; (void)plane;
}
#endif
