// Preemption: SIGTERM, SIGINT and SIGUSR1 (what Slurm sends before a time
// limit with --signal, and what `scancel --signal` delivers) ask the training
// to stop. The handler only sets a flag; every rank reads it after each step,
// the ranks agree in the step's own all-reduce, finish that step together,
// rank 0 writes a checkpoint of that exact step, and the job exits with
// status `exitStatus`. A second signal of the same kind ends the process at
// once (the handler restores the default action after the first).
import Foundation

public enum StopSignal {
    /// Exit status of a run stopped by a signal after its checkpoint was written.
    public static let exitStatus: Int32 = 3
    public static let signals: [Int32] = [SIGTERM, SIGINT, SIGUSR1]

    /// The signal received (0: none). Written only by the handler.
    nonisolated(unsafe) static let received: UnsafeMutablePointer<sig_atomic_t> = {
        let p = UnsafeMutablePointer<sig_atomic_t>.allocate(capacity: 1)
        p.initialize(to: 0)
        return p
    }()

    /// Installs the handlers (idempotent).
    public static func install() {
        _ = received
        for s in signals {
            signal(s) { sig in
                StopSignal.received.pointee = sig
                signal(sig, SIG_DFL)
            }
        }
    }

    /// The pending request, if any: the signal's name.
    public static var pending: String? {
        let s = received.pointee
        guard s != 0 else { return nil }
        return [SIGTERM: "SIGTERM", SIGINT: "SIGINT", SIGUSR1: "SIGUSR1"][s] ?? "signal \(s)"
    }

    /// Forgets a request (tests).
    public static func reset() { received.pointee = 0 }
}
