// Winograd F(2x2,3x3) tile transforms in groups of 16 tiles (see include/ckernels.h), AVX-512 only.
//
// A plane of h x w (both even) has th x tw 2x2 tiles. When tw divides 16, 16 consecutive tiles in
// raster order are R = 16 / tw whole tile rows: of several images when an image has fewer than 16
// tiles (8x4 planes: 2 images), else part of one image. Their pixels are then 64 consecutive
// floats (2R rows of w), four registers, and every value a lane needs is one two-table permute
// (vpermt2ps) of those registers, or, for the input transform of a part of an image, of the
// window of its 2R + 2 rows with their halo (up to 8 registers). Each of the 16 transformed values
// of a group is then one 16-float store, as consecutive tiles are consecutive columns of the
// transformed matrices. The arithmetic is that of WinogradTiles.swift's loops, operation by
// operation, so the results are the same bit for bit.
#include "ckernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f")))

// How groups of 16 tiles lie in h x w planes.
struct shape {
    int tw, th, tiles;   // tiles a row, tile rows, tiles an image
    int images;          // whole images a group, when an image has at most 16 tiles; else 0
    int rows;            // tile rows a group, R = 16 / tw
};

static int shape_of(int h, int w, struct shape *s) {
    if (h < 2 || w < 2 || h % 2 || w % 2 || 16 % (w / 2)) return 0;
    s->tw = w / 2; s->th = h / 2; s->tiles = s->tw * s->th; s->rows = 16 / s->tw;
    if (s->tiles <= 16) {
        if (16 % s->tiles) return 0;
        s->images = 16 / s->tiles;
    } else {
        if (s->tiles % 16) return 0;
        s->images = 0;
    }
    return 1;
}

// First row of the input window of the group at tile row gy (2R + 2 rows, kept inside the plane).
static int window_row(int gy, int h, int rows) {
    const int s = 2 * gy - 1, last = h - (2 * rows + 2);
    return s < 0 ? 0 : s > last ? last : s;
}

// One value of each lane: permute indices into the window's registers, and per register pair
// (0-1, 2-3, 4-5, 6-7) the lanes it serves; lanes in none read 0 (padding).
struct gather { __m512i idx; __mmask16 k[4]; };

AVX512 static struct gather gather_of(const int *index) {  // index[l] < 0: padding
    struct gather g;
    int idx[16];
    for (int p = 0; p < 4; p++) g.k[p] = 0;
    for (int l = 0; l < 16; l++) {
        idx[l] = index[l] < 0 ? 0 : index[l] % 32;
        if (index[l] >= 0) g.k[index[l] / 32] |= (__mmask16)(1u << l);
    }
    g.idx = _mm512_loadu_si512(idx);
    return g;
}

AVX512 static inline __m512 take(const struct gather *g, const __m512 *s) {
    __m512 r = _mm512_maskz_permutex2var_ps(g->k[0], s[0], g->idx, s[1]);
    if (g->k[1]) r = _mm512_mask_mov_ps(r, g->k[1], _mm512_permutex2var_ps(s[2], g->idx, s[3]));
    if (g->k[2]) r = _mm512_mask_mov_ps(r, g->k[2], _mm512_permutex2var_ps(s[4], g->idx, s[5]));
    if (g->k[3]) r = _mm512_mask_mov_ps(r, g->k[3], _mm512_permutex2var_ps(s[6], g->idx, s[7]));
    return r;
}

// The permutes of one plane shape, built once per thread and shape (building them costs more than
// transforming a channel).
enum { FIRST, MIDDLE, LAST };
struct tables {
    int h, w;
    struct gather in[3][16];     // input value (i, j) of each lane; groups of whole images use [FIRST]
    struct gather grad[4];       // output-gradient value (a, b) of each lane, from the group's 64 floats
    __m512i out_idx[4];          // output register q of the 64 floats: lanes of top0/top1 or bot0/bot1 ...
    __mmask16 out_odd[4];        // ... the bot pair on odd rows
};

AVX512 static const struct tables *tables_for(int h, int w) {
    static _Thread_local struct tables t;
    if (t.h == h && t.w == w) return &t;
    struct shape s;
    shape_of(h, w, &s);
    const int tw = s.tw;
    // input: lane l is tile (k, tx) = (l / tw, l % tw) of the group's R tile rows
    for (int type = FIRST; type <= LAST; type++) {
        const int gy = type == FIRST ? 0 : type == MIDDLE ? s.rows : s.th - s.rows;
        for (int i = 0; i < 4; i++) {
            for (int j = 0; j < 4; j++) {
                int index[16];
                for (int l = 0; l < 16; l++) {
                    const int x = 2 * (l % tw) - 1 + j;
                    if (s.images > 0) {               // whole images: each lane's own, zero rows around it
                        const int image = l / s.tiles, ty = l % s.tiles / tw, y = 2 * ty - 1 + i;
                        index[l] = y >= 0 && y < h && x >= 0 && x < w ? (image * h + y) * w + x : -1;
                    } else {                          // rows of one image: the window around them
                        const int y = 2 * (gy + l / tw) - 1 + i;
                        index[l] = y >= 0 && y < h && x >= 0 && x < w ? (y - window_row(gy, h, s.rows)) * w + x : -1;
                    }
                }
                t.in[type][i * 4 + j] = gather_of(index);
            }
        }
    }
    // output gradient: lane l's 2x2 values at rows 2 (l / tw) + a, columns 2 (l % tw) + b of the 64 floats
    for (int a = 0; a < 2; a++) {
        for (int b = 0; b < 2; b++) {
            int index[16];
            for (int l = 0; l < 16; l++) index[l] = (2 * (l / tw) + a) * w + 2 * (l % tw) + b;
            t.grad[a * 2 + b] = gather_of(index);
        }
    }
    // output: float k of the 64 is pixel (y, x) = (k / w, k % w), from lane (y / 2) tw + x / 2 of
    // top0/top1 (even y) or bot0/bot1 (odd y), the left (even x) or right (odd x) one
    for (int q = 0; q < 4; q++) {
        int index[16];
        t.out_odd[q] = 0;
        for (int l = 0; l < 16; l++) {
            const int k = 16 * q + l, y = k / w, x = k % w;
            index[l] = (y / 2) * tw + x / 2 + 16 * (x & 1);
            if (y & 1) t.out_odd[q] |= (__mmask16)(1u << l);
        }
        t.out_idx[q] = _mm512_loadu_si512(index);
    }
    t.h = h; t.w = w;
    return &t;
}

// One call: `images` planes from x, tile rows [ty0, ty1) of each (whole images when a group holds
// whole images): the plane's shape, its tables, how many groups.
struct call { struct shape sh; const struct tables *tb; int count, h, w, ty0, ty1; };

AVX512 static struct call call_of(int h, int w, int images, int ty0, int ty1) {
    struct call c = {.tb = tables_for(h, w), .h = h, .w = w, .ty0 = ty0, .ty1 = ty1};
    shape_of(h, w, &c.sh);
    c.count = c.sh.images > 0 ? images / c.sh.images : images * ((ty1 - ty0) / c.sh.rows);
    return c;
}

// Group g of a call: its input window (first float), its tiles' first column in the transformed
// matrices, its first output float, its input tables.
struct group { size_t window, tile, pixel; int type; };

static struct group group_at(const struct call *c, int g) {
    struct group r;
    const struct shape *s = &c->sh;
    if (s->images > 0) {
        r.window = r.pixel = (size_t)g * 64; r.tile = (size_t)g * 16; r.type = FIRST;
        return r;
    }
    const int per = (c->ty1 - c->ty0) / s->rows, image = g / per, gy = c->ty0 + g % per * s->rows;
    const size_t plane0 = (size_t)image * c->h * c->w;
    r.window = plane0 + (size_t)window_row(gy, c->h, s->rows) * c->w;
    r.pixel = plane0 + (size_t)(2 * gy) * c->w;
    r.tile = (size_t)image * (c->ty1 - c->ty0) * s->tw + (size_t)(gy - c->ty0) * s->tw;
    r.type = gy == 0 ? FIRST : gy + s->rows >= s->th ? LAST : MIDDLE;
    return r;
}

AVX512 void reid_wino_input_groups(const float *x, int h, int w, int images, int ty0, int ty1, float *v, size_t plane) {
    const struct call c = call_of(h, w, images, ty0, ty1);
    // window floats: 64 for whole images, 2R + 2 rows with the halo otherwise
    const int floats = c.sh.images > 0 ? 64 : (2 * c.sh.rows + 2) * w, regs = (floats + 15) / 16;
    const __mmask16 tail = (__mmask16)(floats % 16 ? (1u << (floats % 16)) - 1 : 0xffff);
    for (int gi = 0; gi < c.count; gi++) {
        const struct group g = group_at(&c, gi);
        __m512 s[8];
        for (int k = 0; k < 8; k++) {
            s[k] = k + 1 < regs ? _mm512_loadu_ps(x + g.window + 16 * k)
                 : k + 1 == regs ? _mm512_maskz_loadu_ps(tail, x + g.window + 16 * k) : _mm512_setzero_ps();
        }
        const struct gather *gt = c.tb->in[g.type];
        // d B on each of the tile's 4 rows: (a, b, c, d) -> (a - c, b + c, c - b, b - d)
        __m512 r[4][4];
        for (int i = 0; i < 4; i++) {
            const __m512 a = take(&gt[i * 4], s), b = take(&gt[i * 4 + 1], s);
            const __m512 c = take(&gt[i * 4 + 2], s), d = take(&gt[i * 4 + 3], s);
            r[i][0] = _mm512_sub_ps(a, c); r[i][1] = _mm512_add_ps(b, c);
            r[i][2] = _mm512_sub_ps(c, b); r[i][3] = _mm512_sub_ps(b, d);
        }
        // B^T (.) across the rows, column k: matrices k, 4 + k, 8 + k, 12 + k
        float *q = v + g.tile;
        for (int k = 0; k < 4; k++) {
            _mm512_storeu_ps(q + (size_t)k * plane, _mm512_sub_ps(r[0][k], r[2][k]));
            _mm512_storeu_ps(q + (size_t)(4 + k) * plane, _mm512_add_ps(r[1][k], r[2][k]));
            _mm512_storeu_ps(q + (size_t)(8 + k) * plane, _mm512_sub_ps(r[2][k], r[1][k]));
            _mm512_storeu_ps(q + (size_t)(12 + k) * plane, _mm512_sub_ps(r[1][k], r[3][k]));
        }
    }
}

AVX512 void reid_wino_output_groups(const float *m, size_t plane, int h, int w, int images, int ty0, int ty1, float *y,
                                 int accumulate) {
    const struct call c = call_of(h, w, images, ty0, ty1);
    const struct tables *tb = c.tb;
    for (int gi = 0; gi < c.count; gi++) {
        const struct group g = group_at(&c, gi);
        const float *s = m + g.tile;
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
        float *d = y + g.pixel;
        for (int q = 0; q < 4; q++) {
            const __m512 a = _mm512_permutex2var_ps(top0, tb->out_idx[q], top1);
            const __m512 b = _mm512_permutex2var_ps(bot0, tb->out_idx[q], bot1);
            __m512 out = _mm512_mask_blend_ps(tb->out_odd[q], a, b);
            if (accumulate) out = _mm512_add_ps(out, _mm512_loadu_ps(d + 16 * q));
            _mm512_storeu_ps(d + 16 * q, out);
        }
    }
}

AVX512 static inline __m512 neg(__m512 v) {        // 0 - v, as the loops' SIMD minus (a zero stays +0)
    return _mm512_sub_ps(_mm512_setzero_ps(), v);
}

AVX512 void reid_wino_output_grad_groups(const float *dy, int h, int w, int images, int ty0, int ty1, float *z,
                                      size_t plane) {
    const struct call c = call_of(h, w, images, ty0, ty1);
    const struct tables *tb = c.tb;
    for (int gi = 0; gi < c.count; gi++) {
        const struct group g = group_at(&c, gi);
        const float *src = dy + g.pixel;
        const __m512 s[8] = {_mm512_loadu_ps(src), _mm512_loadu_ps(src + 16), _mm512_loadu_ps(src + 32),
                             _mm512_loadu_ps(src + 48)};
        const __m512 ye = take(&tb->grad[0], s), yo = take(&tb->grad[1], s);
        const __m512 ze = take(&tb->grad[2], s), zo = take(&tb->grad[3], s);
        // A y on each row: (y0, y0 + y1, y0 - y1, -y1); then (a, a + b, a - b, -b) across the rows
        const __m512 a[4] = {ye, _mm512_add_ps(ye, yo), _mm512_sub_ps(ye, yo), neg(yo)};
        const __m512 b[4] = {ze, _mm512_add_ps(ze, zo), _mm512_sub_ps(ze, zo), neg(zo)};
        float *q = z + g.tile;
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

int reid_wino_groups(int path, int h, int w, int images, int ty0, int ty1) {
    struct shape s;
    if (reid_kernels_usable_path(path) < REID_PATH_AVX512 || !shape_of(h, w, &s) || images < 1 || ty0 < 0 || ty1 > s.th || ty0 >= ty1)
        return 0;
    if (s.images > 0) return ty0 == 0 && ty1 == s.th ? images / s.images * s.images : 0;
    return ty0 % s.rows == 0 && (ty1 - ty0) % s.rows == 0 ? images : 0;
}

int reid_wino_weights(int path, const float *w, int cout, int cin, int transpose_flip, int r0, int r1, float *u, size_t plane) {
    if (reid_kernels_usable_path(path) < REID_PATH_AVX512) return 0;
    weights_avx512(w, cout, cin, transpose_flip, r0, r1, u, plane);
    return 1;
}

#else
int reid_wino_groups(int path, int h, int w, int images, int ty0, int ty1) {
    (void)path; (void)h; (void)w; (void)images; (void)ty0; (void)ty1;
    return 0;
}
void reid_wino_input_groups(const float *x, int h, int w, int images, int ty0, int ty1, float *v, size_t plane) {
    (void)x; (void)h; (void)w; (void)images; (void)ty0; (void)ty1; (void)v; (void)plane;
}
void reid_wino_output_groups(const float *m, size_t plane, int h, int w, int images, int ty0, int ty1, float *y,
                             int accumulate) {
    (void)m; (void)plane; (void)h; (void)w; (void)images; (void)ty0; (void)ty1; (void)y; (void)accumulate;
}
void reid_wino_output_grad_groups(const float *dy, int h, int w, int images, int ty0, int ty1, float *z, size_t plane) {
    (void)dy; (void)h; (void)w; (void)images; (void)ty0; (void)ty1; (void)z; (void)plane;
}
int reid_wino_weights(int path, const float *w, int cout, int cin, int transpose_flip, int r0, int r1, float *u, size_t plane) {
    (void)path; (void)w; (void)cout; (void)cin; (void)transpose_flip; (void)r0; (void)r1; (void)u; (void)plane;
    return 0;
}
#endif
