// A step that never ends: a rank stopped (SIGSTOP, swapped out), a hung file
// system, a link that went down. MPI waits for ever in such cases while the
// other ranks spin at full CPU. A watchdog thread on every rank times each
// training step; when one takes longer than `train.step_timeout_s` (auto: 30
// times the median step so far, at least 120 s; 900 s before the first step
// has finished, which includes warm-up), it prints which step this rank is
// stuck in and ends the process. The launcher then ends the job, as it does
// for a killed rank; the last checkpoint is whole and `--resume auto` continues.
// The stalled rank itself cannot report: it is the one missing from the lines.
import Foundation
import ReIDCore

public final class StepWatchdog {
    private let cond = NSCondition()
    private var armedAt: Double?
    private var label = ""
    private var armedStep = true
    private var durations: [Double] = []
    private var stopping = false
    let fixedTimeout: Double?
    let rankLabel: String
    /// The ranks' heartbeats (MPI), served on every wake-up and probed on a stall.
    let comm: Communicator?
    /// What to do on a stall (tests replace the exit).
    var onStall: (String) -> Void = { message in
        FileHandle.standardError.write(Data(message.utf8))
        _exit(1)
    }

    /// `timeout`: seconds, or nil for the automatic bound.
    public init(timeout: Double?, comm: Communicator? = nil, rank: Int, ranks: Int) {
        fixedTimeout = timeout
        self.comm = ranks > 1 ? comm : nil
        rankLabel = ranks > 1 ? "rank \(rank): " : ""
        // The thread holds `self` until `close` (never a dangling reference to a freed watchdog).
        let t = Thread { self.watch() }
        t.name = "reid-dist watchdog"
        t.start()
    }

    /// The bound for the next step.
    var limit: Double {
        if let fixedTimeout { return fixedTimeout }
        guard !durations.isEmpty else { return 900 }
        let median = durations.sorted()[durations.count / 2]
        return Swift.max(120, 30 * median)
    }

    /// A step (named for the message) begins; or, with `step` false, another stretch every rank
    /// enters together and that must not hang either (the collective at an epoch's end), timed
    /// with the same bound but not counted among the steps the automatic bound is made of.
    public func arm(_ what: @autoclosure () -> String, step: Bool = true) {
        cond.lock(); armedAt = Profile.now(); label = what(); armedStep = step; cond.unlock()
    }

    /// The step (or stretch) ended.
    public func disarm() {
        cond.lock()
        if let a = armedAt, armedStep { durations.append(Profile.now() - a); if durations.count > 200 { durations.removeFirst(100) } }
        armedAt = nil
        cond.unlock()
    }

    public func close() { cond.lock(); stopping = true; cond.broadcast(); cond.unlock() }

    private func watch() {
        cond.lock()
        while !stopping {
            _ = cond.wait(until: Date(timeIntervalSinceNow: 0.5))
            if let a = armedAt, Profile.now() - a > limit {
                let elapsed = Profile.now() - a, what = label, bound = limit
                armedAt = nil
                cond.unlock()
                onStall(String(format: "%@error: no progress for %.0f s in %@ (train.step_timeout_s %.0f s): %@; ending the job. "
                               + "The last checkpoint is whole: continue with --resume auto\n", rankLabel, elapsed, what, bound, suspects()))
                cond.lock()
            } else if let comm {
                cond.unlock(); comm.heartbeatServe(); cond.lock()
            }
        }
        cond.unlock()
    }

    /// Which ranks do not answer a heartbeat within 3 s (probed on a thread of its own, given
    /// at most 5 s, in case MPI itself is stuck).
    func suspects() -> String {
        let generic = "a rank stopped (the one that prints no such line), a link is down or a file system hangs"
        guard let comm else { return "a file system or device hangs, or the process was stopped" }
        // Shared with the probing thread, which may outlive this call when MPI is stuck.
        final class Box: @unchecked Sendable { let cond = NSCondition(); var ranks: [Int]?; var done = false }
        let box = Box()
        let t = Thread {
            let r = comm.unresponsiveRanks(within: 3)
            box.cond.lock(); box.ranks = r; box.done = true; box.cond.broadcast(); box.cond.unlock()
        }
        t.start()
        box.cond.lock()
        let deadline = Date(timeIntervalSinceNow: 5)
        while !box.done && box.cond.wait(until: deadline) {}
        let r = box.ranks
        box.cond.unlock()
        guard let r else { return generic }
        if r.isEmpty { return "every rank answers its heartbeat, so the step itself is stuck (a hung file system, a stalled collective)" }
        return "rank\(r.count > 1 ? "s" : "") \(r.map(String.init).joined(separator: ", ")) do\(r.count > 1 ? "" : "es") not answer (stopped, or its link is down)"
    }
}
