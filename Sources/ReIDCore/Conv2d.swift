// Conv2d without bias, any kernel/stride/padding, on channel-major (C, N, H, W)
// activations. PyTorch: https://pytorch.org/docs/stable/generated/torch.nn.Conv2d.html
//
// Forward is one sgemm over the whole batch:
//   out (Cout, N*Ho*Wo) = W (Cout, Cin*k*k) . col (Cin*k*k, N*Ho*Wo)
// with col built by im2col (skipped for 1x1 stride-1 convolutions, where the
// input already is the column matrix). Backward recomputes col into the shared
// workspace rather than keeping one per layer:
//   dW += dOut . col^T            dcol = W^T . dOut, then col2im into dX.

/// Scratch memory shared by all layers of a model (one step at a time).
public final class Workspace {
    public let col = Tensor([1])
    public init() {}
}

public final class Conv2d {
    public let cin: Int, cout: Int, kernel: Int, stride: Int, pad: Int
    public let weight: Int                        // offset of (Cout, Cin, k, k) in the arena
    unowned let arena: Arena
    public let output = Tensor([0])               // (Cout, N, Ho, Wo)
    private var input: Tensor?                    // cache: the forward input, not a copy

    public init(_ arena: Arena, _ name: String, cin: Int, cout: Int, kernel: Int, stride: Int = 1, pad: Int = 0) {
        self.cin = cin; self.cout = cout; self.kernel = kernel; self.stride = stride; self.pad = pad
        self.arena = arena
        weight = arena.param(name + ".weight", [cout, cin, kernel, kernel],
                             .kaimingFanOut(fanOut: cout * kernel * kernel))
    }

    var isPointwise: Bool { kernel == 1 && stride == 1 && pad == 0 }

    public func outputSize(_ h: Int, _ w: Int) -> (Int, Int) {
        ((h + 2 * pad - kernel) / stride + 1, (w + 2 * pad - kernel) / stride + 1)
    }

    /// x: (Cin, N, H, W) -> output (Cout, N, Ho, Wo)
    @discardableResult
    public func forward(_ x: Tensor, _ ws: Workspace) -> Tensor {
        precondition(x.shape.count == 4 && x.shape[0] == cin, "Conv2d: input \(x.shape), expected Cin=\(cin)")
        let n = x.shape[1], h = x.shape[2], w = x.shape[3]
        let (ho, wo) = outputSize(h, w)
        let m = n * ho * wo, ckk = cin * kernel * kernel
        input = x
        output.reshape([cout, n, ho, wo])
        let wp = arena.value + weight
        if isPointwise {
            Profile.measure(.gemm) { sgemm(m: cout, n: m, k: cin, a: wp, b: x.ptr, c: output.ptr) }
        } else {
            ws.col.reshape([ckk, m])
            Profile.measure(.im2col) { im2col(x.ptr, ws.col.ptr, n: n, h: h, w: w, ho: ho, wo: wo) }
            Profile.measure(.gemm) { sgemm(m: cout, n: m, k: ckk, a: wp, b: ws.col.ptr, c: output.ptr) }
        }
        return output
    }

    /// dOut: (Cout, N, Ho, Wo). Adds into the weight gradient; writes dX
    /// (Cin, N, H, W) when given (adds into it when `accumulate`).
    public func backward(_ dOut: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>?,
                         accumulate: Bool = false, _ ws: Workspace) {
        guard let x = input else { preconditionFailure("Conv2d.backward before forward") }
        let n = x.shape[1], h = x.shape[2], w = x.shape[3]
        let (ho, wo) = outputSize(h, w)
        let m = n * ho * wo, ckk = cin * kernel * kernel
        let wp = arena.value + weight, gw = arena.grad + weight
        if isPointwise {
            Profile.measure(.gemm) {
                sgemm(transB: true, m: cout, n: cin, k: m, a: dOut, b: x.ptr, beta: 1, c: gw)
                if let dX {
                    sgemm(transA: true, m: cin, n: m, k: cout, a: wp, b: dOut, beta: accumulate ? 1 : 0, c: dX)
                }
            }
            return
        }
        ws.col.reshape([ckk, m])
        Profile.measure(.im2col) { im2col(x.ptr, ws.col.ptr, n: n, h: h, w: w, ho: ho, wo: wo) }
        Profile.measure(.gemm) { sgemm(transB: true, m: cout, n: ckk, k: m, a: dOut, b: ws.col.ptr, beta: 1, c: gw) }
        guard let dX else { return }
        Profile.measure(.gemm) { sgemm(transA: true, m: ckk, n: m, k: cout, a: wp, b: dOut, c: ws.col.ptr) }
        Profile.measure(.im2col) {
            if !accumulate { dX.update(repeating: 0, count: cin * n * h * w) }
            col2im(ws.col.ptr, dX, n: n, h: h, w: w, ho: ho, wo: wo)
        }
    }

    /// col row (c, ki, kj), column (n, oy, ox) = x[c, n, oy*s - p + ki, ox*s - p + kj] or 0.
    func im2col(_ x: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>,
                n: Int, h: Int, w: Int, ho: Int, wo: Int) {
        let k = kernel, s = stride, p = pad
        let m = n * ho * wo
        parallelFor(cin * k * k) { row in
            let c = row / (k * k), ki = (row / k) % k, kj = row % k
            // Output columns whose input x-coordinate is inside [0, w): ox in [oxLo, oxHi).
            let oxLo = Swift.max(0, (p - kj + s - 1) / s)
            let oxHi = lastInside(w - 1 + p - kj, s, wo)
            var dst = col + row * m
            for img in 0..<n {
                let src = x + (c * n + img) * h * w
                for oy in 0..<ho {
                    let iy = oy * s - p + ki
                    if iy < 0 || iy >= h || oxHi <= oxLo {
                        dst.update(repeating: 0, count: wo)
                    } else {
                        let srow = src + iy * w
                        for ox in 0..<oxLo { dst[ox] = 0 }
                        if s == 1 {
                            (dst + oxLo).update(from: srow + (oxLo - p + kj), count: oxHi - oxLo)
                        } else {
                            var ix = oxLo * s - p + kj
                            for ox in oxLo..<oxHi { dst[ox] = srow[ix]; ix += s }
                        }
                        for ox in oxHi..<wo { dst[ox] = 0 }
                    }
                    dst += wo
                }
            }
        }
    }

    /// The adjoint of im2col: dX[c, n, iy, ix] += col[(c, ki, kj), (n, oy, ox)].
    /// Parallel over input channels, each of which only its own rows touch.
    func col2im(_ col: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
                n: Int, h: Int, w: Int, ho: Int, wo: Int) {
        let k = kernel, s = stride, p = pad
        let m = n * ho * wo
        parallelFor(cin) { c in
            for ki in 0..<k {
                for kj in 0..<k {
                    let oxLo = Swift.max(0, (p - kj + s - 1) / s)
                    let oxHi = lastInside(w - 1 + p - kj, s, wo)
                    if oxHi <= oxLo { continue }
                    var src = col + ((c * k + ki) * k + kj) * m
                    for img in 0..<n {
                        let dst = dx + (c * n + img) * h * w
                        for oy in 0..<ho {
                            let iy = oy * s - p + ki
                            if iy >= 0 && iy < h {
                                let drow = dst + iy * w
                                var ix = oxLo * s - p + kj
                                for ox in oxLo..<oxHi { drow[ix] += src[ox]; ix += s }
                            }
                            src += wo
                        }
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
