// safetensors reading and writing, following the format exactly:
// https://github.com/huggingface/safetensors#format
//   8 bytes: N, little-endian u64, the header size
//   N bytes: a JSON object {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}
//   rest:    the byte buffer; offsets are relative to it, and together they
//            cover it exactly, with no holes and no overlaps.
// Every fault in a file is reported with its path and what is wrong; nothing
// is read outside the file.
import Foundation

public enum DType: String, CaseIterable {
    case F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL
    public var size: Int {
        switch self {
        case .F64, .I64: return 8
        case .F32, .I32: return 4
        case .F16, .BF16, .I16: return 2
        case .I8, .U8, .BOOL: return 1
        }
    }
}

public struct SafeTensorsError: Error, CustomStringConvertible {
    public let path: String, reason: String
    public init(_ path: String, _ reason: String) {
        self.path = path
        self.reason = reason
    }
    public var description: String { "\(path): \(reason)" }
}

/// One tensor of a file: its dtype, shape and byte range within the data buffer.
public struct TensorInfo: Equatable {
    public let dtype: DType, shape: [Int], begin: Int, end: Int
    public var count: Int { shape.reduce(1, *) }
}

/// A parsed, validated safetensors file. Opening one reads only its header;
/// tensors are read on demand, each straight into its destination.
public struct SafeTensorsFile {
    public let path: String
    public let tensors: [String: TensorInfo]
    public let metadata: [String: String]
    enum Source {
        case file
        case memory(Data)
    }
    let source: Source
    let dataStart: Int

    /// Refuses headers above this size, as the reference implementation does.
    public static let maxHeader = 100_000_000

    public init(path: String) throws {
        func fail(_ r: String) -> SafeTensorsError { SafeTensorsError(path, r) }
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw fail("cannot open (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw fail("cannot stat (\(String(cString: strerror(errno))))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw fail("not a regular file") }
        let size = Int(st.st_size)
        guard size >= 8 else { throw fail("file is \(size) bytes, shorter than the 8-byte header length") }
        var lenBytes = [UInt8](repeating: 0, count: 8)
        guard preadFully(fd, &lenBytes, 8, 0) else { throw fail("cannot read the header length") }
        let n = SafeTensorsFile.littleEndian64(lenBytes)
        try SafeTensorsFile.checkHeaderLength(n, fileSize: size, fail)
        var hdr = [UInt8](repeating: 0, count: Int(n))
        guard preadFully(fd, &hdr, Int(n), 8) else { throw fail("cannot read the \(n)-byte header") }
        (tensors, metadata) = try SafeTensorsFile.parseHeader(Data(hdr), dataLength: size - 8 - Int(n), fail)
        self.path = path
        source = .file
        dataStart = 8 + Int(n)
    }

    public init(data: Data, path: String = "<memory>") throws {
        func fail(_ r: String) -> SafeTensorsError { SafeTensorsError(path, r) }
        guard data.count >= 8 else { throw fail("file is \(data.count) bytes, shorter than the 8-byte header length") }
        let n = SafeTensorsFile.littleEndian64(Array(data.prefix(8)))
        try SafeTensorsFile.checkHeaderLength(n, fileSize: data.count, fail)
        let hdr = data.subdata(in: (data.startIndex + 8)..<(data.startIndex + 8 + Int(n)))
        (tensors, metadata) = try SafeTensorsFile.parseHeader(hdr, dataLength: data.count - 8 - Int(n), fail)
        self.path = path
        source = .memory(data)
        dataStart = 8 + Int(n)
    }

    static func littleEndian64(_ b: [UInt8]) -> UInt64 {
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(b[i]) << (8 * UInt64(i)) }
        return n
    }

    static func checkHeaderLength(_ n: UInt64, fileSize: Int, _ fail: (String) -> SafeTensorsError) throws {
        let kind = otherKind(n)
        guard n <= UInt64(maxHeader) else {
            throw fail(
                kind.map { "not a safetensors file: it starts like \($0)" }
                    ?? "header length \(n) exceeds the \(maxHeader)-byte limit")
        }
        guard Int(n) <= fileSize - 8 else {
            throw fail(
                kind.map { "not a safetensors file: it starts like \($0)" }
                    ?? "header length \(n) runs past the end of the \(fileSize)-byte file (truncated?)")
        }
    }

    /// What a file is when its first 8 bytes (read as the header length) are another format's
    /// signature: the kinds of file a user may give where a safetensors file was expected.
    static func otherKind(_ first8: UInt64) -> String? {
        let b = (0..<8).map { UInt8(truncatingIfNeeded: first8 >> (8 * UInt64($0))) }
        if b.starts(with: [0xFF, 0xD8, 0xFF]) { return "a JPEG image" }
        if b.starts(with: [0x89, 0x50, 0x4E, 0x47]) { return "a PNG image" }
        if b.starts(with: [0x50, 0x4B, 0x03, 0x04]) { return "a zip archive (a torch.save .pth file?)" }
        if b[0] == 0x80, (2...5).contains(b[1]) { return "a Python pickle (a legacy torch.save .pth file?)" }
        if b.allSatisfy({ $0 == 0x09 || $0 == 0x0A || $0 == 0x0D || (0x20..<0x7F).contains($0) }) {
            return "a text file"
        }
        return nil
    }

    static func parseHeader(_ hdr: Data, dataLength dataLen: Int, _ fail: (String) -> SafeTensorsError) throws
        -> ([String: TensorInfo], [String: String])
    {
        guard let first = hdr.first, first == UInt8(ascii: "{") else { throw fail("header does not start with '{'") }
        let json: Any
        do { json = try JSONSerialization.jsonObject(with: hdr) } catch { throw fail("header is not valid JSON") }
        guard let obj = json as? [String: Any] else { throw fail("header is not a JSON object") }
        var meta: [String: String] = [:]
        var infos: [String: TensorInfo] = [:]
        for (name, value) in obj {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else { throw fail("__metadata__ is not an object of strings") }
                for (k, v) in m {
                    guard let s = v as? String else { throw fail("__metadata__[\(k)] is not a string") }
                    meta[k] = s
                }
                continue
            }
            let shown = name.utf8.count > 100 ? String(name.prefix(100)) + "..." : name
            guard let e = value as? [String: Any] else { throw fail("tensor '\(shown)': entry is not an object") }
            guard let ds = e["dtype"] as? String else { throw fail("tensor '\(shown)': missing dtype") }
            guard let dt = DType(rawValue: ds) else {
                throw fail("tensor '\(shown)': unsupported dtype \(ds.prefix(20))")
            }
            guard let shapeAny = e["shape"] as? [Any] else { throw fail("tensor '\(shown)': missing shape") }
            var shape: [Int] = []
            var elems = 1
            for d in shapeAny {
                guard let v = nonNegativeInt(d) else {
                    if let n = d as? NSNumber, n.doubleValue >= 9.0e15 {
                        throw fail("tensor '\(shown)': shape has a dimension of \(n), too large for any tensor")
                    }
                    throw fail(
                        "tensor '\(shown)': shape \(shapeAny.prefix(8).map { "\($0)" })\(shapeAny.count > 8 ? "..." : "") has a non-integer or negative dimension"
                    )
                }
                shape.append(v)
                let (p, o) = elems.multipliedReportingOverflow(by: v)
                guard !o, p <= Int(Int32.max) * 64 else { throw fail("tensor '\(shown)': shape \(shape) is too large") }
                elems = p
            }
            guard let offs = e["data_offsets"] as? [Any], offs.count == 2,
                let b = nonNegativeInt(offs[0]), let en = nonNegativeInt(offs[1])
            else { throw fail("tensor '\(shown)': data_offsets must be two non-negative integers") }
            guard b <= en else { throw fail("tensor '\(shown)': data_offsets [\(b), \(en)] are reversed") }
            guard en <= dataLen else {
                throw fail(
                    "tensor '\(shown)': data_offsets end \(en) is past the \(dataLen)-byte data buffer (truncated?)")
            }
            guard en - b == elems * dt.size else {
                throw fail(
                    "tensor '\(shown)': \(en - b) bytes for shape \(shape) of \(dt.rawValue) (needs \(elems * dt.size))"
                )
            }
            infos[name] = TensorInfo(dtype: dt, shape: shape, begin: b, end: en)
        }
        // The ranges, sorted, must tile [0, dataLen) exactly.
        var pos = 0
        for (name, t) in infos.sorted(by: { ($0.value.begin, $0.value.end) < ($1.value.begin, $1.value.end) }) {
            if t.begin < pos { throw fail("tensor '\(name)': data overlaps the previous tensor at byte \(t.begin)") }
            if t.begin > pos { throw fail("tensor '\(name)': hole in the data buffer before byte \(t.begin)") }
            pos = t.end
        }
        guard pos == dataLen else {
            throw fail("data buffer has \(dataLen - pos) trailing bytes not covered by any tensor")
        }
        return (infos, meta)
    }

    static func nonNegativeInt(_ v: Any) -> Int? {
        guard let num = v as? NSNumber else { return nil }
        // Reject booleans and fractional numbers hiding as NSNumber.
        if String(cString: num.objCType) == "c" { return nil }
        let d = num.doubleValue
        guard d >= 0, d == d.rounded(), d < 9.0e15 else { return nil }
        return num.intValue
    }

    public func info(_ name: String) throws -> TensorInfo {
        guard let t = tensors[name] else { throw SafeTensorsError(path, "no tensor named '\(name)'") }
        return t
    }

    /// Reads the raw bytes of `name` into `dst`, which must hold `end - begin` bytes.
    public func read(_ name: String, into dst: UnsafeMutableRawPointer) throws {
        let t = try info(name)
        let count = t.end - t.begin
        switch source {
        case .memory(let data):
            data.withUnsafeBytes { raw in dst.copyMemory(from: raw.baseAddress! + dataStart + t.begin, byteCount: count)
            }
        case .file:
            let fd = open(path, O_RDONLY)
            guard fd >= 0 else { throw SafeTensorsError(path, "cannot reopen (\(String(cString: strerror(errno))))") }
            defer { close(fd) }
            guard preadFully(fd, dst, count, dataStart + t.begin) else {
                throw SafeTensorsError(path, "tensor '\(name)': read failed (file changed or truncated?)")
            }
        }
    }

    /// Reads an F32 tensor straight into `dst` (count elements).
    public func readFloats(_ name: String, into dst: UnsafeMutablePointer<Float>) throws {
        let t = try info(name)
        guard t.dtype == .F32 else {
            throw SafeTensorsError(path, "tensor '\(name)' is \(t.dtype.rawValue), expected F32")
        }
        try read(name, into: UnsafeMutableRawPointer(dst))
    }

    /// The tensor as Float32 values (F32 only).
    public func floats(_ name: String) throws -> [Float] {
        let t = try info(name)
        var out = [Float](repeating: 0, count: t.count)
        try out.withUnsafeMutableBufferPointer { try readFloats(name, into: $0.baseAddress!) }
        return out
    }

    /// The tensor as Int64 values (I64 or I32).
    public func int64s(_ name: String) throws -> [Int64] {
        let t = try info(name)
        switch t.dtype {
        case .I64:
            var out = [Int64](repeating: 0, count: t.count)
            try out.withUnsafeMutableBytes { try read(name, into: $0.baseAddress!) }
            return out.map { Int64(littleEndian: $0) }
        case .I32:
            var out = [Int32](repeating: 0, count: t.count)
            try out.withUnsafeMutableBytes { try read(name, into: $0.baseAddress!) }
            return out.map { Int64(Int32(littleEndian: $0)) }
        default:
            throw SafeTensorsError(path, "tensor '\(name)' is \(t.dtype.rawValue), expected I64")
        }
    }
}

/// pread until `count` bytes are in, or false on error or end of file.
func preadFully(_ fd: Int32, _ dst: UnsafeMutableRawPointer, _ count: Int, _ offset: Int) -> Bool {
    var done = 0
    while done < count {
        let r = pread(fd, dst + done, count - done, off_t(offset + done))
        if r < 0 && errno == EINTR { continue }
        if r <= 0 { return false }
        done += r
    }
    return true
}

/// A tensor to write: name, dtype, shape and its little-endian bytes.
public struct TensorRecord {
    public let name: String, dtype: DType, shape: [Int], data: Data
    public init(_ name: String, floats: UnsafeBufferPointer<Float>, shape: [Int]) {
        precondition(floats.count == shape.reduce(1, *))
        self.name = name
        dtype = .F32
        self.shape = shape
        data = Data(buffer: floats)
    }
    public init(_ name: String, floats: [Float], shape: [Int]) {
        self = floats.withUnsafeBufferPointer { TensorRecord(name, floats: $0, shape: shape) }
    }
    public init(_ name: String, int64s: [Int64], shape: [Int]) {
        precondition(int64s.count == shape.reduce(1, *))
        self.name = name
        dtype = .I64
        self.shape = shape
        data = int64s.withUnsafeBufferPointer { Data(buffer: $0) }
    }
}

public enum SafeTensors {
    /// Serialises tensors (in name order) and metadata into safetensors bytes.
    /// The 8-byte length and the JSON header (padded to 8 bytes), tensors in name order.
    static func header(_ sorted: [TensorRecord], metadata: [String: String]) -> Data {
        var header: [String] = []
        if !metadata.isEmpty {
            let items = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
            header.append("\"__metadata__\":{\(items.joined(separator: ","))}")
        }
        var off = 0
        for t in sorted {
            let shape = t.shape.map(String.init).joined(separator: ",")
            header.append(
                "\(jsonString(t.name)):{\"dtype\":\"\(t.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(off),\(off + t.data.count)]}"
            )
            off += t.data.count
        }
        var json = Array(("{" + header.joined(separator: ",") + "}").utf8)
        while json.count % 8 != 0 { json.append(UInt8(ascii: " ")) } // align the data buffer
        var out = Data(capacity: 8 + json.count)
        var n = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        out.append(contentsOf: json)
        return out
    }

    /// Serialises tensors (in name order) and metadata into safetensors bytes.
    public static func encode(_ tensors: [TensorRecord], metadata: [String: String] = [:]) -> Data {
        let sorted = tensors.sorted { $0.name < $1.name }
        var out = header(sorted, metadata: metadata)
        for t in sorted { out.append(t.data) }
        return out
    }

    /// Writes atomically (a temporary file in the same folder, fsync, rename),
    /// streaming each tensor's bytes rather than assembling the file in memory.
    public static func write(_ tensors: [TensorRecord], metadata: [String: String] = [:], to path: String) throws {
        let sorted = tensors.sorted { $0.name < $1.name }
        try writeAtomically([header(sorted, metadata: metadata)] + sorted.map(\.data), to: path)
    }

    static func jsonString(_ s: String) -> String {
        var r = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": r += "\\\""
            case "\\": r += "\\\\"
            case "\n": r += "\\n"
            case "\r": r += "\\r"
            case "\t": r += "\\t"
            default:
                if u.value < 0x20 { r += String(format: "\\u%04x", u.value) } else { r.unicodeScalars.append(u) }
            }
        }
        return r + "\""
    }
}
