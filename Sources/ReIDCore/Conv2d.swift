// Conv2d without bias, any kernel/stride/padding, on channel-major (C, N, H, W)
// activations. PyTorch: https://pytorch.org/docs/stable/generated/torch.nn.Conv2d.html
//
// Forward is one sgemm over the whole batch:
//   out (Cout, N*Ho*Wo) = W (Cout, Cin*k*k) . col (Cin*k*k, N*Ho*Wo)
// with col built by im2col (skipped for 1x1 stride-1 convolutions, where the
// input already is the column matrix). Backward:
//   dW += dOut . col^T   (col kept from forward when the workspace's cache
//                         budget allows, rebuilt otherwise)
//   dX, stride 1: a convolution of dOut with the flipped, transposed kernel,
//                 Wf (Cin, Cout*k*k) . im2col(dOut, pad k-1-p): a K = Cout*k*k
//                 GEMM and a gather, instead of a K = Cout GEMM and a scatter-add
//   dX, stride > 1: dcol = W^T . dOut, then col2im (scatter-add).
// 3x3 stride-1 pad-1 convolutions go through Winograd F(2x2,3x3) instead
// (Winograd.swift) when `EngineOptions.convAlgorithm` and the layer's shape say so.

/// What every layer of one model shares: its engine options (threads, algorithms, kernel path),
/// scratch memory (one step at a time), the budget for keeping each convolution's column matrix
/// between forward and backward (saves one im2col per convolution per step), and an optional
/// Profile that the layers' times go to.
public final class Workspace {
    /// How the model computes; may change between steps (a benchmark's thread count), not during one.
    public var options: EngineOptions
    /// Where the layers add their time when set (`reid-dist bench`'s per-part table).
    public var profile: Profile?
    public let col = Tensor([1])
    public let flipped = Tensor([1])
    /// Winograd scratch: transformed weights (16 x Cout x Cin) and products (16 x C x tiles).
    public let winogradWeights = Tensor([1]), winogradProducts = Tensor([1])
    /// Per-worker scratch of the fused (block by block) Winograd convolution.
    var fusedScratch: [Tensor] = []
    var cacheUsed = 0

    public init(_ options: EngineOptions = EngineOptions()) { self.options = options }

    /// The engine's worker threads (`options.threads`).
    @inline(__always) public var threads: Int { options.threads }

    /// Runs `body`, adding its wall time to `part` of the profile when there is one.
    @inline(__always) public func measure<R>(_ part: Profile.Part, _ body: () -> R) -> R {
        guard let profile else { return body() }
        return profile.measure(part, body)
    }
}

public final class Conv2d {
    public let cin: Int, cout: Int, kernel: Int, stride: Int, pad: Int
    public let weight: Int // offset of (Cout, Cin, k, k) in the arena
    unowned let arena: Arena
    public let output = Tensor([0]) // (Cout, N, Ho, Wo)
    private var input: Tensor? // cache: the forward input, not a copy
    private var cached: Tensor? // col from forward, when within budget
    private var cachedValid = false

    public init(_ arena: Arena, _ name: String, cin: Int, cout: Int, kernel: Int, stride: Int = 1, pad: Int = 0) {
        self.cin = cin
        self.cout = cout
        self.kernel = kernel
        self.stride = stride
        self.pad = pad
        self.arena = arena
        weight = arena.param(
            name + ".weight", [cout, cin, kernel, kernel],
            .kaimingFanOut(fanOut: cout * kernel * kernel))
    }

    var isPointwise: Bool { kernel == 1 && stride == 1 && pad == 0 }

    /// The Winograd output tile this layer uses on an (N, H, W) input: 2 (F(2x2,3x3)), 4 (F(4x4,3x3)),
    /// or 0 (not Winograd: im2col + GEMM, or not a 3x3 stride-1 pad-1 layer).
    public func winogradTile(n: Int, h: Int, w: Int, _ algorithm: ConvAlgorithm) -> Int {
        guard kernel == 3, stride == 1, pad == 1 else { return 0 }
        switch algorithm {
        case .gemm: return 0
        case .winograd: return 2
        case .winograd4: return 4
        case .auto:
            if Self.winograd4Wins(cin: cin, cout: cout, n: n, h: h, w: w) { return 4 }
            return Self.winogradWins(cin: cin, cout: cout, tiles: n * ((h + 1) / 2) * ((w + 1) / 2)) ? 2 : 0
        }
    }

    /// `auto`'s choice of F(4x4,3x3), from `reid-dist bench convs` (2-core AMD EPYC Zen 3, AVX2, 2
    /// threads, docs/performance.md): F(4x4) was faster than F(2x2) (fused or not) on every 3x3
    /// stride-1 shape of the three benchmark networks but one, where they tied (128->128 at
    /// 32x32x16); on 512->512 at 32x16x8, 112 against 260 ms for the three passes. Below 64 tiles
    /// (a few images) its weight transform, 36 values a kernel, costs more than its GEMMs save; and
    /// planes whose 4x4 tiles would hang far past the edge (more than a quarter of the tiles' area)
    /// stay with F(2x2).
    static func winograd4Wins(cin: Int, cout: Int, n: Int, h: Int, w: Int) -> Bool {
        let g = Winograd4Tiles(n: n, h: h, w: w)
        return g.count >= 64 && 16 * g.th * g.tw * 4 <= 5 * h * w
    }

    /// `auto`'s choice, from `reid-dist bench convs` (2-core AMD EPYC, AVX-512, 2 threads): Winograd
    /// won on every 3x3 stride-1 shape of the three benchmark networks, from 1.07x (128->128 at
    /// 32x8x4, 256 tiles: 5.8 vs 6.2 ms for the three passes) to 2x (512->512 at 32x16x8: 156 vs
    /// 308 ms). Below about 64 tiles (inference on a few images) transforming the weights costs
    /// about what the smaller GEMMs save, so GEMM stays there.
    static func winogradWins(cin: Int, cout: Int, tiles: Int) -> Bool { tiles >= 64 }

    /// Whether this Winograd layer keeps nothing from forward and redoes its input's transform in
    /// backward: both passes fused and the transformed input over `EngineOptions.recomputeAbove` bytes.
    func recomputesInput(_ g: WinogradTiles, _ options: EngineOptions) -> Bool {
        let c = Swift.max(cin, cout), fusion = options.winogradFusion
        return c <= fusion.forward && c <= fusion.weightGrad
            && 16 * Winograd.planeStride(cin * g.count) * 4 > options.recomputeAbove
    }

    public func outputSize(_ h: Int, _ w: Int) -> (Int, Int) {
        ((h + 2 * pad - kernel) / stride + 1, (w + 2 * pad - kernel) / stride + 1)
    }

    /// x: (Cin, N, H, W) -> output (Cout, N, Ho, Wo). `training` keeps the
    /// column matrix for backward when the workspace's budget allows.
    @discardableResult
    public func forward(_ x: Tensor, _ ws: Workspace, training: Bool = true) -> Tensor {
        precondition(x.shape.count == 4 && x.shape[0] == cin, "Conv2d: input \(x.shape), expected Cin=\(cin)")
        let n = x.shape[1], h = x.shape[2], w = x.shape[3]
        let (ho, wo) = outputSize(h, w)
        let m = n * ho * wo, ckk = cin * kernel * kernel
        input = x
        output.resizeForOverwrite([cout, n, ho, wo])
        let wp = arena.value + weight
        if isPointwise {
            ws.measure(.gemm) { sgemm(m: cout, n: m, k: cin, a: wp, b: x.ptr, c: output.ptr) }
            return output
        }
        let tile = winogradTile(n: n, h: h, w: w, ws.options.convAlgorithm)
        if tile == 4 {
            let g = Winograd4Tiles(n: n, h: h, w: w), products = Winograd4.products
            let v = columnBuffer(products * Winograd.planeStride(cin * g.count), ws, keep: training)
            cachedValid = v !== ws.col
            ws.winogradWeights.resizeForOverwrite([products * Winograd.planeStride(cout * cin)])
            ws.measure(.im2col) {
                Winograd4.transformWeights(wp, cout: cout, cin: cin, transposeFlip: false, ws.winogradWeights.ptr, ws)
            }
            ws.winogradProducts.resizeForOverwrite([products * Winograd.planeStride(cout * g.count)])
            Winograd4.convolve(
                x.ptr, cin: cin, cout: cout, g, u: ws.winogradWeights.ptr, v: v.ptr, m: ws.winogradProducts.ptr,
                out: output.ptr, accumulate: false, ws)
            return output
        }
        if tile == 2 {
            let g = WinogradTiles(n: n, h: h, w: w)
            // V: kept for backward in the layer's own buffer within the budget, else scratch; none
            // when backward redoes it block by block (which implies a fused forward)
            let v =
                recomputesInput(g, ws.options)
                ? nil : columnBuffer(16 * Winograd.planeStride(cin * g.count), ws, keep: training)
            cachedValid = v.map { $0 !== ws.col } ?? false
            ws.winogradWeights.resizeForOverwrite([16 * Winograd.planeStride(cout * cin)])
            ws.measure(.im2col) {
                Winograd.transformWeights(wp, cout: cout, cin: cin, transposeFlip: false, ws.winogradWeights.ptr, ws)
            }
            if Swift.max(cin, cout) <= ws.options.winogradFusion.forward {
                ws.measure(.gemm) {
                    Winograd.convolveFused(
                        x.ptr, cin: cin, cout: cout, g, u: ws.winogradWeights.ptr, keep: cachedValid ? v?.ptr : nil,
                        out: output.ptr, accumulate: false, ws)
                }
                return output
            }
            ws.winogradProducts.resizeForOverwrite([16 * Winograd.planeStride(cout * g.count)])
            Winograd.convolve(
                x.ptr, cin: cin, cout: cout, g, u: ws.winogradWeights.ptr, v: v!.ptr, m: ws.winogradProducts.ptr,
                out: output.ptr, accumulate: false, ws)
            return output
        }
        if runsBlocked(ws.options) {
            ws.measure(.gemm) { blockedForward(x, ws) }
            cachedValid = false
            return output
        }
        let col = columnBuffer(ckk * m, ws, keep: training)
        ws.measure(.im2col) {
            im2col(
                x.ptr, col.ptr, c: cin, n: n, h: h, w: w, k: kernel, s: stride, p: pad, ho: ho, wo: wo,
                threads: ws.threads)
        }
        cachedValid = col !== ws.col
        ws.measure(.gemm) { sgemm(m: cout, n: m, k: ckk, a: wp, b: col.ptr, c: output.ptr) }
        return output
    }

    /// The layer's own column matrix when it fits the budget, else the shared scratch.
    private func columnBuffer(_ count: Int, _ ws: Workspace, keep: Bool) -> Tensor {
        if keep {
            if let c = cached, c.count >= count {
                c.resizeForOverwrite([count])
                return c
            }
            if cached == nil, ws.cacheUsed + count * 4 <= ws.options.cacheBudget {
                ws.cacheUsed += count * 4
                let c = Tensor([count], zero: false)
                cached = c
                return c
            }
        }
        ws.col.resizeForOverwrite([count])
        return ws.col
    }

    /// dOut: (Cout, N, Ho, Wo). Adds into the weight gradient; writes dX
    /// (Cin, N, H, W) when given (adds into it when `accumulate`).
    public func backward(
        _ dOut: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>?,
        accumulate: Bool = false, _ ws: Workspace
    ) {
        guard let x = input else { preconditionFailure("Conv2d.backward before forward") }
        let n = x.shape[1], h = x.shape[2], w = x.shape[3]
        let (ho, wo) = outputSize(h, w)
        let m = n * ho * wo, ckk = cin * kernel * kernel
        let wp = arena.value + weight, gw = arena.grad + weight
        if isPointwise {
            ws.measure(.gemm) {
                sgemm(transB: true, m: cout, n: cin, k: m, a: dOut, b: x.ptr, beta: 1, c: gw)
                if let dX {
                    sgemm(transA: true, m: cin, n: m, k: cout, a: wp, b: dOut, beta: accumulate ? 1 : 0, c: dX)
                }
            }
            return
        }
        switch winogradTile(n: n, h: h, w: w, ws.options.convAlgorithm) {
        case 2:
            winogradBackward(x, dOut, dX: dX, accumulate: accumulate, ws)
            return
        case 4:
            winograd4Backward(x, dOut, dX: dX, accumulate: accumulate, ws)
            return
        default: break
        }
        if runsBlocked(ws.options) {
            ws.measure(.gemm) { blockedWeightGrad(x, dOut, ws) }
            if let dX { inputGrad(dOut, dX, accumulate: accumulate, n: n, h: h, w: w, ws) }
            return
        }
        var col: Tensor
        if cachedValid, let c = cached {
            col = c
        } else {
            ws.col.resizeForOverwrite([ckk, m])
            col = ws.col
            ws.measure(.im2col) {
                im2col(
                    x.ptr, col.ptr, c: cin, n: n, h: h, w: w, k: kernel, s: stride, p: pad, ho: ho, wo: wo,
                    threads: ws.threads)
            }
        }
        ws.measure(.gemm) { sgemm(transB: true, m: cout, n: ckk, k: m, a: dOut, b: col.ptr, beta: 1, c: gw) }
        cachedValid = false
        guard let dX else { return }
        inputGrad(dOut, dX, accumulate: accumulate, n: n, h: h, w: w, ws)
    }

    /// dX from dOut through im2col + GEMM (stride 1) or GEMM + col2im (strided).
    func inputGrad(
        _ dOut: UnsafePointer<Float>, _ dX: UnsafeMutablePointer<Float>, accumulate: Bool,
        n: Int, h: Int, w: Int, _ ws: Workspace
    ) {
        let (ho, wo) = outputSize(h, w)
        let m = n * ho * wo, ckk = cin * kernel * kernel, wp = arena.value + weight
        let k = kernel
        if stride == 1 {
            // dX = Wf . im2col(dOut) with Wf[ci, (co, a, b)] = W[co, ci, k-1-a, k-1-b].
            let kk = k * k, rows = cout * kk
            ws.flipped.resizeForOverwrite([cin, rows])
            let wf = ws.flipped.ptr
            for co in 0..<cout {
                for ci in 0..<cin {
                    let src = wp + (co * cin + ci) * kk, dst = wf + ci * rows + co * kk
                    for j in 0..<kk { dst[j] = src[kk - 1 - j] }
                }
            }
            ws.col.resizeForOverwrite([rows, n * h * w])
            ws.measure(.im2col) {
                im2col(
                    dOut, ws.col.ptr, c: cout, n: n, h: ho, w: wo, k: k, s: 1, p: k - 1 - pad, ho: h, wo: w,
                    threads: ws.threads)
            }
            ws.measure(.gemm) {
                sgemm(m: cin, n: n * h * w, k: rows, a: wf, b: ws.col.ptr, beta: accumulate ? 1 : 0, c: dX)
            }
            return
        }
        ws.col.resizeForOverwrite([ckk, m])
        ws.measure(.gemm) { sgemm(transA: true, m: ckk, n: m, k: cout, a: wp, b: dOut, c: ws.col.ptr) }
        ws.measure(.im2col) {
            if !accumulate { dX.update(repeating: 0, count: cin * n * h * w) }
            col2im(
                ws.col.ptr, dX, c: cin, n: n, h: h, w: w, k: k, s: stride, p: pad, ho: ho, wo: wo, threads: ws.threads)
        }
    }
}

extension Conv2d {
    /// Winograd backward: dW from the transformed input (kept from forward or redone) and
    /// the transformed output gradient; dX as the forward of dOut with the flipped kernel.
    func winogradBackward(
        _ x: Tensor, _ dOut: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>?,
        accumulate: Bool, _ ws: Workspace
    ) {
        let g = WinogradTiles(n: x.shape[1], h: x.shape[2], w: x.shape[3]), t = g.count
        let wp = arena.value + weight, gw = arena.grad + weight
        let sv = Winograd.planeStride(cin * t), sz = Winograd.planeStride(cout * t),
            su = Winograd.planeStride(cout * cin)
        // V: none when redone block by block, else kept from forward or transformed now
        var v: Tensor?
        if recomputesInput(g, ws.options) {
            v = nil
        } else if cachedValid, let c = cached {
            v = c
        } else {
            ws.col.resizeForOverwrite([16 * sv])
            v = ws.col
            ws.measure(.im2col) { Winograd.transformInput(x.ptr, c: cin, g, ws.col.ptr, ws) }
        }
        cachedValid = false
        ws.winogradWeights.resizeForOverwrite([16 * su])
        let du = ws.winogradWeights.ptr
        // Z (and below, dY's transform) in winogradProducts, unless the passes run fused.
        func z() -> UnsafeMutablePointer<Float> {
            ws.winogradProducts.resizeForOverwrite([16 * sz])
            return ws.winogradProducts.ptr
        }
        if Swift.max(cin, cout) <= ws.options.winogradFusion.weightGrad {
            ws.measure(.gemm) {
                Winograd.weightGradFused(
                    dOut, x: v == nil ? x.ptr : nil, v: v?.ptr, cin: cin, cout: cout, g, du: du, ws)
            }
        } else if let v {
            let z = z()
            ws.measure(.im2col) { Winograd.transformOutputGrad(dOut, c: cout, g, z, ws) }
            ws.measure(.gemm) {
                Winograd.products(16, ws) { e in
                    sgemm(transB: true, m: cout, n: cin, k: t, a: z + e * sz, b: v.ptr + e * sv, c: du + e * su)
                }
            }
        }
        ws.measure(.im2col) { Winograd.accumulateWeightGrad(du, cout: cout, cin: cin, gw, ws) }
        guard let dX else { return }
        // dX = conv(dOut, flip(W)^T): the transformed dOut goes where Z was, the products into ws.col.
        if Swift.max(cin, cout) <= ws.options.winogradFusion.inputGrad {
            ws.measure(.im2col) { Winograd.transformWeights(wp, cout: cout, cin: cin, transposeFlip: true, du, ws) }
            ws.measure(.gemm) {
                Winograd.convolveFused(dOut, cin: cout, cout: cin, g, u: du, out: dX, accumulate: accumulate, ws)
            }
            return
        }
        let z = z()
        ws.measure(.im2col) {
            Winograd.transformWeights(wp, cout: cout, cin: cin, transposeFlip: true, du, ws)
            Winograd.transformInput(dOut, c: cout, g, z, ws)
        }
        ws.col.resizeForOverwrite([16 * sv])
        Winograd.convolve(nil, cin: cout, cout: cin, g, u: du, v: z, m: ws.col.ptr, out: dX, accumulate: accumulate, ws)
    }
}

extension Conv2d {
    /// F(4x4) backward, whole-batch: dU[e] = Z[e] V[e]^T (V kept from forward or transformed
    /// again), dW += G^T dU G; dX = conv(dOut, flip(W)^T) through the same forward.
    func winograd4Backward(
        _ x: Tensor, _ dOut: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>?,
        accumulate: Bool, _ ws: Workspace
    ) {
        let g = Winograd4Tiles(n: x.shape[1], h: x.shape[2], w: x.shape[3]), t = g.count, products = Winograd4.products
        let wp = arena.value + weight, gw = arena.grad + weight
        let sv = Winograd.planeStride(cin * t), sz = Winograd.planeStride(cout * t),
            su = Winograd.planeStride(cout * cin)
        let v: Tensor
        if cachedValid, let c = cached {
            v = c
        } else {
            ws.col.resizeForOverwrite([products * sv])
            v = ws.col
            ws.measure(.im2col) { Winograd4.transformInput(x.ptr, c: cin, g, v.ptr, ws) }
        }
        cachedValid = false
        ws.winogradWeights.resizeForOverwrite([products * su])
        ws.winogradProducts.resizeForOverwrite([products * sz])
        let du = ws.winogradWeights.ptr, z = ws.winogradProducts.ptr
        ws.measure(.im2col) { Winograd4.transformOutputGrad(dOut, c: cout, g, z, ws) }
        ws.measure(.gemm) {
            Winograd.products(products, ws) { e in
                sgemm(transB: true, m: cout, n: cin, k: t, a: z + e * sz, b: v.ptr + e * sv, c: du + e * su)
            }
        }
        ws.measure(.im2col) { Winograd4.accumulateWeightGrad(du, cout: cout, cin: cin, gw, ws) }
        guard let dX else { return }
        // the transformed dOut goes where Z was, the products into ws.col (V's, when not kept, is done with)
        ws.measure(.im2col) {
            Winograd4.transformWeights(wp, cout: cout, cin: cin, transposeFlip: true, du, ws)
            Winograd4.transformInput(dOut, c: cout, g, z, ws)
        }
        ws.col.resizeForOverwrite([products * sv])
        Winograd4.convolve(
            nil, cin: cout, cout: cin, g, u: du, v: z, m: ws.col.ptr, out: dX, accumulate: accumulate, ws)
    }
}

/// col row (ci, ki, kj), column (img, oy, ox) = x[ci, img, oy*s - p + ki, ox*s - p + kj], or 0 outside.
func im2col(
    _ x: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>,
    c: Int, n: Int, h: Int, w: Int, k: Int, s: Int, p: Int, ho: Int, wo: Int, threads: Int
) {
    let m = n * ho * wo
    if s == 1 && ho == h && wo == w {
        im2colSame(x, col, c: c, n: n, h: h, w: w, k: k, p: p, threads: threads)
        return
    }
    parallelFor(c * k * k, threads: threads) { row in
        let ci = row / (k * k), ki = (row / k) % k, kj = row % k
        // Output columns whose input column is inside [0, w): ox in [oxLo, oxHi).
        let oxLo = Swift.min(wo, Swift.max(0, (p - kj + s - 1) / s))
        let oxHi = Swift.max(oxLo, lastInside(w - 1 + p - kj, s, wo))
        let shift = kj - p
        var dst = col + row * m
        for img in 0..<n {
            let src = x + (ci * n + img) * h * w
            for oy in 0..<ho {
                let iy = oy * s - p + ki
                if iy < 0 || iy >= h {
                    for ox in 0..<wo { dst[ox] = 0 }
                } else {
                    let srow = src + iy * w
                    for ox in 0..<oxLo { dst[ox] = 0 }
                    if s == 1 {
                        let sr = srow + shift
                        for ox in oxLo..<oxHi { dst[ox] = sr[ox] }
                    } else if s == 2 {
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

/// im2col for stride 1 with "same" output size: each row is the channel's
/// whole (N, H, W) block shifted by (ki - p, kj - p), one long copy, after
/// which the positions that fell outside their image are zeroed. Far fewer,
/// longer loops than row-by-row copying when H and W are small.
func im2colSame(
    _ x: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>,
    c: Int, n: Int, h: Int, w: Int, k: Int, p: Int, threads: Int
) {
    let total = n * h * w
    parallelFor(c * k * k, threads: threads) { row in
        let ci = row / (k * k), dy = (row / k) % k - p, dx = row % k - p
        let src = x + ci * total, dst = col + row * total
        let off = dy * w + dx
        // (clamped: a shift can exceed the whole block when the images are 1 or 2 pixels high)
        let lo = Swift.min(total, Swift.max(0, -off)), hi = Swift.max(lo, Swift.min(total, total - off))
        for i in 0..<lo { dst[i] = 0 }
        let s = src + off
        for i in lo..<hi { dst[i] = s[i] }
        for i in hi..<total { dst[i] = 0 }
        for img in 0..<n {
            let plane = dst + img * h * w
            for oy in 0..<h {
                let r = plane + oy * w
                let iy = oy + dy
                if iy < 0 || iy >= h {
                    for ox in 0..<w { r[ox] = 0 }
                } else if dx > 0 {
                    for ox in Swift.max(0, w - dx)..<w { r[ox] = 0 }
                } else if dx < 0 {
                    for ox in 0..<Swift.min(w, -dx) { r[ox] = 0 }
                }
            }
        }
    }
}

/// The adjoint of im2col: dx[ci, img, iy, ix] += col[(ci, ki, kj), (img, oy, ox)].
/// Parallel over input channels, each of which only its own rows touch.
func col2im(
    _ col: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
    c: Int, n: Int, h: Int, w: Int, k: Int, s: Int, p: Int, ho: Int, wo: Int, threads: Int
) {
    let m = n * ho * wo
    parallelFor(c, threads: threads) { ci in
        for ki in 0..<k {
            for kj in 0..<k {
                let oxLo = Swift.min(wo, Swift.max(0, (p - kj + s - 1) / s))
                let oxHi = Swift.max(oxLo, lastInside(w - 1 + p - kj, s, wo))
                if oxHi <= oxLo { continue }
                let shift = kj - p
                var src = col + ((ci * k + ki) * k + kj) * m
                for img in 0..<n {
                    let dst = dx + (ci * n + img) * h * w
                    for oy in 0..<ho {
                        let iy = oy * s - p + ki
                        if iy >= 0 && iy < h {
                            let drow = dst + iy * w
                            for ox in oxLo..<oxHi { drow[ox * s + shift] += src[ox] }
                        }
                        src += wo
                    }
                }
            }
        }
    }
}

/// Number of output columns ox with ox*s <= num (0 when num < 0), capped at `limit`.
@inline(__always) func lastInside(_ num: Int, _ s: Int, _ limit: Int) -> Int {
    num < 0 ? 0 : Swift.min(limit, num / s + 1)
}
