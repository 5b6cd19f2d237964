// Pooling: MaxPool2d(3, 2, 1) of the ResNet stem and the global average
// pooling of the feature map. Activations are channel-major (C, N, H, W);
// the layer conventions are in Layer.swift.

/// MaxPool2d(kernel 3, stride 2, padding 1); padding never wins (-inf), the
/// first maximum in scan order does (PyTorch's CPU kernel), NaN propagates.
public final class MaxPool2d {
    public let kernel = 3, stride = 2, pad = 1
    public let output = Tensor([0])
    private var argmax: UnsafeMutablePointer<Int32> = .allocate(capacity: 1)
    private var argCap = 1
    private var inShape: [Int] = []
    public init() {}
    deinit { argmax.deallocate() }

    public func outputSize(_ h: Int, _ w: Int) -> (Int, Int) {
        ((h + 2 * pad - kernel) / stride + 1, (w + 2 * pad - kernel) / stride + 1)
    }

    @discardableResult
    public func forward(_ x: Tensor, _ ws: Workspace) -> Tensor {
        let planes = x.shape[0] * x.shape[1], h = x.shape[2], w = x.shape[3]
        let (ho, wo) = outputSize(h, w)
        inShape = x.shape
        output.resizeForOverwrite([x.shape[0], x.shape[1], ho, wo])
        if planes * ho * wo > argCap {
            argmax.deallocate()
            argCap = planes * ho * wo
            argmax = .allocate(capacity: argCap)
        }
        let xp = x.ptr, yp = output.ptr, ap = argmax
        let k = kernel, s = stride, p = pad
        ws.measure(.pool) {
            parallelFor(planes, threads: ws.threads) { pl in
                let src = xp + pl * h * w, dst = yp + pl * ho * wo, arg = ap + pl * ho * wo
                for oy in 0..<ho { Self.row(oy, src, h: h, w: w, dst, arg, wo: wo, k: k, s: s, p: p) }
            }
        }
        return output
    }

    /// Output row `oy` of one plane: the maximum of each window (the first in scan order, a NaN
    /// if there is one) and where it is.
    @inline(__always)
    static func row(
        _ oy: Int, _ src: UnsafePointer<Float>, h: Int, w: Int, _ dst: UnsafeMutablePointer<Float>,
        _ arg: UnsafeMutablePointer<Int32>, wo: Int, k: Int, s: Int, p: Int
    ) {
        let y0 = Swift.max(oy * s - p, 0), y1 = Swift.min(oy * s - p + k, h)
        func one(_ ox: Int) {
            let x0 = Swift.max(ox * s - p, 0), x1 = Swift.min(ox * s - p + k, w)
            var best = -Float.infinity, bi = y0 * w + x0
            for iy in y0..<y1 {
                for ix in x0..<x1 {
                    let v = src[iy * w + ix]
                    if v > best || v.isNaN {
                        best = v
                        bi = iy * w + ix
                        if v.isNaN { break }
                    }
                }
            }
            dst[oy * wo + ox] = best
            arg[oy * wo + ox] = Int32(bi)
        }
        // Columns away from the borders 8 at a time: windows at columns 2ox - 1, 2ox, 2ox + 1
        // are the even and odd halves of 16 floats from 2ox - 1 and the odd half of 16 from
        // 2ox, all inside the row while 2ox + 16 <= w. A last chunk that would pass the row's
        // end starts at wo - 8 instead, redoing a few columns (the same values and winners).
        @inline(__always) func eight(_ ox: Int) {
            var best = SIMD8<Float>(repeating: -.infinity), done = SIMDMask<SIMD8<Int32>>(repeating: false)
            let lanes = SIMD8<Int32>(0, 2, 4, 6, 8, 10, 12, 14)
            var bi = SIMD8<Int32>(repeating: Int32(y0 * w + 2 * ox - 1)) &+ lanes
            for iy in y0..<y1 {
                let row = src + iy * w + 2 * ox - 1
                let a = load16(row), b = load16(row + 1)
                let at = SIMD8<Int32>(repeating: Int32(iy * w + 2 * ox - 1)) &+ lanes
                // the scalar rule per lane: a larger value or a NaN takes over, and a NaN ends the scan
                @inline(__always) func candidate(_ v: SIMD8<Float>, _ c: Int32) {
                    let nan = v .!= v, take = (v .> best .| nan) .& .!done
                    best.replace(with: v, where: take)
                    bi.replace(with: at &+ c, where: take)
                    done = done .| nan
                }
                candidate(a.evenHalf, 0)
                candidate(a.oddHalf, 1)
                candidate(b.oddHalf, 2)
            }
            store8(best, dst + oy * wo + ox)
            UnsafeMutableRawPointer(arg + oy * wo + ox).storeBytes(of: bi, as: SIMD8<Int32>.self)
        }
        var ox = 0
        if ox < wo {
            one(ox)
            ox += 1
        }
        while ox + 8 <= wo && 2 * ox + 16 <= w {
            eight(ox)
            ox += 8
        }
        if ox < wo && wo - 8 >= 1 && 2 * (wo - 8) + 16 <= w {
            eight(wo - 8)
            ox = wo
        }
        while ox < wo {
            one(ox)
            ox += 1
        }
    }

    /// dX = scatter of dOut to the positions that won; dX is overwritten.
    public func backward(_ dOut: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>, _ ws: Workspace) {
        let planes = inShape[0] * inShape[1], h = inShape[2], w = inShape[3]
        let ho = output.shape[2], wo = output.shape[3]
        let ap = argmax
        ws.measure(.pool) {
            parallelFor(planes, threads: ws.threads) { pl in
                let d = dX + pl * h * w, g = dOut + pl * ho * wo, arg = ap + pl * ho * wo
                d.update(repeating: 0, count: h * w)
                for i in 0..<(ho * wo) { d[Int(arg[i])] += g[i] }
            }
        }
    }
}

/// Global average pooling: (C, N, H, W) -> (C, N).
public final class GlobalAvgPool {
    public let output = Tensor([0]) // (C, N)
    /// Shape of the last forward's input, (C, N, H, W): what backward writes.
    public private(set) var inputShape: [Int] = []
    public init() {}

    @discardableResult
    public func forward(_ x: Tensor, _ ws: Workspace) -> Tensor {
        precondition(x.shape.count == 4, "GlobalAvgPool: input \(x.shape), expected (C, N, H, W)")
        inputShape = x.shape
        let planes = x.shape[0] * x.shape[1], hw = x.shape[2] * x.shape[3], inv = 1 / Float(hw)
        output.resizeForOverwrite([x.shape[0], x.shape[1]])
        let xp = x.ptr, yp = output.ptr
        ws.measure(.pool) {
            parallelFor(planes, threads: ws.threads, minChunk: 64) { p in yp[p] = vsum(xp + p * hw, hw) * inv }
        }
        return output
    }

    /// dOut (C, N); dX (C, N, H, W) written.
    public func backward(_ dOut: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>, _ ws: Workspace) {
        let planes = inputShape[0] * inputShape[1], hw = inputShape[2] * inputShape[3], inv = 1 / Float(hw)
        ws.measure(.pool) {
            parallelFor(planes, threads: ws.threads, minChunk: 64) { p in
                (dX + p * hw).update(repeating: dOut[p] * inv, count: hw)
            }
        }
    }
}
