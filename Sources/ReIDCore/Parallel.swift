// Parallel loops over independent work items (channels, rows, images), on a given number of
// workers (the model's `EngineOptions.threads`, `Workspace.threads`).
import Dispatch

/// Runs `body(i)` for i in 0..<n, split in contiguous chunks over `threads` workers.
@inline(__always)
public func parallelFor(_ n: Int, threads: Int, minChunk: Int = 1, _ body: (Int) -> Void) {
    parallelChunks(n, threads: threads, minChunk: minChunk) { r in for i in r { body(i) } }
}

/// parallelFor's split, a contiguous range of 0..<n per worker: for bodies that set up
/// something (a scratch buffer) once per worker rather than once per index.
@inline(__always)
public func parallelChunks(_ n: Int, threads: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    let workers = Swift.min(threads, Swift.max(1, n / Swift.max(1, minChunk)))
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
