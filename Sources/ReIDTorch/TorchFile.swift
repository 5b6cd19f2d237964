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
    /// True when the file starts like a torch.save file (zip or legacy pickle), not like safetensors.
    public static func looks(_ path: String) -> Bool {
        guard let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        let b = [UInt8](h.readData(ofLength: 4))
        return b.starts(with: [0x50, 0x4B, 0x03, 0x04]) || b.starts(with: [0x80, 0x02])
    }

    /// The state dict's tensors, as float32 (floating types) or int64 (integer types, e.g. num_batches_tracked).
    public static func read(_ path: String) throws -> [TensorRecord] {
        guard let data = FileManager.default.contents(atPath: path) else { throw TorchFileError(path, "cannot read the file") }
        let bytes = [UInt8](data)
        if bytes.starts(with: [0x50, 0x4B, 0x03, 0x04]) { return try readZip(path) }
        if bytes.starts(with: [0x80, 0x02]) { return try readLegacy(bytes, path: path) }
        throw TorchFileError(path, "not a torch.save file (neither a zip archive nor a pickle)")
    }

    static func readZip(_ path: String) throws -> [TensorRecord] {
        let archive: Archive
        do { archive = try Archive(url: URL(fileURLWithPath: path), accessMode: .read) } catch {
            throw TorchFileError(path, "not a readable zip archive (truncated or damaged?): \(error)")
        }
        let pickles = archive.filter { $0.path.hasSuffix("/data.pkl") || $0.path == "data.pkl" }
        guard pickles.count == 1 else { throw TorchFileError(path, "expected one data.pkl in the archive, found \(pickles.count)") }
        let prefix = String(pickles[0].path.dropLast("data.pkl".count))
        func contents(_ entry: Entry) throws -> [UInt8] {
            var out: [UInt8] = []
            out.reserveCapacity(Int(entry.uncompressedSize))
            do { _ = try archive.extract(entry) { out += $0 } } catch {
                throw TorchFileError(path, "cannot read \(entry.path) from the archive (truncated or damaged?): \(error)")
            }
            return out
        }
        var u = Unpickler(try contents(pickles[0]), path: path + ":" + pickles[0].path)
        let dict = try stateDict(try u.load(), path: path)
        var storages: [String: [UInt8]] = [:]
        return try dict.map { name, t in
            if storages[t.storage.key] == nil {
                guard let e = archive[prefix + "data/" + t.storage.key] else {
                    throw TorchFileError(path, "tensor '\(name)': storage \(t.storage.key) is missing from the archive")
                }
                storages[t.storage.key] = try contents(e)
            }
            return try record(name, t, storages[t.storage.key]![...], path: path)
        }
    }

    static func readLegacy(_ bytes: [UInt8], path: String) throws -> [TensorRecord] {
        var u = Unpickler(bytes, path: path)
        guard case .bytes(let magic) = try u.load(), magic == Data([0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]) else {
            throw TorchFileError(path, "a pickle, but not one written by torch.save (no magic number)")
        }
        guard case .int(1001) = try u.load() else { throw TorchFileError(path, "unknown torch.save legacy protocol version") }
        if case .dict(let info) = try u.load(),
           let le = info.first(where: { if case .string("little_endian") = $0.0 { return true }; return false }),
           case .bool(false) = le.1 {
            throw TorchFileError(path, "written on a big-endian machine: not supported")
        }
        let dict = try stateDict(try u.load(), path: path)
        guard let keys = try u.load().items?.compactMap({ v -> String? in if case .string(let s) = v { return s }; return nil }) else {
            throw TorchFileError(path, "malformed legacy file: no storage key list")
        }
        var sizes: [String: Int] = [:]
        for (_, t) in dict { sizes[t.storage.key] = t.storage.dtype.size }
        var storages: [String: ArraySlice<UInt8>] = [:]
        var pos = u.pos
        for key in keys {
            guard pos + 8 <= bytes.count else { throw TorchFileError(path, "the file ends before storage \(key) (truncated?)") }
            var n = 0
            for i in 0..<8 { n |= Int(bytes[pos + i]) << (8 * i) }
            let size = sizes[key] ?? 1
            pos += 8
            guard n >= 0, pos + n * size <= bytes.count else { throw TorchFileError(path, "the file ends inside storage \(key) (truncated?)") }
            storages[key] = bytes[pos..<(pos + n * size)]
            pos += n * size
        }
        return try dict.map { name, t in
            guard let s = storages[t.storage.key] else { throw TorchFileError(path, "tensor '\(name)': storage \(t.storage.key) is missing") }
            return try record(name, t, s, path: path)
        }
    }

    /// The (name, tensor) pairs of a state dict: the pickle's top dict, or its "state_dict"/"model" entry.
    static func stateDict(_ v: PickleValue, path: String) throws -> [(String, TensorRef)] {
        guard case .dict(let items) = v else { throw TorchFileError(path, "the pickle holds no dictionary of tensors") }
        for wrapper in ["state_dict", "model"] {
            if let inner = items.first(where: { if case .string(wrapper) = $0.0 { return true }; return false }), case .dict = inner.1 {
                return try stateDict(inner.1, path: path)
            }
        }
        return try items.map { k, v in
            guard case .string(let name) = k else { throw TorchFileError(path, "a state dict key that is not a string: \(k)") }
            guard case .tensor(let t) = v else { throw TorchFileError(path, "'\(name)' is not a tensor") }
            return (name, t)
        }
    }

    /// The tensor's elements (its view of the storage, any strides) as float32 or int64.
    static func record(_ name: String, _ t: TensorRef, _ storage: ArraySlice<UInt8>, path: String) throws -> TensorRecord {
        let size = t.storage.dtype.size, available = storage.count / size
        let count = t.shape.reduce(1, *)
        guard t.shape.allSatisfy({ $0 >= 0 }), t.offset >= 0 else { throw TorchFileError(path, "tensor '\(name)': negative shape or offset") }
        // Element i's position in the storage: offset + i for a contiguous tensor (nearly always);
        // a table only for other strides (a transposed view, say).
        var strided: [Int]? = nil
        if count > 0 {
            let last = t.offset + zip(t.shape, t.stride).reduce(0) { $0 + ($1.0 - 1) * max($1.1, 0) }
            guard last < available, t.stride.allSatisfy({ $0 >= 0 }) else {
                throw TorchFileError(path, "tensor '\(name)' (shape \(t.shape)) reaches past its storage of \(available) elements")
            }
            let contiguous = t.stride == t.shape.indices.map { d in t.shape[(d + 1)...].reduce(1, *) }
            if !contiguous {
                var table = [Int](repeating: 0, count: count), idx = [Int](repeating: 0, count: t.shape.count)
                for i in 0..<count {
                    table[i] = t.offset + zip(idx, t.stride).reduce(0) { $0 + $1.0 * $1.1 }
                    var d = t.shape.count - 1
                    while d >= 0 { idx[d] += 1; if idx[d] < t.shape[d] { break }; idx[d] = 0; d -= 1 }
                }
                strided = table
            }
        }
        let index = (0..<count).lazy.map { strided?[$0] ?? t.offset + $0 }
        let base = storage.startIndex
        func raw(_ i: Int) -> UInt64 {
            var v: UInt64 = 0
            for b in 0..<size { v |= UInt64(storage[base + i * size + b]) << (8 * UInt64(b)) }
            return v
        }
        switch t.storage.dtype {
        case .float32: return TensorRecord(name, floats: index.map { Float(bitPattern: UInt32(raw($0))) }, shape: t.shape)
        case .float64: return TensorRecord(name, floats: index.map { Float(Double(bitPattern: raw($0))) }, shape: t.shape)
        case .float16: return TensorRecord(name, floats: index.map { Float(Float16(bitPattern: UInt16(raw($0)))) }, shape: t.shape)
        case .bfloat16: return TensorRecord(name, floats: index.map { Float(bitPattern: UInt32(raw($0)) << 16) }, shape: t.shape)
        case .int64: return TensorRecord(name, int64s: index.map { Int64(bitPattern: raw($0)) }, shape: t.shape)
        default: throw TorchFileError(path, "tensor '\(name)' has dtype \(t.storage.dtype), which a ResNet's weights never use")
        }
    }
}
