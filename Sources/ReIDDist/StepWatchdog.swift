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
    private var durations: [Double] = []
    private var stopping = false
    let fixedTimeout: Double?
    let rankLabel: String
    /// What to do on a stall (tests replace the exit).
    var onStall: (String) -> Void = { message in
        FileHandle.standardError.write(Data(message.utf8))
        _exit(1)
    }

    /// `timeout`: seconds, or nil for the automatic bound.
    public init(timeout: Double?, rank: Int, ranks: Int) {
        fixedTimeout = timeout
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

    /// A step (named for the message) begins.
    public func arm(_ what: @autoclosure () -> String) {
        cond.lock(); armedAt = Profile.now(); label = what(); cond.unlock()
    }

    /// The step ended.
    public func disarm() {
        cond.lock()
        if let a = armedAt { durations.append(Profile.now() - a); if durations.count > 200 { durations.removeFirst(100) } }
        armedAt = nil
        cond.unlock()
    }

    public func close() { cond.lock(); stopping = true; cond.broadcast(); cond.unlock() }

    private func watch() {
        cond.lock()
        while !stopping {
            _ = cond.wait(until: Date(timeIntervalSinceNow: 0.5))
            if let a = armedAt, Profile.now() - a > limit {
                let message = String(format: "%@error: no progress for %.0f s in %@ (train.step_timeout_s %.0f s): a rank stopped "
                                     + "(the one that prints no such line), a link is down or a file system hangs; ending the job. "
                                     + "The last checkpoint is whole: continue with --resume auto\n",
                                     rankLabel, Profile.now() - a, label, limit)
                armedAt = nil
                cond.unlock()
                onStall(message)
                cond.lock()
            }
        }
        cond.unlock()
    }
}
