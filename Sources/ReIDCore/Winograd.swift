// Winograd F(2x2, 3x3) for 3x3 stride-1 pad-1 convolutions on (C, N, H, W)
// activations, in all three passes (Lavin & Gray, "Fast Algorithms for
// Convolutional Neural Networks", 2016).
//
// Each 2x2 output tile comes from a 4x4 input tile d:
//     Y = A^T [ (G g G^T) . (B^T d B) ] A           (. elementwise, 16 products)
// instead of 36 multiplications per tile and channel pair: 2.25x fewer. Over
// the batch, the 16 elementwise products become 16 independent GEMMs,
//     M[e] (Cout x T) = U[e] (Cout x Cin) . V[e] (Cin x T),   e = 0..<16,
// T = the batch's tiles; U = the transformed weights, V = the transformed input.
//
// Backward, as the exact derivative of the same formula:
//   weights: dU[e] = Z[e] (Cout x T) . V[e]^T, Z = A dY A^T per tile; dg = G^T dU G
//   input:   the same forward on dY with the flipped, transposed kernel
// (V is kept from forward when the workspace's cache budget allows.)
//
// Each pass runs either whole-batch (transform everything, 16 multi-threaded GEMMs, transform
// back) or, on thin layers, fused block by block (`Winograd.Fusion`): a worker transforms a block
// of tiles, multiplies it with a single-threaded GEMM and transforms it back while it is in cache.
// The GEMMs' dot products over channels are summed in chunks of at most 128 (`gemmChunked`).
// Whole-batch, the 16 GEMMs of a pass are shared out among the threads, each running whole
// GEMMs on a single-threaded BLAS (`products`): no synchronisation inside small GEMMs.
//
//   B^T = | 1  0 -1  0 |    G = | 1    0    0  |    A^T = | 1  1  1  0 |
//         | 0  1  1  0 |        | 1/2  1/2  1/2|          | 0  1 -1 -1 |
//         | 0 -1  1  0 |        | 1/2 -1/2  1/2|
//         | 0  1  0 -1 |        | 0    0    1  |

import CKernels

/// How convolutions are computed: `gemm` (im2col + one GEMM) everywhere, or
/// Winograd F(2x2,3x3) for 3x3 stride-1 layers (`auto` picks per layer shape).
public enum ConvAlgorithm: String, CaseIterable, Sendable {
    /// Per layer shape (`Conv2d.winogradTile`).
    case auto
    /// im2col + one GEMM.
    case gemm
    /// F(2x2,3x3): 2.25x fewer multiplications, whole-batch or block by block in cache.
    case winograd
    /// F(4x4,3x3): 4x fewer multiplications, whole-batch (Winograd4.swift).
    case winograd4
}

/// The tile grid of an (N, H, W) plane set: th x tw tiles of 2x2 outputs per image.
struct WinogradTiles {
    let n: Int, h: Int, w: Int
    var th: Int { (h + 1) / 2 }
    var tw: Int { (w + 1) / 2 }
    var count: Int { n * th * tw }
}

public enum Winograd {
    /// Distance between the 16 matrices of a transformed tensor holding `count` values each: padded
    /// past a multiple of 64 bytes, because power-of-two distances (64 x 16384 floats, say) put the
    /// 16 write streams of a transform in the same cache sets and made it several times slower.
    static func planeStride(_ count: Int) -> Int { (count + 15) / 16 * 16 + 16 }

    /// U[e][o][i] = (G g G^T)[e] for g = w[o][i] (3x3). `transposeFlip` transforms
    /// instead the kernel of the input-gradient convolution: w'[i][o] = flip(w[o][i]).
    static func transformWeights(
        _ w: UnsafePointer<Float>, cout: Int, cin: Int, transposeFlip: Bool,
        _ u: UnsafeMutablePointer<Float>, _ ws: Workspace
    ) {
        let rows = transposeFlip ? cin : cout, cols = transposeFlip ? cout : cin
        let plane = planeStride(rows * cols), path = ws.options.path
        parallelFor(rows, threads: ws.threads, minChunk: 8) { r in
            // AVX-512: 16 kernels a vector in C, the same double arithmetic (CKernels' wino_small.c)
            if reid_wino_weights(
                path, w, Int32(cout), Int32(cin), transposeFlip ? 1 : 0, Int32(r), Int32(r + 1), u, plane) != 0
            {
                return
            }
            let dst = u + r * cols
            for c in 0..<cols {
                let k = transposeFlip ? w + (c * cin + r) * 9 : w + (r * cin + c) * 9
                // in double, rounded once per value
                var g = (
                    Double(k[0]), Double(k[1]), Double(k[2]), Double(k[3]), Double(k[4]),
                    Double(k[5]), Double(k[6]), Double(k[7]), Double(k[8])
                )
                if transposeFlip { g = (g.8, g.7, g.6, g.5, g.4, g.3, g.2, g.1, g.0) }
                // G g: rows t0..t3 of 3 values
                let t10 = 0.5 * (g.0 + g.3 + g.6), t11 = 0.5 * (g.1 + g.4 + g.7), t12 = 0.5 * (g.2 + g.5 + g.8)
                let t20 = 0.5 * (g.0 - g.3 + g.6), t21 = 0.5 * (g.1 - g.4 + g.7), t22 = 0.5 * (g.2 - g.5 + g.8)
                // (G g) G^T: each row (a, b, c) -> (a, (a+b+c)/2, (a-b+c)/2, c)
                let d = dst + c
                func put(_ e: Int, _ a: Double, _ b: Double, _ c: Double) {
                    d[e * plane] = Float(a)
                    d[(e + 1) * plane] = Float(0.5 * (a + b + c))
                    d[(e + 2) * plane] = Float(0.5 * (a - b + c))
                    d[(e + 3) * plane] = Float(c)
                }
                put(0, g.0, g.1, g.2)
                put(4, t10, t11, t12)
                put(8, t20, t21, t22)
                put(12, g.6, g.7, g.8)
            }
        }
    }

    /// V[e][c][t] = (B^T d B)[e] for each channel c and tile t of x (C, N, H, W), pad 1.
    static func transformInput(
        _ x: UnsafePointer<Float>, c: Int, _ g: WinogradTiles, _ v: UnsafeMutablePointer<Float>, _ ws: Workspace
    ) {
        let plane = planeStride(c * g.count), path = ws.options.path
        forEachImageGroup(c: c, g, ws) { plane0, tile0, images, buf in
            inputTiles(x + plane0, g, rows: 0..<g.th, images: images, v + tile0, plane: plane, buf, path: path)
        }
    }

    /// y (C, N, H, W) = A^T M A per tile, from M[e][c][t]; adds into y when `accumulate`.
    static func transformOutput(
        _ m: UnsafePointer<Float>, c: Int, _ g: WinogradTiles,
        _ y: UnsafeMutablePointer<Float>, accumulate: Bool, _ ws: Workspace
    ) {
        let plane = planeStride(c * g.count), path = ws.options.path
        forEachImageGroup(c: c, g, ws) { plane0, tile0, images, buf in
            outputTiles(
                m + tile0, plane: plane, g, rows: 0..<g.th, images: images, y + plane0, accumulate: accumulate, buf,
                path: path)
        }
    }

    /// Z[e][c][t] = (A dY A^T)[e] per 2x2 tile of dY (C, N, H, W) (zero outside the image).
    static func transformOutputGrad(
        _ dy: UnsafePointer<Float>, c: Int, _ g: WinogradTiles, _ z: UnsafeMutablePointer<Float>, _ ws: Workspace
    ) {
        let plane = planeStride(c * g.count), path = ws.options.path
        forEachImageGroup(c: c, g, ws) { plane0, tile0, images, buf in
            outputGradTiles(dy + plane0, g, rows: 0..<g.th, images: images, z + tile0, plane: plane, buf, path: path)
        }
    }

    /// The whole-batch transforms' loop: in parallel over channels, each channel's images in groups
    /// of `imagesPerCall`; body(offset of the group's first (C, N, H, W) plane, offset of its first
    /// tile in a transformed tensor, images in the group, the worker's tile scratch).
    private static func forEachImageGroup(
        c: Int, _ g: WinogradTiles, _ ws: Workspace, _ body: (Int, Int, Int, UnsafeMutablePointer<Float>) -> Void
    ) {
        let per = imagesPerCall(g)
        parallelChunks(c, threads: ws.threads) { channels in
            let buf = UnsafeMutablePointer<Float>.allocate(capacity: tileScratch(g, images: per))
            defer { buf.deallocate() }
            for ch in channels {
                for img in Swift.stride(from: 0, to: g.n, by: per) {
                    body((ch * g.n + img) * g.h * g.w, ch * g.count + img * g.th * g.tw, Swift.min(per, g.n - img), buf)
                }
            }
        }
    }

    /// What runs the F(2x2) transforms under `options`, for `bench`'s header: CKernels' AVX-512
    /// versions (the weights' transform, and the tiles' in groups of 16) where the path allows.
    public static func transformPath(_ options: EngineOptions) -> String {
        reid_wino_groups(options.path, 8, 4, 2, 0, 4) > 0
            ? "AVX-512 (16 tiles a vector where planes have even sides and tw divides 16, else the Swift loops)"
            : "Swift loops"
    }

    /// dW[o][i] += G^T dU[.][o][i] G (3x3 from 4x4).
    static func accumulateWeightGrad(
        _ du: UnsafePointer<Float>, cout: Int, cin: Int, _ dw: UnsafeMutablePointer<Float>, _ ws: Workspace
    ) {
        let plane = planeStride(cout * cin)
        parallelFor(cout, threads: ws.threads) { o in
            for i in 0..<cin {
                let s = du + o * cin + i
                // G^T u = [u0 + (u1 + u2)/2, (u1 - u2)/2, (u1 + u2)/2 + u3] on rows (4 -> 3), then columns
                var t = (
                    Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0),
                    Float(0), Float(0)
                )
                func col(_ j: Int) -> (Float, Float, Float) {
                    let u0 = s[j * plane], u1 = s[(4 + j) * plane], u2 = s[(8 + j) * plane], u3 = s[(12 + j) * plane]
                    return (u0 + 0.5 * (u1 + u2), 0.5 * (u1 - u2), 0.5 * (u1 + u2) + u3)
                }
                let c0 = col(0), c1 = col(1), c2 = col(2), c3 = col(3)
                t = (c0.0, c1.0, c2.0, c3.0, c0.1, c1.1, c2.1, c3.1, c0.2, c1.2, c2.2, c3.2)
                let d = dw + (o * cin + i) * 9
                func row(_ r: Int, _ u0: Float, _ u1: Float, _ u2: Float, _ u3: Float) {
                    d[r * 3] += u0 + 0.5 * (u1 + u2)
                    d[r * 3 + 1] += 0.5 * (u1 - u2)
                    d[r * 3 + 2] += 0.5 * (u1 + u2) + u3
                }
                row(0, t.0, t.1, t.2, t.3)
                row(1, t.4, t.5, t.6, t.7)
                row(2, t.8, t.9, t.10, t.11)
            }
        }
    }

    /// C (m x n) = A (m x k, row stride lda) . B (k x n), summed over K in chunks of at most
    /// `chunk` (`EngineOptions.winogradChunk`; each chunk's dot products start from zero and are then added): the float32 error
    /// of a long dot product grows with its length, and the Winograd products are larger than the
    /// convolution's own terms. Chunks of 128 keep the forward and input-gradient errors within
    /// 2x PyTorch's on every ResNet shape (one chunk of 512 was 2.4x; `reid-dist bench convs`).
    static func gemmChunked(
        m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int, chunk: Int
    ) {
        let chunks = (k + chunk - 1) / chunk, kc = (k + chunks - 1) / chunks
        var k0 = 0
        while k0 < k {
            let kn = Swift.min(kc, k - k0)
            sgemm(
                m: m, n: n, k: kn, a: a + k0, lda: lda, b: b + k0 * ldb, ldb: ldb, beta: k0 == 0 ? 0 : 1, c: c, ldc: ldc
            )
            k0 += kn
        }
    }
    /// Runs body(e) for the products e = 0..<count (16 for F(2x2), 36 for F(4x4)), shared among the workers, each with a
    /// single-threaded BLAS, instead of splitting every GEMM among the threads (`bench convs`,
    /// 2 threads, three passes: 256->256 at 32x8x4, 14.7-23.6 -> 12.2-14.6 ms; 512->512 at
    /// 32x16x8, 175-290 -> 165-176 ms).
    static func products(_ count: Int, _ ws: Workspace, _ body: (Int) -> Void) {
        guard ws.threads > 1 else {
            for e in 0..<count { body(e) }
            return
        }
        let workers = Swift.min(ws.threads, count)
        onWorkers(workers) { wk in
            for e in stride(from: wk, to: count, by: workers) { body(e) }
        }
    }
    /// Which passes run block by block (`convolveFused`, `weightGradFused`) instead of as whole-batch
    /// transforms and GEMMs: layers whose larger channel count is at most the pass's limit. Block by
    /// block, the transformed data stays in cache but each GEMM is small and single-threaded, which
    /// pays on thin layers only (`reid-dist bench convs`: 64->64 at 64x32, 16 images, 45 -> 35 ms
    /// for the three passes; no gain from 256 channels up).
    public struct Fusion: Sendable, Equatable {
        public var forward: Int, inputGrad: Int, weightGrad: Int
        public static let `default` = Fusion(forward: 64, inputGrad: 128, weightGrad: 64)
        public static let none = Fusion(forward: 0, inputGrad: 0, weightGrad: 0)
        public static let all = Fusion(forward: .max, inputGrad: .max, weightGrad: .max)
    }

    /// The passes of a cin -> cout layer that run fused ("fwd", "dX", "dW"), for the benchmarks.
    public static func fusedPasses(cin: Int, cout: Int, _ fusion: Fusion) -> [String] {
        let c = Swift.max(cin, cout)
        return [(fusion.forward, "fwd"), (fusion.inputGrad, "dX"), (fusion.weightGrad, "dW")].filter { c <= $0.0 }.map(
            \.1)
    }
    /// Bytes of transformed data per block (input and products together), and the fewest tiles.
    static let fusedTarget = 1 << 20

    /// out = conv3x3(x) block by block: each worker takes blocks of tile rows of one image,
    /// transforms that block's input (all Cin channels), runs the 16 GEMMs on it with a
    /// single-threaded BLAS, and writes the block's outputs, so the transformed data stays in
    /// its core's cache instead of making three trips through memory.
    /// With `keep`, the transformed input is written there whole (laid out as `transformInput`
    /// writes it, for the weight gradient) and the GEMMs read it from there.
    static func convolveFused(
        _ x: UnsafePointer<Float>, cin: Int, cout: Int, _ g: WinogradTiles, u: UnsafePointer<Float>,
        keep: UnsafeMutablePointer<Float>? = nil,
        out: UnsafeMutablePointer<Float>, accumulate: Bool, _ ws: Workspace
    ) {
        let su = planeStride(cout * cin)
        let p = FusedBlocks(g, channels: cin + cout, ws.options)
        let path = ws.options.path, chunk = ws.options.winogradChunk
        let sm = planeStride(cout * p.tiles), tb = p.tiles
        let sv = keep == nil ? planeStride(cin * p.tiles) : 0 // a local V only when not kept whole
        let buffers = workerScratch(p.workers, 16 * (sv + sm) + tileScratch(g), ws)
        onWorkers(p.workers) { wk in
            let vb = buffers[wk], mb = vb + 16 * sv, buf = mb + 16 * sm
            for b in stride(from: wk, to: p.count, by: p.workers) {
                let (img, ty0, ty1) = p.block(b)
                let n = (ty1 - ty0) * g.tw
                // where this block's transformed input goes: the local buffer, or its place in `keep`
                let (v, ldv, pv) =
                    keep.map { ($0 + (img * g.th + ty0) * g.tw, g.count, planeStride(cin * g.count)) } ?? (vb, tb, sv)
                for ch in 0..<cin {
                    inputTiles(
                        x + (ch * g.n + img) * g.h * g.w, g, rows: ty0..<ty1, v + ch * ldv, plane: pv, buf, path: path)
                }
                for e in 0..<16 {
                    gemmChunked(
                        m: cout, n: n, k: cin, a: u + e * su, lda: cin, b: v + e * pv, ldb: ldv, c: mb + e * sm,
                        ldc: tb,
                        chunk: chunk)
                }
                for ch in 0..<cout {
                    outputTiles(
                        mb + ch * tb, plane: sm, g, rows: ty0..<ty1, out + (ch * g.n + img) * g.h * g.w,
                        accumulate: accumulate, buf, path: path)
                }
            }
        }
    }

    /// dU[e] (Cout x Cin) = sum over tiles of Z[e] V[e]^T, block by block: each worker transforms
    /// its blocks of dY into cache and adds Z_b V_b^T into its own dU; the workers' sums are
    /// then added up. V_b comes either from `v`, the whole transformed input (as `transformInput`
    /// lays it out), or, given `x` instead, is transformed again from the layer's input into cache:
    /// x is 4x smaller than V, so redoing its transform costs less than writing V in forward and
    /// reading it back here (`recomputeAbove`).
    static func weightGradFused(
        _ dy: UnsafePointer<Float>, x: UnsafePointer<Float>?, v: UnsafePointer<Float>?,
        cin: Int, cout: Int, _ g: WinogradTiles, du: UnsafeMutablePointer<Float>, _ ws: Workspace
    ) {
        precondition((x == nil) != (v == nil), "weightGradFused: give x or v")
        let su = planeStride(cout * cin), sv = planeStride(cin * g.count)
        let p = FusedBlocks(g, channels: cout + cin, ws.options), path = ws.options.path
        let sz = planeStride(cout * p.tiles), tb = p.tiles
        let svb = x == nil ? 0 : planeStride(cin * tb) // a block's V, when redone
        let scratch = tileScratch(g)
        let buffers = workerScratch(p.workers, 16 * (sz + su + svb) + scratch, ws)
        onWorkers(p.workers) { wk in
            let zb = buffers[wk], own = zb + 16 * sz, vb = own + 16 * su, buf = vb + 16 * svb
            let acc = wk == 0 ? du : own
            for b in stride(from: wk, to: p.count, by: p.workers) {
                let (img, ty0, ty1) = p.block(b)
                let n = (ty1 - ty0) * g.tw, at = (img * g.th + ty0) * g.tw
                for ch in 0..<cout {
                    outputGradTiles(
                        dy + (ch * g.n + img) * g.h * g.w, g, rows: ty0..<ty1, zb + ch * tb, plane: sz, buf, path: path)
                }
                if let x {
                    for ch in 0..<cin {
                        inputTiles(
                            x + (ch * g.n + img) * g.h * g.w, g, rows: ty0..<ty1, vb + ch * tb, plane: svb, buf,
                            path: path)
                    }
                }
                for e in 0..<16 {
                    let (bp, ldb) = x == nil ? (v! + e * sv + at, g.count) : (UnsafePointer(vb + e * svb), tb)
                    sgemm(
                        transB: true, m: cout, n: cin, k: n, a: zb + e * sz, lda: tb, b: bp, ldb: ldb,
                        beta: b == wk ? 0 : 1, c: acc + e * su, ldc: cin)
                }
            }
        }
        for wk in 1..<p.workers {
            let part = buffers[wk] + 16 * sz
            parallelFor(16, threads: ws.threads) { e in
                let d = du + e * su, s = part + e * su
                for i in 0..<(cout * cin) { d[i] += s[i] }
            }
        }
    }

    /// out (cout, N, H, W) = conv3x3(x (cin, N, H, W)) given U; v and m are scratch (or v already holds x's transform).
    static func convolve(
        _ x: UnsafePointer<Float>?, cin: Int, cout: Int, _ g: WinogradTiles, u: UnsafePointer<Float>,
        v: UnsafeMutablePointer<Float>, m: UnsafeMutablePointer<Float>,
        out: UnsafeMutablePointer<Float>, accumulate: Bool, _ ws: Workspace
    ) {
        let t = g.count, su = planeStride(cout * cin), sv = planeStride(cin * t), sm = planeStride(cout * t)
        let chunk = ws.options.winogradChunk
        if let x { ws.measure(.im2col) { transformInput(x, c: cin, g, v, ws) } }
        ws.measure(.gemm) {
            products(16, ws) { e in
                gemmChunked(
                    m: cout, n: t, k: cin, a: u + e * su, lda: cin, b: v + e * sv, ldb: t, c: m + e * sm, ldc: t,
                    chunk: chunk)
            }
        }
        ws.measure(.im2col) { transformOutput(m, c: cout, g, out, accumulate: accumulate, ws) }
    }
}

/// How the fused Winograd passes cut the batch: blocks of whole tile rows of one image, about
/// `Winograd.fusedTarget` bytes of transformed data each (at least `fusedMinTiles` tiles), at
/// least two per worker.
struct FusedBlocks {
    let g: WinogradTiles, rowsPerBlock: Int, perImage: Int, count: Int, workers: Int
    /// Tiles in a full block (the leading dimension of the per-block matrices).
    var tiles: Int { rowsPerBlock * g.tw }

    init(_ g: WinogradTiles, channels: Int, _ options: EngineOptions) {
        self.g = g
        let target = Swift.max(options.fusedMinTiles, Winograd.fusedTarget / (channels * 64))
        var rows = Swift.max(1, Swift.min(g.th, target / g.tw))
        while rows > 1 && g.n * ((g.th + rows - 1) / rows) < 2 * options.threads { rows /= 2 }
        rowsPerBlock = rows
        perImage = (g.th + rows - 1) / rows
        count = g.n * perImage
        workers = Swift.max(1, Swift.min(options.threads, count))
    }

    /// Block b: (image, first tile row, end tile row).
    func block(_ b: Int) -> (Int, Int, Int) {
        let img = b / perImage, ty0 = (b % perImage) * rowsPerBlock
        return (img, ty0, Swift.min(g.th, ty0 + rowsPerBlock))
    }
}
