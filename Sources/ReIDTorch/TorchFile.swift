// State dicts written by torch.save, read with no Python: the zip format
// (PyTorch >= 1.6: <name>/data.pkl beside <name>/data/<key>, one entry per
// storage) through ZIPFoundation, and the legacy format (a magic number,
// protocol and system-info pickles, the state dict's pickle, the list of
// storage keys, then each storage as an int64 element count and its bytes).
// Both pickles go through the restricted Unpickler: no code from the file runs.
import Foundation
import ReIDCore
import ZIPFoundation

public enum TorchFile {
    /// Most elements a file's tensors may hold together unless the caller says otherwise
    /// (2^30 floats: 4 GB, more than any ResNet; the model loader passes its own size).
    public static let defaultElementBudget = 1 << 30

    /// True when the file starts like a torch.save file (zip, or a legacy pickle of protocol 2 to 5),
    /// not like safetensors.
    public static func looks(_ path: String) -> Bool {
        guard InputFile.problem(path) == nil, let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        return kind([UInt8](h.readData(ofLength: 4))) != nil
    }

    enum Kind { case zip, legacy }
    static func kind(_ b: [UInt8]) -> Kind? {
        if b.starts(with: [0x50, 0x4B, 0x03, 0x04]) { return .zip }
        if b.count >= 2, b[0] == 0x80, (2...5).contains(b[1]) { return .legacy }
        return nil
    }

    /// The state dict's tensors, as float32 (floating types) or int64 (integer types, e.g. num_batches_tracked).
    /// `elementBudget` bounds the elements of all tensors together (checked before anything is
    /// allocated for them); the file itself may be at most 16 bytes an element of that budget.
    public static func read(_ path: String, elementBudget: Int = defaultElementBudget) throws -> [TensorRecord] {
        let budget = Budget(elements: Swift.max(elementBudget, 0))
        let fileLimit = budget.bytes
        let data: Data
        do { data = try InputFile.read(path, limit: fileLimit, what: "a torch.save file for this model") } catch let e
            as InputFileError
        {
            throw TorchFileError(path, e.reason)
        }
        let bytes = [UInt8](data)
        switch kind(Array(bytes.prefix(4))) {
        case .zip: return try readZip(path, budget)
        case .legacy: return try readLegacy(bytes, path: path, budget)
        case nil: throw TorchFileError(path, "not a torch.save file (neither a zip archive nor a pickle)")
        }
    }

    /// A legacy-format file's bytes (for tests and fuzzing; `path` names them in errors).
    static func readLegacy(bytes: [UInt8], path: String, elementBudget: Int = defaultElementBudget) throws
        -> [TensorRecord]
    {
        try readLegacy(bytes, path: path, Budget(elements: elementBudget))
    }

    /// What a file may hold: elements in all (left to spend), and bytes inflated from its archive.
    final class Budget {
        var elements: Int
        let bytes: Int
        var inflated = 0
        init(elements: Int) {
            self.elements = elements
            let (b, o) = elements.multipliedReportingOverflow(by: 16)
            bytes = o ? Int.max : Swift.max(b, 1 << 20)
        }
    }

    /// A name from the file, cut for a message.
    static func short(_ name: String) -> String { name.utf8.count > 100 ? String(name.prefix(100)) + "..." : name }

    static func readZip(_ path: String, _ budget: Budget) throws -> [TensorRecord] {
        let archive: Archive
        do { archive = try Archive(url: URL(fileURLWithPath: path), accessMode: .read) } catch {
            throw TorchFileError(path, "not a readable zip archive (truncated or damaged?): \(error)")
        }
        let pickles = archive.filter { $0.path.hasSuffix("/data.pkl") || $0.path == "data.pkl" }
        guard pickles.count == 1 else {
            throw TorchFileError(path, "expected one data.pkl in the archive, found \(pickles.count)")
        }
        let prefix = String(pickles[0].path.dropLast("data.pkl".count))
        // Every entry is inflated only up to its declared size, and all of them together only up
        // to the budget's bytes: a small archive cannot inflate into gigabytes.
        struct TooLarge: Error {}
        func contents(_ entry: Entry) throws -> [UInt8] {
            let declared = entry.uncompressedSize
            guard declared <= UInt64(budget.bytes - budget.inflated) else {
                throw TorchFileError(
                    path,
                    "\(short(entry.path)) declares \(declared) bytes, more than this model's weights may take (\(budget.bytes) bytes in all)"
                )
            }
            var out: [UInt8] = []
            out.reserveCapacity(Int(declared))
            do {
                _ = try archive.extract(entry, skipCRC32: false) { chunk in
                    guard out.count + chunk.count <= Int(declared) else { throw TooLarge() }
                    out += chunk
                }
            } catch is TooLarge {
                throw TorchFileError(
                    path,
                    "\(short(entry.path)) inflates past its declared \(declared) bytes (a damaged or hostile archive)")
            } catch {
                throw TorchFileError(
                    path, "cannot read \(short(entry.path)) from the archive (truncated or damaged?): \(error)")
            }
            budget.inflated += out.count
            return out
        }
        var u = Unpickler(try contents(pickles[0]), path: path + ":" + pickles[0].path)
        let dict = try stateDict(try u.load(), path: path)
        var storages: [String: [UInt8]] = [:]
        return try dict.map { name, t in
            if storages[t.storage.key] == nil {
                guard let e = archive[prefix + "data/" + t.storage.key] else {
                    throw TorchFileError(
                        path, "tensor '\(short(name))': storage \(short(t.storage.key)) is missing from the archive")
                }
                storages[t.storage.key] = try contents(e)
            }
            return try record(name, t, storages[t.storage.key]![...], path: path, budget)
        }
    }

    static func readLegacy(_ bytes: [UInt8], path: String, _ budget: Budget) throws -> [TensorRecord] {
        var u = Unpickler(bytes, path: path)
        guard case .bytes(let magic) = try u.load(),
            magic == Data([0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19])
        else {
            throw TorchFileError(path, "a pickle, but not one written by torch.save (no magic number)")
        }
        guard case .int(1001) = try u.load() else {
            throw TorchFileError(path, "unknown torch.save legacy protocol version")
        }
        if case .dict(let info) = try u.load(),
            let le = info.first(where: {
                if case .string("little_endian") = $0.0 { return true }
                return false
            }),
            case .bool(false) = le.1
        {
            throw TorchFileError(path, "written on a big-endian machine: not supported")
        }
        let dict = try stateDict(try u.load(), path: path)
        guard
            let keys = try u.load().items?.compactMap({ v -> String? in
                if case .string(let s) = v { return s }
                return nil
            })
        else {
            throw TorchFileError(path, "malformed legacy file: no storage key list")
        }
        var sizes: [String: Int] = [:]
        for (_, t) in dict { sizes[t.storage.key] = t.storage.dtype.size }
        var storages: [String: ArraySlice<UInt8>] = [:]
        var pos = u.pos
        for key in keys {
            guard pos + 8 <= bytes.count else {
                throw TorchFileError(path, "the file ends before storage \(short(key)) (truncated?)")
            }
            var n = 0
            for i in 0..<8 { n |= Int(bytes[pos + i]) << (8 * i) }
            let size = sizes[key] ?? 1
            pos += 8
            let (length, o) = n.multipliedReportingOverflow(by: size)
            guard n >= 0, !o, length <= bytes.count - pos else {
                throw TorchFileError(path, "the file ends inside storage \(short(key)) (truncated?)")
            }
            storages[key] = bytes[pos..<(pos + length)]
            pos += length
        }
        return try dict.map { name, t in
            guard let s = storages[t.storage.key] else {
                throw TorchFileError(path, "tensor '\(short(name))': storage \(short(t.storage.key)) is missing")
            }
            return try record(name, t, s, path: path, budget)
        }
    }

    /// The (name, tensor) pairs of a state dict: the pickle's top dict, or its "state_dict"/"model" entry.
    static func stateDict(_ v: PickleValue, path: String) throws -> [(String, TensorRef)] {
        guard case .dict(let items) = v else { throw TorchFileError(path, "the pickle holds no dictionary of tensors") }
        for wrapper in ["state_dict", "model"] {
            if let inner = items.first(where: {
                if case .string(wrapper) = $0.0 { return true }
                return false
            }), case .dict = inner.1 {
                return try stateDict(inner.1, path: path)
            }
        }
        return try items.map { k, v in
            guard case .string(let name) = k else {
                throw TorchFileError(path, "a state dict key that is not a string: \(k.brief)")
            }
            guard case .tensor(let t) = v else { throw TorchFileError(path, "'\(short(name))' is not a tensor") }
            return (name, t)
        }
    }

    /// Where each of a view's `count` elements lies in its storage of `available` elements: nil for
    /// a contiguous view (element i at offset + i, nearly always), else a table (a transposed view,
    /// say). The view's last element is checked to lie inside the storage first, without overflow,
    /// so every position in the table does too.
    static func storagePositions(
        _ t: TensorRef, count: Int, available: Int, _ bad: (String) -> TorchFileError
    ) throws -> [Int]? {
        guard count > 0 else { return nil }
        var last = t.offset
        for (d, st) in zip(t.shape, t.stride) {
            let (reach, o1) = (d - 1).multipliedReportingOverflow(by: st)
            let (sum, o2) = last.addingReportingOverflow(reach)
            guard !o1, !o2 else {
                throw bad("its view (offset \(t.offset), strides \(t.stride.prefix(8))) overflows a 64-bit index")
            }
            last = sum
        }
        guard last < available else {
            throw bad(
                "its view (offset \(t.offset), strides \(t.stride.prefix(8))) reaches element \(last), past its storage of \(available)"
            )
        }
        var contiguous = true, expected = 1
        for d in t.shape.indices.reversed() {
            if t.shape[d] != 1 && t.stride[d] != expected { contiguous = false }
            expected *= t.shape[d]
        }
        if contiguous { return nil }
        var table = [Int](repeating: 0, count: count), idx = [Int](repeating: 0, count: t.shape.count)
        for i in 0..<count {
            table[i] = t.offset + zip(idx, t.stride).reduce(0) { $0 + $1.0 * $1.1 }
            var d = t.shape.count - 1
            while d >= 0 {
                idx[d] += 1
                if idx[d] < t.shape[d] { break }
                idx[d] = 0
                d -= 1
            }
        }
        return table
    }

    /// The tensor's elements (its view of the storage, any strides) as float32 or int64.
    /// The view is checked before anything is allocated for it: sizes, strides and offset not
    /// negative, offset + sum((size - 1) * stride) within the storage, all without overflow, and
    /// no more elements than the storage holds (a zero stride would let a tiny storage stand for
    /// billions of values) nor than the budget has left.
    static func record(_ name: String, _ t: TensorRef, _ storage: ArraySlice<UInt8>, path: String, _ budget: Budget)
        throws -> TensorRecord
    {
        let size = t.storage.dtype.size, available = storage.count / size
        func bad(_ why: String) -> TorchFileError {
            TorchFileError(path, "tensor '\(short(name))' (shape \(t.shape.prefix(8))): \(why)")
        }
        guard t.shape.allSatisfy({ $0 >= 0 }), t.stride.allSatisfy({ $0 >= 0 }), t.offset >= 0,
            t.shape.count == t.stride.count
        else {
            throw bad("negative size, stride or offset")
        }
        var count = 1
        for d in t.shape {
            let (c, o) = count.multipliedReportingOverflow(by: d)
            guard !o else { throw bad("more elements than a 64-bit count holds") }
            count = c
        }
        guard count <= available else { throw bad("\(count) elements, more than the \(available) of its storage") }
        guard count <= budget.elements else {
            throw bad("\(count) elements, more than the \(budget.elements) left of what this model's weights may hold")
        }
        budget.elements -= count
        let strided = try storagePositions(t, count: count, available: available, bad)
        let index = (0..<count).lazy.map { strided?[$0] ?? t.offset + $0 }
        let base = storage.startIndex
        func raw(_ i: Int) -> UInt64 {
            var v: UInt64 = 0
            for b in 0..<size { v |= UInt64(storage[base + i * size + b]) << (8 * UInt64(b)) }
            return v
        }
        switch t.storage.dtype {
        case .float32:
            return TensorRecord(name, floats: index.map { Float(bitPattern: UInt32(raw($0))) }, shape: t.shape)
        case .float64:
            return TensorRecord(name, floats: index.map { Float(Double(bitPattern: raw($0))) }, shape: t.shape)
        case .float16:
            return TensorRecord(name, floats: index.map { Float(Float16(bitPattern: UInt16(raw($0)))) }, shape: t.shape)
        case .bfloat16:
            return TensorRecord(name, floats: index.map { Float(bitPattern: UInt32(raw($0)) << 16) }, shape: t.shape)
        case .int64: return TensorRecord(name, int64s: index.map { Int64(bitPattern: raw($0)) }, shape: t.shape)
        default:
            throw TorchFileError(
                path, "tensor '\(short(name))' has dtype \(t.storage.dtype), which a ResNet's weights never use")
        }
    }
}
