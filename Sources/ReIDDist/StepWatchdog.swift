// A step that never ends: a rank stopped (SIGSTOP, swapped out), a hung file
// system, a link that went down. MPI waits for ever in such cases while the
// other ranks spin at full CPU. A watchdog thread on every rank times each
// training step; when one takes longer than `train.step_timeout_s` (auto: 30
// times the median step so far, at least 120 s; 900 s before the first step
// has finished, which includes warm-up), it prints which step this rank is
// stuck in and ends the process. While this rank waits on the others (a step,
// the epoch's end, an evaluation and checkpoint, which may rightly take long)
// it also pings them on a heartbeat communicator every third of
// `train.heartbeat_timeout_s`; a rank that has answered none of the pings for
// that long is stopped or cut off, and the job ends the same way, naming it.
// The launcher then ends the job, as it does for a killed rank; the last
// checkpoint is whole and `--resume auto` continues.
// The stalled rank itself cannot report: it is the one missing from the lines.
import Foundation
import ReIDCore

public final class StepWatchdog {
    private let cond = NSCondition()
    private var armedAt: Double?
    private var label = ""
    private var armed = Stretch.step
    private var lastPing = 0.0
    /// Since when some ranks have answered none of the pings, and which.
    private var silentSince: Double?
    private var silent: Set<Int> = []
    /// Stretches ended so far: a ping answered across a disarm says nothing of the next stretch.
    private var ended = 0
    private var durations: [Double] = []
    private var stopping = false, stopped = false
    let fixedTimeout: Double?
    /// Seconds a rank may answer no heartbeat while armed (0: not pinged).
    let heartbeatTimeout: Double
    let rankLabel: String
    /// The ranks' heartbeats (MPI), served on every wake-up.
    let comm: Communicator?
    /// Which ranks do not answer a ping within the given seconds (nil: nobody to ask): while
    /// armed, and on a stall.
    let ping: ((Double) -> [Int]?)?
    /// What to do on a stall (tests replace the exit).
    var onStall: (String) -> Void = { message in
        FileHandle.standardError.write(Data(message.utf8))
        _exit(1)
    }

    /// What is armed: a training step (timed, and its time makes the automatic bound), another
    /// stretch every rank enters together (timed with the same bound, the epoch end's collective),
    /// or one that may rightly take long (an evaluation, a checkpoint): only pinged.
    public enum Stretch { case step, collective, pingedOnly }

    /// What the message tells the user to do next.
    let advice: String

    /// `timeout`: seconds, or nil for the automatic bound. `heartbeatTimeout`: seconds, 0 for none.
    /// `ping` replaces the communicator's heartbeat probe (tests).
    public init(
        timeout: Double?, heartbeatTimeout: Double = 0, comm: Communicator? = nil, rank: Int, ranks: Int,
        advice: String =
            "Continue with --resume auto: from the last checkpoint, which is whole, or from the start if there is none yet",
        ping: ((Double) -> [Int]?)? = nil
    ) {
        fixedTimeout = timeout
        self.advice = advice
        self.heartbeatTimeout = heartbeatTimeout
        let comm = ranks > 1 ? comm : nil
        self.comm = comm
        self.ping = ping ?? comm.map { c in { c.unresponsiveRanks(within: $0) } }
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

    /// A stretch (named for the message) begins.
    public func arm(_ what: @autoclosure () -> String, _ stretch: Stretch = .step) {
        cond.lock()
        armedAt = Profile.now()
        label = what()
        armed = stretch
        cond.unlock()
    }

    /// The stretch ended: every rank it waited on took part, so none is silent.
    public func disarm() {
        cond.lock()
        if let a = armedAt, armed == .step {
            durations.append(Profile.now() - a)
            if durations.count > 200 { durations.removeFirst(100) }
        }
        armedAt = nil
        silentSince = nil
        ended += 1
        cond.unlock()
    }

    /// Stops the watch and waits until its thread has made its last MPI call (a ping in flight
    /// takes at most 3 s): the communicator may be finalised right after.
    public func close() {
        cond.lock()
        stopping = true
        cond.broadcast()
        while !stopped { cond.wait() }
        cond.unlock()
    }

    private func watch() {
        cond.lock()
        while !stopping {
            _ = cond.wait(
                until: Date(timeIntervalSinceNow: heartbeatTimeout > 0 ? Swift.min(0.5, heartbeatTimeout / 6) : 0.5))
            if stopping { break }
            guard let a = armedAt else {
                if let comm {
                    cond.unlock()
                    comm.heartbeatServe()
                    cond.lock()
                }
                continue
            }
            if armed != .pingedOnly, Profile.now() - a > limit {
                let elapsed = Profile.now() - a, what = label, bound = limit
                armedAt = nil
                cond.unlock()
                onStall(
                    String(
                        format:
                            "%@error: no progress for %.0f s in %@ (train.step_timeout_s %.0f s): %@; ending the job. %@\n",
                        rankLabel, elapsed, what, bound, suspects(), advice))
                cond.lock()
            } else if heartbeatTimeout > 0, let ping, Profile.now() - lastPing >= heartbeatTimeout / 3 {
                let t = Profile.now(), stretch = ended
                lastPing = t
                cond.unlock()
                let quiet = ping(Swift.min(3, heartbeatTimeout / 3))
                cond.lock()
                if ended == stretch { heard(quiet ?? [], at: t) }
            } else if let comm {
                cond.unlock()
                comm.heartbeatServe()
                cond.lock()
            }
        }
        stopped = true
        cond.broadcast()
        cond.unlock()
    }

    /// The ranks that did not answer the ping sent at `t` (called with `cond` held): a rank silent
    /// for every ping over `heartbeatTimeout` ends the job.
    private func heard(_ quiet: [Int], at t: Double) {
        guard armedAt != nil, !quiet.isEmpty else {
            silentSince = nil
            return
        }
        let still = silent.intersection(quiet)
        if silentSince == nil || still.isEmpty {
            silentSince = t
            silent = Set(quiet)
        } else {
            silent = still
        }
        guard let since = silentSince, Profile.now() - since >= heartbeatTimeout else { return }
        let r = silent.sorted(), what = label, elapsed = Profile.now() - since
        armedAt = nil
        silentSince = nil
        cond.unlock()
        onStall(
            String(
                format: "%@error: rank%@ %@ answered no heartbeat for %.0f s in %@ (train.heartbeat_timeout_s %.0f s): "
                    + "stopped, or %@ link is down; ending the job. %@\n",
                rankLabel, r.count > 1 ? "s" : "", r.map(String.init).joined(separator: ", "), elapsed, what,
                heartbeatTimeout,
                r.count > 1 ? "their" : "its", advice))
        cond.lock()
    }

    /// Which ranks do not answer a heartbeat within 3 s (probed on a thread of its own, given
    /// at most 5 s, in case MPI itself is stuck).
    func suspects() -> String {
        let generic = "a rank stopped (the one that prints no such line), a link is down or a file system hangs"
        guard let ping else { return "a file system or device hangs, or the process was stopped" }
        // Shared with the probing thread, which may outlive this call when MPI is stuck.
        final class Box: @unchecked Sendable {
            let cond = NSCondition()
            var ranks: [Int]?
            var done = false
        }
        let box = Box()
        let t = Thread {
            let r = ping(3)
            box.cond.lock()
            box.ranks = r
            box.done = true
            box.cond.broadcast()
            box.cond.unlock()
        }
        t.start()
        box.cond.lock()
        let deadline = Date(timeIntervalSinceNow: 5)
        while !box.done && box.cond.wait(until: deadline) {}
        let r = box.ranks
        box.cond.unlock()
        guard let r else { return generic }
        if r.isEmpty {
            return
                "every rank answers its heartbeat, so the step itself is stuck (a hung file system, a stalled collective)"
        }
        return
            "rank\(r.count > 1 ? "s" : "") \(r.map(String.init).joined(separator: ", ")) do\(r.count > 1 ? "" : "es") not answer (stopped, or its link is down)"
    }
}
