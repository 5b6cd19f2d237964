// The model's state as PyTorch names it: parameters, running statistics and
// num_batches_tracked, to and from safetensors (what `load_state_dict` reads).

public struct StateDictError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

extension Arena {
    /// Every entry of the state dict as a record (F32 tensors, I64 counters).
    public func stateRecords() -> [TensorRecord] {
        var out: [TensorRecord] = []
        for s in params {
            out.append(
                TensorRecord(
                    s.name, floats: UnsafeBufferPointer(start: value + s.offset, count: s.count), shape: s.shape))
        }
        for s in buffers {
            out.append(
                TensorRecord(
                    s.name, floats: UnsafeBufferPointer(start: buffer + s.offset, count: s.count), shape: s.shape))
        }
        for (i, n) in counterNames.enumerated() { out.append(TensorRecord(n, int64s: [counters[i]], shape: [])) }
        return out
    }

    /// Loads entries named `prefix + name` from `file`. With `strict`, every
    /// entry must be present; `ignore` lists name prefixes in the file to skip
    /// (e.g. torchvision's `fc.`). A file entry that the model lacks is an error
    /// when `strict`. Shapes must match exactly; errors name the tensor.
    public func load(
        from file: SafeTensorsFile, prefix: String = "", strict: Bool = true,
        only: ((String) -> Bool)? = nil
    ) throws {
        var used = Set<String>()
        func want(_ name: String) -> Bool { only?(name) ?? true }
        func fetch(_ name: String, _ shape: [Int]) throws -> [Float]? {
            let key = prefix + name
            guard let info = file.tensors[key] else {
                if strict { throw StateDictError("\(file.path): missing tensor '\(key)'") }
                return nil
            }
            guard info.shape == shape else {
                throw StateDictError("\(file.path): tensor '\(key)' has shape \(info.shape), the model needs \(shape)")
            }
            used.insert(key)
            return try file.floats(key)
        }
        for s in params where want(s.name) {
            if let v = try fetch(s.name, s.shape) { (value + s.offset).update(from: v, count: s.count) }
        }
        for s in buffers where want(s.name) {
            if let v = try fetch(s.name, s.shape) { (buffer + s.offset).update(from: v, count: s.count) }
        }
        for (i, n) in counterNames.enumerated() where want(n) {
            let key = prefix + n
            guard let info = file.tensors[key] else {
                if strict { throw StateDictError("\(file.path): missing tensor '\(key)'") }
                continue
            }
            guard info.count == 1 else { throw StateDictError("\(file.path): tensor '\(key)' must hold one integer") }
            counters[i] = try file.int64s(key)[0]
            used.insert(key)
        }
        if strict {
            let extra = file.tensors.keys.filter {
                $0.hasPrefix(prefix) && !used.contains($0) && want(String($0.dropFirst(prefix.count)))
            }
            if let e = extra.sorted().first {
                throw StateDictError(
                    "\(file.path): unexpected tensor '\(e)' (\(extra.count) in all) that the model does not have")
            }
        }
    }
}

extension GroupedMultiBranchNet {
    /// Loads ImageNet weights saved with torchvision's names (no `backbone.`
    /// prefix; `fc.*` ignored) into the backbone. Every backbone tensor must be
    /// present with the right shape; errors name the tensor and the file.
    public func loadPretrainedBackbone(_ file: SafeTensorsFile) throws {
        let prefix = "backbone."
        let known = Set(arena.params.map(\.name) + arena.buffers.map(\.name) + arena.counterNames)
        for key in file.tensors.keys.sorted() where !key.hasPrefix("fc.") && !known.contains(prefix + key) {
            throw StateDictError(
                "\(file.path): tensor '\(key)' is not part of a ResNet-\(spec.depth) of width \(spec.width)")
        }
        // Model names are "backbone.<torchvision name>"; the file has "<torchvision name>".
        let renamed = try SafeTensorsFile(renaming: file, prefix: prefix)
        do { try arena.load(from: renamed, strict: true, only: { $0.hasPrefix(prefix) }) } catch let e as StateDictError
        {
            // Name the tensor as the file does (without the model's prefix).
            throw StateDictError(e.description.replacingOccurrences(of: "'" + prefix, with: "'"))
        }
    }
}

extension SafeTensorsFile {
    /// The same file with `prefix` put before every tensor name (no data is read).
    init(renaming f: SafeTensorsFile, prefix: String) throws {
        path = f.path
        metadata = f.metadata
        source = f.source
        dataStart = f.dataStart
        tensors = Dictionary(
            uniqueKeysWithValues: f.tensors.filter { !$0.key.hasPrefix("fc.") }.map { (prefix + $0.key, $0.value) })
    }
}
