// Parallel loops over independent work items (channels, rows, images).
import Dispatch

/// Number of worker threads for the engine's own loops (not BLAS's).
public nonisolated(unsafe) var engineThreads: Int = 1

/// Runs `body(i)` for i in 0..<n, split in contiguous chunks over `engineThreads`.
@inline(__always)
public func parallelFor(_ n: Int, minChunk: Int = 1, _ body: (Int) -> Void) {
    let workers = Swift.min(engineThreads, Swift.max(1, n / Swift.max(1, minChunk)))
    if workers <= 1 {
        for i in 0..<n { body(i) }
        return
    }
    withoutActuallyEscaping(body) { body in
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            let lo = n * w / workers, hi = n * (w + 1) / workers
            for i in lo..<hi { body(i) }
        }
    }
}
