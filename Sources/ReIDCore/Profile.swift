// Where a training step's time goes: counters that the hot layers bump when the model's
// workspace holds a Profile (one clock read per layer call, not per element).
import Foundation

public final class Profile {
    public enum Part: Int, CaseIterable { case gemm, im2col, batchnorm, pool, other }
    /// Seconds per part since the last `reset`.
    public private(set) var seconds = [Double](repeating: 0, count: Part.allCases.count)

    public init() {}

    @inline(__always) public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    /// Runs `body`, adding its wall time to `part`.
    @inline(__always) public func measure<R>(_ part: Part, _ body: () -> R) -> R {
        let t = Self.now()
        let r = body()
        seconds[part.rawValue] += Self.now() - t
        return r
    }

    public func reset() { seconds = [Double](repeating: 0, count: Part.allCases.count) }
}
