// Gradient averaging in buckets, overlapped with backward. The gradient arena
// is cut into buckets of about `bucketBytes`, from its end (the head and
// layer4, whose gradients backward finishes first) to its start. Whenever
// backward reports that all gradients from some offset on are final, the
// buckets lying entirely past it are handed to a communication thread, which
// starts their non-blocking all-reduces and keeps testing them: Open MPI
// progresses non-blocking collectives only inside MPI calls, so without these
// tests the reduction would wait for the end of backward. All MPI calls of a
// step's reduction happen on that one thread (MPI_THREAD_SERIALIZED is enough;
// the main thread makes no MPI call between `beginStep` and `finish`).
// `finish` waits for the last buckets and scales by 1/N.
import Foundation
import ReIDCore

public final class GradientSync {
    let comm: Communicator
    let grad: UnsafeMutablePointer<Float>
    /// [lo, hi) ranges of the arena, last bucket first.
    public let buckets: [Range<Int>]
    private let cond = NSCondition()
    private var generation = 0        // steps begun
    private var released = 0          // buckets backward has finished
    private var completed = 0         // buckets reduced
    private var stopping = false
    private var failure: Error?
    private var thread: Thread?
    private var started: [Double], ended: [Double]
    private var stepStart = 0.0
    /// Time `finish` spent waiting: the all-reduce time backward did not hide.
    public private(set) var exposedSeconds = 0.0
    /// This step's (bucket, start, end), seconds since the step began.
    public var events: [(bucket: Int, start: Double, end: Double)] {
        (0..<completed).map { ($0, started[$0], ended[$0]) }
    }

    public init(comm: Communicator, grad: UnsafeMutablePointer<Float>, count: Int, bucketBytes: Int) {
        self.comm = comm; self.grad = grad
        let per = Swift.max(1, bucketBytes / 4)
        var b: [Range<Int>] = []
        var hi = count
        while hi > 0 { let lo = Swift.max(0, hi - per); b.append(lo..<hi); hi = lo }
        buckets = b
        started = Array(repeating: 0, count: b.count); ended = started
        let t = Thread { [unowned self] in self.serve() }
        t.name = "reid-dist all-reduce"
        thread = t
        t.start()
    }

    deinit {
        cond.lock(); stopping = true; cond.broadcast(); cond.unlock()
    }

    public func beginStep() {
        cond.lock()
        released = 0; completed = 0; generation += 1
        stepStart = Profile.now()
        cond.unlock()
    }

    /// All gradients at offsets >= `offset` are final.
    public func ready(_ offset: Int) throws {
        cond.lock()
        var n = released
        while n < buckets.count && buckets[n].lowerBound >= offset { n += 1 }
        if n != released { released = n; cond.broadcast() }
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
            while !stopping && (seen == generation ? launched >= released : released == 0) && inFlight.isEmpty { cond.wait() }
            if stopping { cond.unlock(); return }
            if seen != generation { seen = generation; launched = 0 }    // a new step
            let upTo = released
            cond.unlock()
            do {
                while launched < upTo {
                    let r = buckets[launched]
                    let t = Profile.now() - stepStart
                    inFlight.append((launched, try comm.startAllreduce(grad + r.lowerBound, r.count)))
                    started[launched] = t
                    launched += 1
                }
                var i = 0
                while i < inFlight.count {
                    var req = inFlight[i].1
                    if try comm.test(&req) {
                        let b = inFlight[i].0
                        ended[b] = Profile.now() - stepStart
                        inFlight.remove(at: i)
                        cond.lock(); completed += 1; cond.broadcast(); cond.unlock()
                    } else { inFlight[i].1 = req; i += 1 }
                }
            } catch {
                cond.lock(); failure = error; completed = buckets.count; cond.broadcast(); cond.unlock()
                inFlight.removeAll()
            }
            if !inFlight.isEmpty { usleep(50) }
        }
    }

    /// Releases whatever is left, waits for every bucket, scales by 1/N.
    public func finish() throws {
        try ready(0)
        let t0 = Profile.now()
        cond.lock()
        while completed < buckets.count { cond.wait() }
        let f = failure
        cond.unlock()
        exposedSeconds = Profile.now() - t0
        if let f { throw f }
        let s = 1 / Float(comm.size)
        for r in buckets { for i in r { grad[i] *= s } }
    }
}
