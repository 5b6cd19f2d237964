// Vectorised reductions. Swift does not reassociate float sums, so a plain
// loop stays scalar; these keep 16 partial sums in SIMD registers (loads: VectorMemory.swift).

/// Sum of x[0..<n].
@inline(__always)
public func vsum(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD16<Float>(repeating: 0)
    var i = 0
    while i + 16 <= n {
        acc += load16(x + i)
        i += 16
    }
    var s = acc.sum()
    while i < n {
        s += x[i]
        i += 1
    }
    return s
}

/// Sum of (x[i] - c)^2.
@inline(__always)
public func vsumSqCentered(_ x: UnsafePointer<Float>, _ n: Int, _ c: Float) -> Float {
    var acc = SIMD16<Float>(repeating: 0)
    let cv = SIMD16<Float>(repeating: c)
    var i = 0
    while i + 16 <= n {
        let d = load16(x + i) - cv
        acc += d * d
        i += 16
    }
    var s = acc.sum()
    while i < n {
        let d = x[i] - c
        s += d * d
        i += 1
    }
    return s
}

/// Sum of g[i] and of g[i] * (x[i] - c).
@inline(__always)
public func vsumDotCentered(
    _ g: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int,
    _ c: Float
) -> (Float, Float) {
    var a = SIMD16<Float>(repeating: 0), b = SIMD16<Float>(repeating: 0)
    let cv = SIMD16<Float>(repeating: c)
    var i = 0
    while i + 16 <= n {
        let gv = load16(g + i)
        a += gv
        b += gv * (load16(x + i) - cv)
        i += 16
    }
    var sa = a.sum(), sb = b.sum()
    while i < n {
        sa += g[i]
        sb += g[i] * (x[i] - c)
        i += 1
    }
    return (sa, sb)
}

/// Dot product of x and y.
@inline(__always)
public func vdot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD16<Float>(repeating: 0)
    var i = 0
    while i + 16 <= n {
        acc += load16(x + i) * load16(y + i)
        i += 16
    }
    var s = acc.sum()
    while i < n {
        s += x[i] * y[i]
        i += 1
    }
    return s
}

/// The ReLU's backward and vsumDotCentered in one pass: g[i] = 0 where y[i] <= 0 (in place),
/// then the sums of g[i] and of g[i] * (x[i] - c), accumulated in the same order as vsumDotCentered.
@inline(__always)
public func vmaskSumDotCentered(
    _ g: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, _ x: UnsafePointer<Float>,
    _ n: Int, _ c: Float
) -> (Float, Float) {
    var a = SIMD16<Float>(repeating: 0), b = SIMD16<Float>(repeating: 0)
    let cv = SIMD16<Float>(repeating: c), zero = SIMD16<Float>(repeating: 0)
    var i = 0
    while i + 16 <= n {
        let gv = load16(g + i).replacing(with: zero, where: load16(y + i) .<= zero)
        UnsafeMutableRawPointer(g + i).storeBytes(of: gv, as: SIMD16<Float>.self)
        a += gv
        b += gv * (load16(x + i) - cv)
        i += 16
    }
    var sa = a.sum(), sb = b.sum()
    while i < n {
        if y[i] <= 0 { g[i] = 0 }
        sa += g[i]
        sb += g[i] * (x[i] - c)
        i += 1
    }
    return (sa, sb)
}
