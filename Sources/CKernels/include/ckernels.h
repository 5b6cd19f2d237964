// CKernels: compute kernels the portable Swift build cannot vectorise well, compiled for several
// x86-64 vector extensions in one binary and chosen at run time (AVX-512, AVX2+FMA, portable C).
//
// Direct 7x7 convolution for layers with few input channels (ResNet's stem on RGB): each output
// pixel is a sum of Cin*49 taps, computed with the output channels' weights broadcast against
// contiguous input vectors, so the whole layer runs at the FMA units' rate. The im2col + GEMM it
// replaces multiplies a 147-deep column matrix with M = Cout (32 or 64) rows: a poor GEMM shape.
//
// Winograd F(2x2,3x3) transforms (AVX-512 only; the Swift loops run elsewhere): 16 tiles a
// register, each value a two-table permute of the tiles' pixels (wino_small.c).
#ifndef REID_CKERNELS_H
#define REID_CKERNELS_H
#include <stddef.h>

/// Vector paths, best last.
enum { REID_PATH_PORTABLE = 0, REID_PATH_AVX2 = 1, REID_PATH_AVX512 = 2 };

/// The best path this processor runs.
int reid_kernels_best_path(void);
/// The path a kernel takes when asked for `path`: that one, or the best this processor runs when it is
/// lower. Every kernel below takes the path asked for as its first argument (the engine's options
/// choose it; tests run each path this processor has) and clamps it so.
int reid_kernels_usable_path(int path);
/// "AVX-512", "AVX2+FMA" or "portable C (4-wide vectors)".
const char *reid_kernels_path_name(int path);

/// Floats of scratch one worker needs for a block of `rows` output rows.
size_t reid_conv7_scratch_floats(int cin, int rows, int wo, int stride);

/// Forward of output rows [oy0, oy1) of image `img`, for a 7x7 convolution with stride 1 or 2 and
/// padding `pad` (any).
///   x:  (Cin, N, H, W) input
///   wt: (Cin*49, Cout) weights, tap-major: wt[((ci*7 + ki)*7 + kj)*cout + co] = W[co, ci, ki, kj]
///   y:  (Cout, N, Ho, Wo) output; only the block's rows are written (=)
void reid_conv7_forward(int path, float *y, const float *x, const float *wt,
                        int cin, int cout, int n, int h, int w, int ho, int wo,
                        int stride, int pad, int img, int oy0, int oy1, float *scratch);

/// Weight gradient of the same block: dwt[((ci*7 + ki)*7 + kj)*cout + co] += sum over the block's
/// output pixels of dy[co, pixel] * x[ci, tap's input pixel] (tap-major, like wt).
void reid_conv7_weight_grad(int path, float *dwt, const float *dy, const float *x,
                            int cin, int cout, int n, int h, int w, int ho, int wo,
                            int stride, int pad, int img, int oy0, int oy1, float *scratch);

// Winograd F(2x2,3x3) tile transforms in groups of 16 tiles (wino_small.c; AVX-512 only), for
// planes h x w with both even and w / 2 dividing 16: 16 consecutive tiles are then whole tile rows,
// of several images (planes with up to 16 tiles) or of one. Calls take `images` consecutive planes of
// one channel (h w floats apart) and their tile rows [ty0, ty1) (all of them when a group holds
// whole images); tile (image, ty, tx) is column (image (ty1 - ty0) + ty - ty0) tw + tx of the 16
// matrices, `plane` floats apart. The results are bit for bit those of WinogradTiles.swift's loops.

/// How many of `images` planes a call can take (a multiple of the images a group holds), or 0
/// when the kernels do not apply (the plane's shape, rows not whole groups, or no AVX-512). The three
/// calls below are AVX-512 code: call them only for the images this gives.
int reid_wino_groups(int path, int h, int w, int images, int ty0, int ty1);

/// V[e][tile] = (B^T d B)[e], d the tile's 4x4 input window (pad 1), from x.
void reid_wino_input_groups(const float *x, int h, int w, int images, int ty0, int ty1, float *v, size_t plane);

/// y = A^T M A per tile, from m (adds into y when `accumulate`).
void reid_wino_output_groups(const float *m, size_t plane, int h, int w, int images, int ty0, int ty1, float *y,
                             int accumulate);

/// Z[e][tile] = (A dy A^T)[e] of each 2x2 tile of dy.
void reid_wino_output_grad_groups(const float *dy, int h, int w, int images, int ty0, int ty1, float *z, size_t plane);

/// U[e][r][c] = (G g G^T)[e] for rows r0 ..< r1 of the transformed kernels (rows: Cout, columns: Cin;
/// with `transpose_flip`, rows Cin and columns Cout of the input gradient's kernel, g = flip(w[c][r]));
/// w: (Cout, Cin, 3, 3); matrices `plane` floats apart. Returns 0, computing nothing, without AVX-512.
int reid_wino_weights(int path, const float *w, int cout, int cin, int transpose_flip, int r0, int r1, float *u, size_t plane);

// Winograd F(4x4,3x3) (wino4.c): 6x6 input tiles, 36 products, 4x4 outputs; every vector path.
// Tiles of `images` consecutive planes (h x w each) of one channel: th = (h + 3) / 4 rows of
// tw = (w + 3) / 4 per image; tile (image, ty, tx) is column (image th + ty) tw + tx of the 36
// matrices, `plane` floats apart. Outputs past the plane's edge are cropped, inputs padded with 0.

/// V[e][tile] = (B^T d B)[e], d the tile's 6x6 input window (pad 1), from x.
void reid_wino4_input(int path, const float *x, int h, int w, int images, float *v, size_t plane);
/// y = A^T M A per tile (4x4, cropped at the plane's edge), from m (adds into y when `accumulate`).
void reid_wino4_output(int path, const float *m, size_t plane, int h, int w, int images, float *y, int accumulate);
/// Z[e][tile] = (A dy A^T)[e] of each 4x4 tile of dy (0 past the plane's edge).
void reid_wino4_output_grad(int path, const float *dy, int h, int w, int images, float *z, size_t plane);
/// U[e][r][c] = (G g G^T)[e] for rows r0 ..< r1, laid out as reid_wino_weights lays out F(2x2)'s.
void reid_wino4_weights(int path, const float *w, int cout, int cin, int transpose_flip, int r0, int r1, float *u, size_t plane);
/// dw[o][i] += G^T dU[.][o][i] G for output channels o0 ..< o1; dw: (Cout, Cin, 3, 3).
void reid_wino4_weight_grad(int path, const float *du, size_t plane, int cout, int cin, int o0, int o1, float *dw);
#endif
