// The first layer (a few input channels, e.g. ResNet's 7x7 stride-2 stem on RGB) computed block
// by block: each worker builds the column matrix of a block of output rows of one image in its
// own buffer (about 1-2 MB: in its core's cache) and multiplies it with a single-threaded GEMM.
// The whole-batch column matrix (147 x N*Ho*Wo: 38 MB for ResNet-18 w32's batch, 77 MB for
// ResNet-50's) is never written to memory, and the GEMMs, whose M = Cout is small, run on
// cache-resident data (OpenBLAS on one core: 67 GFLOP/s per 2,048-column block against 36 for
// the whole batch in one call). Backward rebuilds each block's columns for the weight gradient.
//
// 7x7 layers (the stem) skip the column matrix altogether: the same blocks run through the direct
// convolution of CKernels (AVX-512, AVX2+FMA or portable C, chosen at run time), whose tiles keep
// their sums in registers for all 147 taps.
import CKernels
import Dispatch

extension Conv2d {
    /// Whether this layer runs blocked: few input channels (`EngineOptions.blockedMaxInputChannels`)
    /// and not pointwise.
    func runsBlocked(_ options: EngineOptions) -> Bool { cin <= options.blockedMaxInputChannels && !isPointwise }

    /// Whether this blocked layer runs as the direct 7x7 convolution (else blocked im2col + GEMM).
    func runsDirect(_ options: EngineOptions) -> Bool {
        runsBlocked(options) && kernel == 7 && (stride == 1 || stride == 2) && options.directStemRuns
    }

    /// Blocks of whole output rows of one image: (image, first row, end row), at least two per worker.
    func rowBlocks(n: Int, ho: Int, wo: Int, _ options: EngineOptions) -> [(Int, Int, Int)] {
        var rows = Swift.max(1, Swift.min(ho, options.blockColumns / Swift.max(1, wo)))
        while rows > 1 && n * ((ho + rows - 1) / rows) < 2 * options.threads { rows /= 2 }
        return (0..<n).flatMap { img in
            Swift.stride(from: 0, to: ho, by: rows).map { (img, $0, Swift.min(ho, $0 + rows)) }
        }
    }

    /// One block as `forEachBlock` hands it over: its column matrix, built; its worker's `extra`
    /// floats; whether it is that worker's first block; where its output columns start, and how many.
    struct ColumnBlock {
        let worker: Int, first: Bool
        let col: UnsafeMutablePointer<Float>, own: UnsafeMutablePointer<Float>
        let at: Int, columns: Int
    }

    /// The row blocks of input x, the most rows in one, and the workers that share them.
    func blockPlan(_ x: Tensor, _ options: EngineOptions) -> (blocks: [(Int, Int, Int)], rowsMax: Int, workers: Int) {
        let (ho, wo) = outputSize(x.shape[2], x.shape[3])
        let blocks = rowBlocks(n: x.shape[1], ho: ho, wo: wo, options)
        return (blocks, blocks.map { $0.2 - $0.1 }.max() ?? 1, Swift.max(1, Swift.min(options.threads, blocks.count)))
    }

    /// Runs body on every block after building its column matrix. Returns each worker's `extra` floats.
    private func forEachBlock(_ x: Tensor, extra: Int, _ ws: Workspace, _ body: (ColumnBlock) -> Void)
        -> [UnsafeMutablePointer<Float>]
    {
        let n = x.shape[1], h = x.shape[2], w = x.shape[3]
        let (ho, wo) = outputSize(h, w)
        let (blocks, rowsMax, workers) = blockPlan(x, ws.options)
        let colFloats = cin * kernel * kernel * rowsMax * wo
        let buffers = workerScratch(workers, colFloats + extra, ws)
        onWorkers(workers) { wk in
            for b in Swift.stride(from: wk, to: blocks.count, by: workers) {
                let (img, oy0, oy1) = blocks[b]
                im2colRows(
                    x.ptr, buffers[wk], c: cin, n: n, img: img, h: h, w: w, k: kernel, s: stride, p: pad,
                    rows: oy0..<oy1, wo: wo)
                body(
                    ColumnBlock(
                        worker: wk, first: b == wk, col: buffers[wk], own: buffers[wk] + colFloats,
                        at: img * ho * wo + oy0 * wo, columns: (oy1 - oy0) * wo))
            }
        }
        return buffers.map { $0 + colFloats }
    }

    /// The whole batch's column count N*Ho*Wo.
    private func outputColumns(_ x: Tensor) -> Int {
        let (ho, wo) = outputSize(x.shape[2], x.shape[3])
        return x.shape[1] * ho * wo
    }

    func blockedForward(_ x: Tensor, _ ws: Workspace) {
        if runsDirect(ws.options) {
            directPass(x, ws)
            return
        }
        let ckk = cin * kernel * kernel, m = outputColumns(x), wp = arena.value + weight, out = output.ptr
        _ = forEachBlock(x, extra: 0, ws) { b in
            sgemm(m: cout, n: b.columns, k: ckk, a: wp, b: b.col, c: out + b.at, ldc: m)
        }
    }

    /// dW += dOut . col^T, block by block (worker 0 adds into dW, the others into their own sums, added at the end).
    func blockedWeightGrad(_ x: Tensor, _ dOut: UnsafePointer<Float>, _ ws: Workspace) {
        if runsDirect(ws.options) {
            directPass(x, ws, dOut: dOut)
            return
        }
        let ckk = cin * kernel * kernel, m = outputColumns(x), gw = arena.grad + weight
        let sums = forEachBlock(x, extra: cout * ckk, ws) { b in
            sgemm(
                transB: true, m: cout, n: ckk, k: b.columns, a: dOut + b.at, lda: m, b: b.col, ldb: b.columns,
                beta: b.worker == 0 || !b.first ? 1 : 0, c: b.worker == 0 ? gw : b.own)
        }
        for s in sums.dropFirst() {
            for i in 0..<(cout * ckk) { gw[i] += s[i] }
        }
    }
}

extension Conv2d {
    /// The direct 7x7 convolution over the same row blocks: the forward when `dOut` is nil, else
    /// dW += dOut . x's taps. Weights go tap-major, (Cin*49, Cout), in `ws.flipped` (forward), and each
    /// worker sums its weight gradient tap-major in its own scratch, added into dW at the end.
    func directPass(_ x: Tensor, _ ws: Workspace, dOut: UnsafePointer<Float>? = nil) {
        let n = x.shape[1], h = x.shape[2], w = x.shape[3]
        let (ho, wo) = outputSize(h, w)
        let taps = cin * 49, (blocks, rowsMax, workers) = blockPlan(x, ws.options), path = ws.options.path
        let phases = reid_conv7_scratch_floats(Int32(cin), Int32(rowsMax), Int32(wo), Int32(stride))
        let sums = dOut == nil ? 0 : taps * cout
        let buffers = workerScratch(workers, phases + sums, ws)
        let (c, k, s, p) = (Int32(cin), Int32(cout), Int32(stride), Int32(pad))
        let (n32, h32, w32, ho32, wo32) = (Int32(n), Int32(h), Int32(w), Int32(ho), Int32(wo))
        let wp = arena.value + weight, gw = arena.grad + weight
        guard let dOut else {
            ws.flipped.resizeForOverwrite([taps, cout])
            let wt = ws.flipped.ptr
            for co in 0..<cout { for t in 0..<taps { wt[t * cout + co] = wp[co * taps + t] } }
            let out = output.ptr
            onWorkers(workers) { wk in
                for b in Swift.stride(from: wk, to: blocks.count, by: workers) {
                    let (img, oy0, oy1) = blocks[b]
                    reid_conv7_forward(
                        path, out, x.ptr, wt, c, k, n32, h32, w32, ho32, wo32, s, p, Int32(img), Int32(oy0), Int32(oy1),
                        buffers[wk])
                }
            }
            return
        }
        onWorkers(workers) { wk in
            let dwt = buffers[wk] + phases
            dwt.update(repeating: 0, count: sums)
            for b in Swift.stride(from: wk, to: blocks.count, by: workers) {
                let (img, oy0, oy1) = blocks[b]
                reid_conv7_weight_grad(
                    path, dwt, dOut, x.ptr, c, k, n32, h32, w32, ho32, wo32, s, p, Int32(img), Int32(oy0), Int32(oy1),
                    buffers[wk])
            }
        }
        for co in 0..<cout {
            for t in 0..<taps {
                var g: Float = 0
                for b in buffers { g += b[phases + t * cout + co] }
                gw[co * taps + t] += g
            }
        }
    }
}

/// One scratch buffer of `floats` per worker, kept in the workspace between calls.
func workerScratch(_ workers: Int, _ floats: Int, _ ws: Workspace) -> [UnsafeMutablePointer<Float>] {
    while ws.fusedScratch.count < workers { ws.fusedScratch.append(Tensor([1])) }
    for i in 0..<workers { ws.fusedScratch[i].resizeForOverwrite([floats]) }
    return ws.fusedScratch.prefix(workers).map { $0.ptr }
}

/// Runs body(worker) on `workers` threads, each calling OpenBLAS single-threaded meanwhile.
func onWorkers(_ workers: Int, _ body: (Int) -> Void) {
    if workers <= 1 {
        body(0)
        return
    }
    let threads = blasThreads()
    setBLASThreads(1)
    defer { setBLASThreads(threads) }
    withoutActuallyEscaping(body) { body in DispatchQueue.concurrentPerform(iterations: workers, execute: body) }
}

/// The column matrix of output rows `rows` of image `img` only: row (ci, ki, kj), column (oy - rows.lowerBound, ox).
func im2colRows(
    _ x: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>, c: Int, n: Int, img: Int,
    h: Int, w: Int, k: Int, s: Int, p: Int, rows: Range<Int>, wo: Int
) {
    let cols = rows.count * wo
    for ci in 0..<c {
        let src = x + (ci * n + img) * h * w
        for ki in 0..<k {
            for kj in 0..<k {
                let oxLo = Swift.min(wo, Swift.max(0, (p - kj + s - 1) / s))
                let oxHi = Swift.max(oxLo, lastInside(w - 1 + p - kj, s, wo))
                let shift = kj - p
                var dst = col + ((ci * k + ki) * k + kj) * cols
                for oy in rows {
                    let iy = oy * s - p + ki
                    if iy < 0 || iy >= h {
                        dst.update(repeating: 0, count: wo)
                    } else {
                        let srow = src + iy * w
                        for ox in 0..<oxLo { dst[ox] = 0 }
                        if s == 2 {
                            gatherEven(dst, srow + shift, oxLo, oxHi, readable: w - shift)
                        } else {
                            for ox in oxLo..<oxHi { dst[ox] = srow[ox * s + shift] }
                        }
                        for ox in oxHi..<wo { dst[ox] = 0 }
                    }
                    dst += wo
                }
            }
        }
    }
}
