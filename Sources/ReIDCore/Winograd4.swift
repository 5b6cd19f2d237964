// Winograd F(4x4, 3x3) for 3x3 stride-1 pad-1 convolutions on (C, N, H, W) activations, in all
// three passes: the F(2x2) scheme of Winograd.swift with 6x6 input tiles and 4x4 output tiles.
//
//     Y = A^T [ (G g G^T) . (B^T d B) ] A          (36 products for 16 outputs: 4x fewer
//                                                   multiplications than direct, 1.78x fewer than F(2x2))
//
// Over the batch: 36 GEMMs M[e] (Cout x T) = U[e] (Cout x Cin) . V[e] (Cin x T), T the batch's 4x4
// tiles. Backward is the exact derivative of the same formula (weights: dU[e] = Z[e] V[e]^T with
// Z = A dY A^T, dg = G^T dU G; input: the forward of dY with the flipped, transposed kernel).
//
// The matrices come from the interpolation points 0, -1, 1, 1/2, -2 and infinity (Barabasz et al.
// 2020): `Cluster/dev/make_winograd4.py` derives them exactly and writes the transforms as C
// (CKernels' wino4.c, one copy per vector path). Their error against float64 on every 3x3 shape of
// the benchmark networks is in `reid-dist bench convs` and bounded in WinogradTests (1e-5 relative).
// Whole-batch only: no block-by-block fusion (F(2x2)'s fused passes serve the thin layers).

import CKernels

/// The tile grid of F(4x4): th x tw tiles of 4x4 outputs per (H, W) image.
struct Winograd4Tiles {
    let n: Int, h: Int, w: Int
    var th: Int { (h + 3) / 4 }
    var tw: Int { (w + 3) / 4 }
    var count: Int { n * th * tw }
}

enum Winograd4 {
    /// Elementwise products per tile: the number of GEMMs a pass runs.
    static let products = 36

    /// U[e][r][c] for the layer (rows Cout) or, with `transposeFlip`, its input-gradient kernel (rows Cin).
    static func transformWeights(
        _ w: UnsafePointer<Float>, cout: Int, cin: Int, transposeFlip: Bool,
        _ u: UnsafeMutablePointer<Float>, _ ws: Workspace
    ) {
        let rows = transposeFlip ? cin : cout
        let plane = Winograd.planeStride(cout * cin), path = ws.options.path
        parallelChunks(rows, threads: ws.threads, minChunk: 8) { r in
            reid_wino4_weights(
                path, w, Int32(cout), Int32(cin), transposeFlip ? 1 : 0, Int32(r.lowerBound), Int32(r.upperBound), u,
                plane)
        }
    }

    /// V[e][c][t] for each channel c of x (C, N, H, W): one call per channel covers its N images.
    static func transformInput(
        _ x: UnsafePointer<Float>, c: Int, _ g: Winograd4Tiles, _ v: UnsafeMutablePointer<Float>, _ ws: Workspace
    ) {
        let plane = Winograd.planeStride(c * g.count), path = ws.options.path
        parallelFor(c, threads: ws.threads) { ch in
            reid_wino4_input(
                path, x + ch * g.n * g.h * g.w, Int32(g.h), Int32(g.w), Int32(g.n), v + ch * g.count, plane)
        }
    }

    /// y (C, N, H, W) = A^T M A per tile; adds into y when `accumulate`.
    static func transformOutput(
        _ m: UnsafePointer<Float>, c: Int, _ g: Winograd4Tiles,
        _ y: UnsafeMutablePointer<Float>, accumulate: Bool, _ ws: Workspace
    ) {
        let plane = Winograd.planeStride(c * g.count), path = ws.options.path
        parallelFor(c, threads: ws.threads) { ch in
            reid_wino4_output(
                path, m + ch * g.count, plane, Int32(g.h), Int32(g.w), Int32(g.n), y + ch * g.n * g.h * g.w,
                accumulate ? 1 : 0)
        }
    }

    /// Z[e][c][t] = (A dY A^T)[e] per 4x4 tile of dY (C, N, H, W).
    static func transformOutputGrad(
        _ dy: UnsafePointer<Float>, c: Int, _ g: Winograd4Tiles, _ z: UnsafeMutablePointer<Float>, _ ws: Workspace
    ) {
        let plane = Winograd.planeStride(c * g.count), path = ws.options.path
        parallelFor(c, threads: ws.threads) { ch in
            reid_wino4_output_grad(
                path, dy + ch * g.n * g.h * g.w, Int32(g.h), Int32(g.w), Int32(g.n), z + ch * g.count, plane)
        }
    }

    /// dW[o][i] += G^T dU[.][o][i] G.
    static func accumulateWeightGrad(
        _ du: UnsafePointer<Float>, cout: Int, cin: Int, _ dw: UnsafeMutablePointer<Float>, _ ws: Workspace
    ) {
        let plane = Winograd.planeStride(cout * cin), path = ws.options.path
        parallelChunks(cout, threads: ws.threads, minChunk: 4) { o in
            reid_wino4_weight_grad(
                path, du, plane, Int32(cout), Int32(cin), Int32(o.lowerBound), Int32(o.upperBound), dw)
        }
    }

    /// out (cout, N, H, W) = conv3x3(x (cin, N, H, W)) given U; v and m are scratch (or v already holds x's transform).
    static func convolve(
        _ x: UnsafePointer<Float>?, cin: Int, cout: Int, _ g: Winograd4Tiles, u: UnsafePointer<Float>,
        v: UnsafeMutablePointer<Float>, m: UnsafeMutablePointer<Float>,
        out: UnsafeMutablePointer<Float>, accumulate: Bool, _ ws: Workspace
    ) {
        let t = g.count, su = Winograd.planeStride(cout * cin), sv = Winograd.planeStride(cin * t)
        let sm = Winograd.planeStride(cout * t), chunk = ws.options.winogradChunk
        if let x { ws.measure(.im2col) { transformInput(x, c: cin, g, v, ws) } }
        ws.measure(.gemm) {
            Winograd.products(products, ws) { e in
                Winograd.gemmChunked(
                    m: cout, n: t, k: cin, a: u + e * su, lda: cin, b: v + e * sv, ldb: t, c: m + e * sm, ldc: t,
                    chunk: chunk)
            }
        }
        ws.measure(.im2col) { transformOutput(m, c: cout, g, out, accumulate: accumulate, ws) }
    }
}
