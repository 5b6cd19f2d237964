// Small layers: ReLU, MaxPool2d(3, 2, 1), global average pooling, residual add,
// channel split/concat, dropout. Activations are channel-major (C, N, H, W).
// Convention (llm.c): `=` into activations and input gradients unless
// `accumulate` says `+=`; parameter gradients are always `+=`.

/// ReLU. Backward masks with the forward output (y > 0), as PyTorch's in-place ReLU.
public enum ReLU {
    public static func forward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int) {
        for i in 0..<n { y[i] = Swift.max(x[i], 0) }
    }
    public static func backward(_ dx: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>,
                                _ y: UnsafePointer<Float>, _ n: Int) {
        for i in 0..<n { dx[i] = y[i] > 0 ? dy[i] : 0 }
    }
}

/// Residual add: y = a + b; the backward passes dy to both unchanged.
public enum Add {
    public static func forward(_ y: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>,
                               _ b: UnsafePointer<Float>, _ n: Int) {
        for i in 0..<n { y[i] = a[i] + b[i] }
    }
}

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
    public func forward(_ x: Tensor) -> Tensor {
        let planes = x.shape[0] * x.shape[1], h = x.shape[2], w = x.shape[3]
        let (ho, wo) = outputSize(h, w)
        inShape = x.shape
        output.reshape([x.shape[0], x.shape[1], ho, wo])
        if planes * ho * wo > argCap {
            argmax.deallocate(); argCap = planes * ho * wo; argmax = .allocate(capacity: argCap)
        }
        let xp = x.ptr, yp = output.ptr, ap = argmax
        let k = kernel, s = stride, p = pad
        let t0 = Profile.enabled ? Profile.now() : 0
        defer { if Profile.enabled { Profile.seconds[Profile.Part.pool.rawValue] += Profile.now() - t0 } }
        parallelFor(planes) { pl in
            let src = xp + pl * h * w, dst = yp + pl * ho * wo, arg = ap + pl * ho * wo
            for oy in 0..<ho {
                let y0 = Swift.max(oy * s - p, 0), y1 = Swift.min(oy * s - p + k, h)
                for ox in 0..<wo {
                    let x0 = Swift.max(ox * s - p, 0), x1 = Swift.min(ox * s - p + k, w)
                    var best = -Float.infinity, bi = y0 * w + x0
                    for iy in y0..<y1 {
                        for ix in x0..<x1 {
                            let v = src[iy * w + ix]
                            if v > best || v.isNaN { best = v; bi = iy * w + ix; if v.isNaN { break } }
                        }
                    }
                    dst[oy * wo + ox] = best; arg[oy * wo + ox] = Int32(bi)
                }
            }
        }
        return output
    }

    /// dX = scatter of dOut to the positions that won; dX is overwritten.
    public func backward(_ dOut: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>) {
        let planes = inShape[0] * inShape[1], h = inShape[2], w = inShape[3]
        let ho = output.shape[2], wo = output.shape[3]
        let ap = argmax
        let t0 = Profile.enabled ? Profile.now() : 0
        defer { if Profile.enabled { Profile.seconds[Profile.Part.pool.rawValue] += Profile.now() - t0 } }
        parallelFor(planes) { pl in
            let d = dX + pl * h * w, g = dOut + pl * ho * wo, arg = ap + pl * ho * wo
            d.update(repeating: 0, count: h * w)
            for i in 0..<(ho * wo) { d[Int(arg[i])] += g[i] }
        }
    }
}

/// Global average pooling: (C, N, H, W) -> (C, N).
public enum GlobalAvgPool {
    public static func forward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, planes: Int, hw: Int) {
        let inv = 1 / Float(hw)
        parallelFor(planes, minChunk: 64) { p in y[p] = vsum(x + p * hw, hw) * inv }
    }
    public static func backward(_ dx: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, planes: Int, hw: Int) {
        let inv = 1 / Float(hw)
        parallelFor(planes, minChunk: 64) { p in (dx + p * hw).update(repeating: dy[p] * inv, count: hw) }
    }
}

/// Channel split / concatenation of channel-major tensors (C, rest): each part
/// is a contiguous block of rows, so both directions are block copies.
public enum Channels {
    /// Splits x (C, rest) into parts of the given channel counts.
    public static func split(_ x: Tensor, _ sizes: [Int]) -> [Tensor] {
        precondition(sizes.reduce(0, +) == x.shape[0], "split: sizes \(sizes) do not add up to C=\(x.shape[0])")
        let rest = x.count / x.shape[0]
        var off = 0
        return sizes.map { c in
            let t = Tensor([c] + x.shape.dropFirst(), zero: false)
            t.ptr.update(from: x.ptr + off * rest, count: c * rest)
            off += c
            return t
        }
    }
    /// Concatenates parts along channels; its backward is `split` of the gradient.
    public static func concat(_ parts: [Tensor]) -> Tensor {
        let rest = parts[0].count / parts[0].shape[0]
        let c = parts.reduce(0) { $0 + $1.shape[0] }
        let y = Tensor([c] + parts[0].shape.dropFirst(), zero: false)
        var off = 0
        for p in parts {
            precondition(p.count / p.shape[0] == rest, "concat: mismatched shapes")
            (y.ptr + off).update(from: p.ptr, count: p.count); off += p.count
        }
        return y
    }
}

/// Inverted dropout: kept values scaled by 1/(1-p); the mask is a function of
/// (seed, call index, element) so it is reproducible. Identity in inference.
public final class Dropout {
    public let p: Float
    public let output = Tensor([0])
    private let mask = Tensor([0])
    public init(p: Float) { precondition(p >= 0 && p < 1, "Dropout: p must be in [0, 1)"); self.p = p }

    @discardableResult
    public func forward(_ x: Tensor, training: Bool, seed: UInt64) -> Tensor {
        output.reshape(x.shape); mask.reshape(x.shape)
        let scale = 1 / (1 - p)
        var rng = RNG(key: seed, 0xD50)
        for i in 0..<x.count {
            let keep: Float = (!training || p == 0) ? 1 : (rng.uniform() >= Double(p) ? scale : 0)
            mask.ptr[i] = keep; output.ptr[i] = x.ptr[i] * keep
        }
        return output
    }
    public func backward(_ dOut: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>) {
        for i in 0..<mask.count { dX[i] = dOut[i] * mask.ptr[i] }
    }
}
