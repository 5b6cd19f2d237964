// Parallel loops over independent work items (channels, rows, images).
import Dispatch

/// Number of worker threads for the engine's own loops (not BLAS's).
public nonisolated(unsafe) var engineThreads: Int = 1

/// Runs `body(i)` for i in 0..<n, split in contiguous chunks over `engineThreads`.
@inline(__always)
public func parallelFor(_ n: Int, minChunk: Int = 1, _ body: (Int) -> Void) {
    parallelChunks(n, minChunk: minChunk) { r in for i in r { body(i) } }
}

/// parallelFor's split, a contiguous range of 0..<n per worker: for bodies that set up
/// something (a scratch buffer) once per worker rather than once per index.
@inline(__always)
public func parallelChunks(_ n: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    let workers = Swift.min(engineThreads, Swift.max(1, n / Swift.max(1, minChunk)))
    if workers <= 1 {
        if n > 0 { body(0..<n) }
        return
    }
    withoutActuallyEscaping(body) { body in
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            let lo = n * w / workers, hi = n * (w + 1) / workers
            if lo < hi { body(lo..<hi) }
        }
    }
}
