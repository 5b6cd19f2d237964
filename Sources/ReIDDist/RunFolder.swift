// The run folder: one job at a time, and where a training starts.
//
// Rank 0 holds an exclusive lock (flock) on <run_dir>/.lock for the job's
// life; the kernel releases it when the process dies, however it dies. A
// second job started into the same folder (a Slurm resubmission while the
// first still runs, say) stops at once naming the holder's host and pid.
//
// A run folder that already holds a run is never overwritten: a fresh start
// there is refused unless `--restart` moves the old run aside, and
// `--resume auto` continues from the newest checkpoint that verifies.
import Foundation
import ReIDCore

public final class RunLock {
    public let path: String
    private var fd: Int32 = -1

    /// Takes the lock of `runDir` (creating the folder), or throws naming the holder.
    public init(runDir: String) throws {
        path = (runDir as NSString).appendingPathComponent(".lock")
        try createFolder(runDir, what: "train.run_dir")
        try acquire()
    }

    public var held: Bool { fd >= 0 }

    public func acquire() throws {
        guard fd < 0 else { return }
        let f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard f >= 0 else {
            throw ConfigError("\(path): cannot open the run folder's lock: \(String(cString: strerror(errno)))")
        }
        guard flock(f, LOCK_EX | LOCK_NB) == 0 else {
            let why = errno
            let holder =
                (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
                ?? ""
            close(f)
            guard why == EWOULDBLOCK else {
                throw ConfigError("\(path): cannot lock: \(String(cString: strerror(why)))")
            }
            throw ConfigError(
                "\((path as NSString).deletingLastPathComponent): another job is training into this run folder"
                    + (holder.isEmpty ? "" : " (\(holder))") + "; wait for it to end, or choose another train.run_dir")
        }
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count - 1)
        let text = "host \(String(cString: host)), pid \(getpid())\n"
        _ = ftruncate(f, 0)
        _ = text.withCString { pwrite(f, $0, strlen($0), 0) }
        fd = f
    }

    /// Releases the lock (also done by the kernel when the process ends).
    public func release() {
        guard fd >= 0 else { return }
        _ = flock(fd, LOCK_UN)
        close(fd)
        fd = -1
    }

    deinit { release() }
}

/// How a training begins in its run folder.
public enum StartMode: Equatable {
    /// A new run: refused when the folder already holds one.
    case fresh
    /// Continue: "auto" (this run folder's newest checkpoint that verifies), or a checkpoint or run folder.
    case resume(String)
    /// Move the folder's previous run aside (never deleted), then start anew.
    case restart
}

public enum RunFolder {
    /// Whether the folder already holds a run's results: checkpoints or logged metrics.
    public static func holdsRun(_ runDir: String) -> String? {
        let fm = FileManager.default
        let ck = Checkpoint.folder(runDir)
        if let names = try? fm.contentsOfDirectory(atPath: ck),
            let newest = names.filter({ $0.hasPrefix("epoch-") }).sorted().last
        {
            return "checkpoints up to \(newest)"
        }
        let metrics = (runDir as NSString).appendingPathComponent("metrics.jsonl")
        if let a = try? fm.attributesOfItem(atPath: metrics), (a[.size] as? Int ?? 0) > 0 {
            return "a metrics.jsonl of an earlier run"
        }
        return nil
    }

    /// Moves everything in `runDir` but its lock into a sibling folder `<run_dir>.old-<time>`; returns that folder.
    public static func moveAside(_ runDir: String) throws -> String {
        let fm = FileManager.default
        let f = DateFormatter()
        f.dateFormat = "yyyyMMdd-HHmmss"
        let base = (runDir.hasSuffix("/") ? String(runDir.dropLast()) : runDir) + ".old-" + f.string(from: Date())
        var dest = base, k = 1
        while fm.fileExists(atPath: dest) {
            k += 1
            dest = base + "-\(k)"
        }
        try createFolder(dest, what: "the previous run's new place")
        for name in try fm.contentsOfDirectory(atPath: runDir) where name != ".lock" {
            let from = (runDir as NSString).appendingPathComponent(name),
                to = (dest as NSString).appendingPathComponent(name)
            guard rename(from, to) == 0 else {
                throw ConfigError("\(from): cannot move it to \(dest): \(String(cString: strerror(errno)))")
            }
        }
        return dest
    }
}
