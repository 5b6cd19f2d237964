// Where a training step's time goes: a few global counters that the hot
// layers bump when profiling is on (one clock read per layer call, not per element).
import Foundation

public enum Profile {
    public enum Part: Int, CaseIterable { case gemm, im2col, batchnorm, pool, other }
    public nonisolated(unsafe) static var enabled = false
    public nonisolated(unsafe) static var seconds = [Double](repeating: 0, count: Part.allCases.count)

    @inline(__always) public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    /// Runs `body`, adding its wall time to `part` when profiling.
    @inline(__always) public static func measure<R>(_ part: Part, _ body: () -> R) -> R {
        if !enabled { return body() }
        let t = now()
        let r = body()
        seconds[part.rawValue] += now() - t
        return r
    }

    public static func reset() { seconds = [Double](repeating: 0, count: Part.allCases.count) }
}
