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
    public func forward(_ x: Tensor) -> Tensor {
        let planes = x.shape[0] * x.shape[1], h = x.shape[2], w = x.shape[3]
        let (ho, wo) = outputSize(h, w)
        inShape = x.shape
        output.resizeForOverwrite([x.shape[0], x.shape[1], ho, wo])
        if planes * ho * wo > argCap {
            argmax.deallocate(); argCap = planes * ho * wo; argmax = .allocate(capacity: argCap)
        }
        let xp = x.ptr, yp = output.ptr, ap = argmax
        let k = kernel, s = stride, p = pad
        Profile.measure(.pool) { parallelFor(planes) { pl in
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
        } }
        return output
    }

    /// dX = scatter of dOut to the positions that won; dX is overwritten.
    public func backward(_ dOut: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>) {
        let planes = inShape[0] * inShape[1], h = inShape[2], w = inShape[3]
        let ho = output.shape[2], wo = output.shape[3]
        let ap = argmax
        Profile.measure(.pool) { parallelFor(planes) { pl in
            let d = dX + pl * h * w, g = dOut + pl * ho * wo, arg = ap + pl * ho * wo
            d.update(repeating: 0, count: h * w)
            for i in 0..<(ho * wo) { d[Int(arg[i])] += g[i] }
        } }
    }
}

/// Global average pooling: (C, N, H, W) -> (C, N).
public final class GlobalAvgPool {
    public let output = Tensor([0])                 // (C, N)
    /// Shape of the last forward's input, (C, N, H, W): what backward writes.
    public private(set) var inputShape: [Int] = []
    public init() {}

    @discardableResult
    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.shape.count == 4, "GlobalAvgPool: input \(x.shape), expected (C, N, H, W)")
        inputShape = x.shape
        let planes = x.shape[0] * x.shape[1], hw = x.shape[2] * x.shape[3], inv = 1 / Float(hw)
        output.resizeForOverwrite([x.shape[0], x.shape[1]])
        let xp = x.ptr, yp = output.ptr
        Profile.measure(.pool) { parallelFor(planes, minChunk: 64) { p in yp[p] = vsum(xp + p * hw, hw) * inv } }
        return output
    }

    /// dOut (C, N); dX (C, N, H, W) written.
    public func backward(_ dOut: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>) {
        let planes = inputShape[0] * inputShape[1], hw = inputShape[2] * inputShape[3], inv = 1 / Float(hw)
        Profile.measure(.pool) { parallelFor(planes, minChunk: 64) { p in (dX + p * hw).update(repeating: dOut[p] * inv, count: hw) } }
    }
}
