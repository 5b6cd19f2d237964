// Counter-based random numbers: every draw is a pure function of a key, so a
// value never depends on which thread asked first (see the data issue).
import Foundation

/// SplitMix64: a small, fast, well-mixed 64-bit generator (Steele et al. 2014).
public struct RNG {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    /// A stream keyed by several integers (seed, epoch, step, index, ...).
    public init(key: UInt64...) {
        var s: UInt64 = 0x9E37_79B9_7F4A_7C15
        for k in key { s = RNG.mix(s ^ RNG.mix(k &+ 0x632B_E59B_D9B4_E019)) }
        state = s
    }
    @inline(__always) static func mix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    @inline(__always) public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return RNG.mix(state)
    }
    /// Uniform in [0, 1).
    @inline(__always) public mutating func uniform() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }
    /// Uniform integer in 0..<n.
    @inline(__always) public mutating func below(_ n: Int) -> Int {
        Int(next() % UInt64(n))
    }
    /// Standard normal by Box-Muller.
    public mutating func normal() -> Double {
        let u1 = Swift.max(uniform(), 1e-300), u2 = uniform()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
    public mutating func shuffle<T>(_ a: inout [T]) {
        if a.count < 2 { return }
        for i in stride(from: a.count - 1, to: 0, by: -1) { a.swapAt(i, below(i + 1)) }
    }
}
