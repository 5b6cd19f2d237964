// Files written whole or not at all: a temporary file beside the target,
// fsynced, then renamed over it, so a crash at any moment leaves either the
// old file or the new one. Used for checkpoints, configs, JSON and traces.
// And folders made with an error that names the path and the reason.
import Foundation

/// A file could not be written; names the file and the system's reason.
public struct FileWriteError: Error, CustomStringConvertible {
    public let description: String
    public init(_ path: String, _ reason: String) { description = "\(path): \(reason)" }
}

/// Writes `data` to `path` atomically.
public func writeAtomically(_ data: Data, to path: String) throws { try writeAtomically([data], to: path) }

/// Writes the pieces one after another into a temporary file, fsyncs it and
/// renames it over `path`.
public func writeAtomically(_ pieces: [Data], to path: String) throws {
    let tmp = path + ".tmp-\(getpid())"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw FileWriteError(path, "cannot create \(tmp): \(String(cString: strerror(errno)))") }
    var failure: String?
    for data in pieces where failure == nil {
        data.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let w = Foundation.write(fd, raw.baseAddress! + done, raw.count - done)
                if w < 0 && errno == EINTR { continue }
                if w <= 0 {
                    failure = "write failed: \(w < 0 ? String(cString: strerror(errno)) : "no progress")"
                    break
                }
                done += w
            }
        }
    }
    if failure == nil && fsync(fd) != 0 { failure = "fsync failed: \(String(cString: strerror(errno)))" }
    close(fd)
    if let failure {
        unlink(tmp)
        throw FileWriteError(path, failure)
    }
    guard rename(tmp, path) == 0 else {
        let why = String(cString: strerror(errno))
        unlink(tmp)
        throw FileWriteError(path, "cannot rename \(tmp) into place: \(why)")
    }
}

/// mkdir -p with a one-line error naming the path, what it was for and the system's reason
/// (a file in the way, a read-only mount, no permission), not Foundation's error dump.
public func createFolder(_ path: String, what: String) throws {
    var isDir: ObjCBool = false
    if FileManager.default.fileExists(atPath: path, isDirectory: &isDir) {
        guard isDir.boolValue else { throw FileWriteError(path, "\(what) is a file, not a folder") }
        return
    }
    let parent = (path as NSString).deletingLastPathComponent
    if !parent.isEmpty && parent != path { try createFolder(parent, what: what) }
    guard mkdir(path, 0o755) == 0 || errno == EEXIST else {
        throw FileWriteError(path, "cannot create \(what): \(String(cString: strerror(errno)))")
    }
}
