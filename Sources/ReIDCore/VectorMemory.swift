// Unaligned SIMD loads and stores at float pointers, for the engine's hand-vectorised loops
// (Winograd transforms, stride-2 gathers, max pooling). Portable Swift SIMD types: one build
// runs on every x86-64 of the fleet (and elsewhere) and the compiler picks the instructions.

@inline(__always) func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
}
@inline(__always) func load8(_ p: UnsafeMutablePointer<Float>) -> SIMD8<Float> { load8(UnsafePointer(p)) }
@inline(__always) func load16(_ p: UnsafePointer<Float>) -> SIMD16<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
}
@inline(__always) func load16(_ p: UnsafeMutablePointer<Float>) -> SIMD16<Float> { load16(UnsafePointer(p)) }
@inline(__always) func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
}

@inline(__always) func load<V: SIMD>(_ p: UnsafeMutablePointer<Float>) -> V where V.Scalar == Float {
    UnsafeRawPointer(p).loadUnaligned(as: V.self)
}
@inline(__always) func store<V: SIMD>(_ v: V, _ p: UnsafeMutablePointer<Float>) where V.Scalar == Float {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self)
}
/// dst[i] = src[2 i] for i in lo..<hi, where src[j] may be read for every j < readable:
/// 8 at a time from the even half of 16 loaded floats (stride-2 im2col rows).
@inline(__always) func gatherEven(
    _ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>,
    _ lo: Int, _ hi: Int, readable: Int
) {
    var i = lo
    while i + 8 <= hi && 2 * i + 16 <= readable {
        store8(load16(src + 2 * i).evenHalf, dst + i)
        i += 8
    }
    while i < hi {
        dst[i] = src[2 * i]
        i += 1
    }
}

/// What the engine's own SIMD loops run on in this build, for `bench` to print: one portable
/// build (no per-processor flags), so every node of a mixed fleet runs the same code.
public var engineVectorPath: String {
    #if arch(x86_64)
        "Swift SIMD8/SIMD16 on the x86-64 baseline (SSE2, 4 floats a register)"
    #elseif arch(arm64)
        "Swift SIMD8/SIMD16 on NEON (4 floats a register)"
    #else
        "Swift SIMD8/SIMD16 (portable)"
    #endif
}
