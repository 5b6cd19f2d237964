// Gradient averaging in buckets, overlapped with backward. The gradient arena
// is cut into buckets of about `bucketBytes` (at most a quarter of it each),
// from its end (the head and layer4, whose gradients backward finishes first)
// to its start, which is a small bucket of its own. Whenever backward reports
// that all gradients from some offset on are final, the buckets lying entirely
// past it are handed to a communication thread, which starts their
// non-blocking all-reduces and keeps testing them: Open MPI progresses
// non-blocking collectives only inside MPI calls, so without these tests the
// reduction would wait for the end of backward. Once backward is over, that
// thread blocks in MPI_Wait for what is left. Each reduced bucket is scaled by
// 1/N there too; `finish` only waits. All MPI calls of a step's reduction
// happen on that one thread (MPI_THREAD_SERIALIZED is enough; the main thread
// makes no MPI call between `beginStep` and `finish`).
import Foundation
import ReIDCore

public final class GradientSync {
    let comm: Communicator
    let grad: UnsafeMutablePointer<Float>
    let scale: Float
    /// 16-bit exchange: each bucket is narrowed into `stage` before its all-reduce and
    /// widened back (times 1/N) when it completes.
    let wire: WireType
    private let stage: UnsafeMutablePointer<UInt16>
    /// [lo, hi) ranges of the arena, last bucket first.
    public let buckets: [Range<Int>]
    private let cond = NSCondition()
    private var generation = 0 // steps begun
    private var released = 0 // buckets backward has finished
    private var completed = 0 // buckets reduced
    private var draining = false // backward is over: `finish` is waiting
    private var stopping = false
    private var failure: Error?
    private var exited = false
    private var started: [Double], ended: [Double]
    private var stepStart = 0.0
    /// This step's (bucket, start, end), seconds since the step began.
    public var events: [(bucket: Int, start: Double, end: Double)] {
        (0..<completed).map { ($0, started[$0], ended[$0]) }
    }

    /// Splits every rank's per-step waits after backward ([rank][step]) into sums over steps of
    /// the exposed all-reduce and the imbalance. The last rank to finish backward waits only for
    /// the reduction's tail, so per step the smallest wait is the exposed all-reduce; what the
    /// others wait beyond it is for that rank.
    public static func splitWaits(_ waits: [[Double]]) -> (exposed: Double, imbalance: Double) {
        var exposed = 0.0, imbalance = 0.0
        for s in 0..<(waits.first?.count ?? 0) {
            let w = waits.map { $0[s] }
            exposed += w.min()!
            imbalance += w.max()! - w.min()!
        }
        return (exposed, imbalance)
    }

    /// Length of the union of [start, end) intervals.
    public static func covered(_ intervals: [(start: Double, end: Double)]) -> Double {
        var total = 0.0, reach = -Double.infinity
        for e in intervals.sorted(by: { $0.start < $1.start }) {
            let s = Swift.max(e.start, reach)
            if e.end > s { total += e.end - s }
            reach = Swift.max(reach, e.end)
        }
        return total
    }

    public init(
        comm: Communicator, grad: UnsafeMutablePointer<Float>, count: Int, bucketBytes: Int, wire: WireType = .float32
    ) {
        self.comm = comm
        self.grad = grad
        scale = 1 / Float(comm.size)
        self.wire = wire
        stage = .allocate(capacity: wire == .float32 ? 1 : Swift.max(count, 1))
        // At most a quarter of the arena per bucket, so that a small model's gradients are not
        // one bucket that can start only when backward has ended.
        let per = Swift.max(1, Swift.min(bucketBytes / 4, (count + 3) / 4))
        // The arena's first 1 MB at most (the stem and layer1) is a bucket of its own: it is
        // released when backward ends, so its all-reduce is the part nothing can hide.
        // The rest is cut from the end; the bucket next to it takes the remainder.
        let tail = Swift.min(per, count, 262_144)
        var b: [Range<Int>] = []
        var hi = count
        while hi > tail {
            let lo = Swift.max(tail, hi - per)
            b.append(lo..<hi)
            hi = lo
        }
        if tail > 0 { b.append(0..<tail) }
        buckets = b
        started = Array(repeating: 0, count: b.count)
        ended = started
        // The thread holds `self` until `close`: it must never outlive what it reads.
        let t = Thread { self.serve() }
        t.name = "reid-dist all-reduce"
        t.start()
    }

    deinit { stage.deallocate() }

    /// Ends the communication thread (after `finish`, or when the step failed) and waits up to
    /// 5 s for it to leave: it could be blocked on a rank that died, which MPI then reports.
    /// True when the thread has left.
    @discardableResult
    public func close() -> Bool {
        cond.lock()
        defer { cond.unlock() }
        stopping = true
        cond.broadcast()
        let deadline = Date(timeIntervalSinceNow: 5)
        while !exited && cond.wait(until: deadline) {}
        return exited
    }

    public func beginStep() {
        cond.lock()
        released = 0
        completed = 0
        draining = false
        generation += 1
        stepStart = Profile.now()
        cond.unlock()
    }

    /// All gradients at offsets >= `offset` are final.
    public func ready(_ offset: Int) throws {
        cond.lock()
        var n = released
        while n < buckets.count && buckets[n].lowerBound >= offset { n += 1 }
        if n != released {
            released = n
            cond.broadcast()
        }
        let f = failure
        cond.unlock()
        if let f { throw f }
    }

    /// The communication thread: start released buckets, test those in flight.
    private func serve() {
        var inFlight: [(Int, Int64)] = []
        var launched = 0, seen = 0
        while true {
            cond.lock()
            while !stopping && (seen == generation ? launched >= released : released == 0) && inFlight.isEmpty {
                cond.wait()
            }
            if stopping {
                exited = true
                cond.broadcast()
                cond.unlock()
                return
            }
            if seen != generation {
                seen = generation
                launched = 0
            } // a new step
            let upTo = released, drain = draining
            cond.unlock()
            do {
                while launched < upTo {
                    let r = buckets[launched]
                    let t = Profile.now() - stepStart
                    let req: Int64
                    if wire == .float32 {
                        req = try comm.startAllreduce(grad + r.lowerBound, r.count)
                    } else {
                        wire.narrow(grad + r.lowerBound, stage + r.lowerBound, r.count)
                        req = try comm.startAllreduceHalf(stage + r.lowerBound, r.count, wire)
                    }
                    inFlight.append((launched, req))
                    started[launched] = t
                    launched += 1
                }
                // While backward runs, test and sleep: the compute thread keeps the core. Once
                // it waits in `finish`, block: MPI_Wait progresses without pauses, which matters
                // for large buckets over copy-in/copy-out shared memory.
                let blocking = drain && launched == buckets.count
                var i = 0
                while i < inFlight.count {
                    var req = inFlight[i].1
                    let done: Bool
                    if blocking {
                        try comm.wait(&req)
                        done = true
                    } else {
                        done = try comm.test(&req)
                    }
                    if done {
                        let b = inFlight[i].0
                        let r = buckets[b], p = grad + r.lowerBound
                        if wire == .float32 {
                            for j in 0..<r.count { p[j] *= scale }
                        } // the mean, while backward still runs
                        else {
                            wire.widen(stage + r.lowerBound, p, r.count, scale: scale)
                        }
                        ended[b] = Profile.now() - stepStart
                        inFlight.remove(at: i)
                        cond.lock()
                        completed += 1
                        cond.broadcast()
                        cond.unlock()
                    } else {
                        inFlight[i].1 = req
                        i += 1
                    }
                }
            } catch {
                cond.lock()
                failure = error
                completed = buckets.count
                cond.broadcast()
                cond.unlock()
                inFlight.removeAll()
            }
            if !inFlight.isEmpty { usleep(50) }
        }
    }

    /// Releases whatever is left and waits for every bucket (each already scaled by 1/N).
    public func finish() throws {
        try ready(0)
        cond.lock()
        draining = true
        cond.broadcast()
        while completed < buckets.count { cond.wait() }
        let f = failure
        cond.unlock()
        if let f { throw f }
    }
}
