// Checkpoints: one folder per saved epoch under <run_dir>/checkpoints/:
//   model.safetensors      the state dict, with the reference's names
//   optimizer.safetensors  the optimizer's moment buffers
//   state.json             epoch, step, world size, seed, config, metrics,
//                          and the SHA-256 of each file above
// Written into a temporary folder, fsynced, renamed into place; then the
// `latest` pointer file is replaced atomically. A crash at any moment leaves
// the previous checkpoint whole; a checkpoint whose hashes do not match is refused.
import Foundation
import ReIDCore

public struct CheckpointState: Codable {
    public var epoch: Int               // epochs completed
    public var step: Int                // optimizer steps taken
    public var optimizerSteps: Int
    public var worldSize: Int
    public var seed: Int
    public var classes: Int
    public var config: [String: String]
    public var metrics: [String: Double]
    public var files: [String: String]  // file name -> SHA-256
}

public enum Checkpoint {
    static let latestFile = "latest", bestFile = "best"

    public static func folder(_ runDir: String) -> String { (runDir as NSString).appendingPathComponent("checkpoints") }

    /// Saves model and optimizer state for `state.epoch`; returns the folder.
    @discardableResult
    public static func save(runDir: String, model: GroupedMultiBranchNet, optimizer: Optimizer, state: CheckpointState,
                            keep: Int, best: Bool) throws -> String {
        let fm = FileManager.default
        let dir = folder(runDir)
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let name = String(format: "epoch-%04d", state.epoch)
        let tmp = (dir as NSString).appendingPathComponent(".tmp-\(name)-\(getpid())")
        try? fm.removeItem(atPath: tmp)
        try fm.createDirectory(atPath: tmp, withIntermediateDirectories: false)
        let modelPath = (tmp as NSString).appendingPathComponent("model.safetensors")
        try SafeTensors.write(model.arena.stateRecords(), metadata: ["format": "pt", "producer": "reid-dist", "classes": "\(state.classes)"],
                              to: modelPath)
        let optPath = (tmp as NSString).appendingPathComponent("optimizer.safetensors")
        try SafeTensors.write([TensorRecord("state1", floats: UnsafeBufferPointer(optimizer.state1.buffer), shape: [optimizer.state1.count]),
                               TensorRecord("state2", floats: UnsafeBufferPointer(optimizer.state2.buffer), shape: [optimizer.state2.count])],
                              metadata: ["kind": optimizer.kind.rawValue, "steps": "\(optimizer.steps)"], to: optPath)
        var st = state
        st.files = ["model.safetensors": try SHA256.file(modelPath), "optimizer.safetensors": try SHA256.file(optPath)]
        let enc = JSONEncoder(); enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try writeAtomically(try enc.encode(st), to: (tmp as NSString).appendingPathComponent("state.json"))
        fsyncPath(tmp)
        let final = (dir as NSString).appendingPathComponent(name)
        if fm.fileExists(atPath: final) { try fm.removeItem(atPath: final) }
        guard rename(tmp, final) == 0 else { throw CheckpointError("\(final): cannot move the checkpoint into place") }
        fsyncPath(dir)
        try writeAtomically(Data(name.utf8), to: (dir as NSString).appendingPathComponent(latestFile))
        if best { try writeAtomically(Data(name.utf8), to: (dir as NSString).appendingPathComponent(bestFile)) }
        try prune(dir, keep: keep)
        return final
    }

    /// Deletes all but the `keep` newest epochs and the best one.
    static func prune(_ dir: String, keep: Int) throws {
        let fm = FileManager.default
        let best = (try? String(contentsOfFile: (dir as NSString).appendingPathComponent(bestFile), encoding: .utf8)) ?? ""
        let epochs = try fm.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("epoch-") }.sorted()
        for old in epochs.dropLast(keep) where old != best {
            try fm.removeItem(atPath: (dir as NSString).appendingPathComponent(old))
        }
    }

    /// The checkpoint folder for `--resume auto|PATH`: auto reads `latest` in
    /// the run's checkpoints; PATH may be a checkpoint folder or a run folder.
    public static func resolve(_ spec: String, runDir: String) throws -> String? {
        let fm = FileManager.default
        if spec == "auto" {
            let p = (folder(runDir) as NSString).appendingPathComponent(latestFile)
            guard let name = try? String(contentsOfFile: p, encoding: .utf8) else { return nil }
            return (folder(runDir) as NSString).appendingPathComponent(name.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        if fm.fileExists(atPath: (spec as NSString).appendingPathComponent("state.json")) { return spec }
        let p = (folder(spec) as NSString).appendingPathComponent(latestFile)
        if let name = try? String(contentsOfFile: p, encoding: .utf8) {
            return (folder(spec) as NSString).appendingPathComponent(name.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        throw CheckpointError("\(spec): not a checkpoint folder (no state.json) nor a run folder with checkpoints/latest")
    }

    /// Reads state.json and checks each file's hash.
    public static func verify(_ dir: String) throws -> CheckpointState {
        let statePath = (dir as NSString).appendingPathComponent("state.json")
        guard let data = FileManager.default.contents(atPath: statePath) else { throw CheckpointError("\(statePath): missing") }
        let st: CheckpointState
        do { st = try JSONDecoder().decode(CheckpointState.self, from: data) } catch {
            throw CheckpointError("\(statePath): not a reid-dist checkpoint state (\(error))")
        }
        for (file, hash) in st.files.sorted(by: { $0.key < $1.key }) {
            let p = (dir as NSString).appendingPathComponent(file)
            guard FileManager.default.fileExists(atPath: p) else { throw CheckpointError("\(p): missing from the checkpoint") }
            let got = try SHA256.file(p)
            guard got == hash else { throw CheckpointError("\(p): SHA-256 \(got.prefix(12))... does not match state.json's \(hash.prefix(12))...; the checkpoint is damaged") }
        }
        return st
    }

    /// Number of classes of a model file (the first classifier's rows).
    public static func classes(modelFile: String) throws -> Int {
        let f = try SafeTensorsFile(path: modelFile)
        guard let t = f.tensors["head.groups.0.classifiers.0.weight"], t.shape.count == 2 else {
            throw CheckpointError("\(modelFile): no head.groups.0.classifiers.0.weight; not a grouped multi-branch model")
        }
        return t.shape[0]
    }

    /// Loads the optimizer's buffers saved by `save`.
    public static func loadOptimizer(_ dir: String, into opt: Optimizer) throws {
        let path = (dir as NSString).appendingPathComponent("optimizer.safetensors")
        let f = try SafeTensorsFile(path: path)
        guard f.metadata["kind"] == opt.kind.rawValue else {
            throw CheckpointError("\(path): saved for optimizer '\(f.metadata["kind"] ?? "?")', this run uses '\(opt.kind.rawValue)'")
        }
        for (name, t) in [("state1", opt.state1), ("state2", opt.state2)] {
            guard try f.info(name).count == t.count else { throw CheckpointError("\(path): '\(name)' does not match the model's size") }
            try f.readFloats(name, into: t.ptr)
        }
        opt.restore(steps: Int(f.metadata["steps"] ?? "0") ?? 0)
    }
}

/// fsync a file or folder by path (best effort).
func fsyncPath(_ path: String) {
    let fm = FileManager.default
    var isDir: ObjCBool = false
    if fm.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
        for f in (try? fm.contentsOfDirectory(atPath: path)) ?? [] { fsyncPath((path as NSString).appendingPathComponent(f)) }
    }
    let fd = open(path, O_RDONLY)
    if fd >= 0 { fsync(fd); close(fd) }
}
