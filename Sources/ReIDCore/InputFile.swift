// Reading files that come from outside (images, list files, configs, checkpoints) with the
// checks every reader needs before it opens them: a regular file (a FIFO would block the
// reader for ever, a device would stream without end), a size limit checked before any
// byte is read, and text split into lines as the world writes them (LF or CRLF, an
// optional UTF-8 byte-order mark, no NUL bytes, lines of bounded length, valid UTF-8).
// Every error names the file, and the line where there is one, in a bounded message.
import Foundation

public struct InputFileError: Error, CustomStringConvertible {
    public let path: String, reason: String
    public init(_ path: String, _ reason: String) {
        self.path = path
        self.reason = reason
    }
    public var description: String { "\(path): \(reason)" }
}

public enum InputFile {
    /// What stands at `path` when it is not a readable regular file, or nil when it is one.
    /// Follows symbolic links (datasets are often linked into place).
    public static func problem(_ path: String) -> String? {
        if path.utf8.contains(0) { return "the path contains a NUL byte" }
        var st = stat()
        guard stat(path, &st) == 0 else {
            return errno == ENOENT ? "does not exist" : "cannot be read (\(String(cString: strerror(errno))))"
        }
        return kindProblem(st.st_mode)
    }

    /// Why a file of this mode is not read, or nil for a regular file.
    static func kindProblem(_ mode: mode_t) -> String? {
        switch mode & S_IFMT {
        case S_IFREG: return nil
        case S_IFDIR: return "is a directory, not a regular file"
        case S_IFIFO: return "is a FIFO (named pipe), not a regular file"
        case S_IFCHR, S_IFBLK: return "is a device, not a regular file"
        case S_IFSOCK: return "is a socket, not a regular file"
        default: return "is not a regular file"
        }
    }

    /// The file's bytes: at most `limit`, refused (before reading) when it is larger.
    /// `what` names the kind of file in the message ("a list file").
    public static func read(_ path: String, limit: Int, what: String = "the file") throws -> Data {
        if path.utf8.contains(0) { throw InputFileError(path, "the path contains a NUL byte") }
        // O_NONBLOCK: opening a FIFO does not wait for a writer; the file's kind is then read from the open file.
        let fd = open(path, O_RDONLY | O_NONBLOCK)
        guard fd >= 0 else {
            throw InputFileError(
                path, errno == ENOENT ? "does not exist" : "cannot open (\(String(cString: strerror(errno))))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw InputFileError(path, "cannot stat (\(String(cString: strerror(errno))))")
        }
        if let problem = kindProblem(st.st_mode) { throw InputFileError(path, problem) }
        let size = Int(st.st_size)
        guard size <= limit else {
            throw InputFileError(path, "\(size) bytes, more than the \(limit) bytes \(what) may have")
        }
        var data = Data(count: size)
        var done = 0
        let ok = data.withUnsafeMutableBytes { raw -> Bool in
            guard let base = raw.baseAddress else { return true }
            while done < size {
                let n = pread(fd, base + done, size - done, off_t(done))
                if n < 0, errno == EINTR { continue }
                if n <= 0 { return false }
                done += n
            }
            return true
        }
        guard ok else { throw InputFileError(path, "cannot read (\(String(cString: strerror(errno))))") }
        return data
    }

    /// Lines of a text file: LF or CRLF endings, a leading UTF-8 byte-order mark skipped, a final
    /// line without its newline kept, trailing empty lines dropped. Each line is (its 1-based
    /// number, its text without the ending). Refused, naming the line: a NUL byte, a line of more
    /// than `maxLine` bytes, text that is not UTF-8. The message quotes no more than 80 bytes.
    public static func lines(
        _ path: String, limit: Int = 256 << 20, maxLine: Int = 16_384,
        what: String = "the file"
    ) throws -> [(number: Int, text: String)] {
        let data = try read(path, limit: limit, what: what)
        return try lines(of: data, path: path, maxLine: maxLine)
    }

    /// The same from bytes already read; `path` names them in errors.
    public static func lines(of data: Data, path: String, maxLine: Int = 16_384) throws -> [(number: Int, text: String)]
    {
        let bytes = [UInt8](data)
        var start = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0
        var out: [(number: Int, text: String)] = []
        var number = 1
        while start < bytes.count {
            var end = start
            while end < bytes.count && bytes[end] != 0x0A {
                if bytes[end] == 0 { throw InputFileError(path, "line \(number): a NUL byte (binary data, not text)") }
                end += 1
                if end - start > maxLine {
                    throw InputFileError(
                        path,
                        "line \(number): longer than \(maxLine) bytes (it starts '\(printable(bytes[start..<Swift.min(end, start + 80)]))')"
                    )
                }
            }
            var stop = end
            if stop > start && bytes[stop - 1] == 0x0D { stop -= 1 }
            guard let text = String(validating: bytes[start..<stop], as: UTF8.self) else {
                throw InputFileError(
                    path, "line \(number): not UTF-8 text ('\(printable(bytes[start..<Swift.min(stop, start + 80)]))')")
            }
            out.append((number, text))
            number += 1
            start = end + 1
        }
        while let last = out.last, last.text.isEmpty { out.removeLast() }
        return out
    }

    /// At most 80 bytes, control and non-ASCII bytes shown as \xNN, for quoting bad input in a message.
    public static func printable<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        var s = ""
        for b in bytes.prefix(80) {
            if b >= 0x20 && b < 0x7F {
                s.append(Character(Unicode.Scalar(b)))
            } else {
                s += String(format: "\\x%02x", b)
            }
        }
        return bytes.count > 80 ? s + "... (\(bytes.count) bytes)" : s
    }
}
