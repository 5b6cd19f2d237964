// Checkpoints: one folder per save under <run_dir>/checkpoints/, named
// epoch-0012 at an epoch's end and epoch-0012-step-000345 when saved in the
// middle of epoch 13 (a signal, or train.checkpoint_minutes):
//   model.safetensors      the state dict, with the reference's names
//   optimizer.safetensors  the optimizer's moment buffers
//   replicas.safetensors   mid-epoch only: every rank's batch-norm statistics
//                          (they differ between ranks until the epoch ends)
//   state.json             epoch, step, world size, seed, config, metrics,
//                          and the SHA-256 of each file above (all required)
// Written into a temporary folder, fsynced, renamed into place; then the
// `latest` pointer file is replaced atomically. A crash at any moment leaves
// the previous checkpoint whole; a checkpoint whose hashes do not match is refused.
import Foundation
import ReIDCore
import ReIDTorch

public struct CheckpointState: Codable {
    public var epoch: Int // epochs completed
    public var step: Int // optimizer steps taken
    public var optimizerSteps: Int
    public var worldSize: Int
    public var seed: Int
    public var classes: Int
    public var config: [String: String]
    public var metrics: [String: Double]
    public var files: [String: String] // file name -> SHA-256
    /// Mid-epoch checkpoints: steps of epoch `epoch + 1` already taken, and that
    /// epoch's loss sum, images and correct predictions so far (summed over ranks).
    public var stepInEpoch: Int?
    public var epochProgress: [Double]?

    public var midEpoch: Bool { (stepInEpoch ?? 0) > 0 }
    /// The folder name of this state's checkpoint.
    public var name: String {
        midEpoch ? String(format: "epoch-%04d-step-%06d", epoch, stepInEpoch!) : String(format: "epoch-%04d", epoch)
    }
}

/// Where a run stands, as one value: restored from a checkpoint (`CheckpointState.position`),
/// broadcast from rank 0 to every rank as one value (`Communicator.broadcast`), and what the
/// training loop goes on from.
public struct TrainingPosition: Codable, Equatable, Sendable {
    /// Epochs completed.
    public var epoch = 0
    /// Optimizer steps taken over the whole run.
    public var globalStep = 0
    /// The optimizer's own step count (Adam's bias correction).
    public var optimizerSteps = 0
    /// Steps of epoch `epoch + 1` already taken (a mid-epoch checkpoint), and that epoch's loss
    /// sum, images and correct predictions so far (summed over ranks).
    public var stepInEpoch = 0
    public var epochProgress: [Double]?
    /// The best evaluation mAP so far (-1: none yet).
    public var bestMAP = -1.0

    public init() {}
}

extension CheckpointState {
    /// The position this checkpoint continues from.
    public var position: TrainingPosition {
        var p = TrainingPosition()
        p.epoch = epoch
        p.globalStep = step
        p.optimizerSteps = optimizerSteps
        p.stepInEpoch = stepInEpoch ?? 0
        p.epochProgress = epochProgress
        p.bestMAP = metrics["best_mAP"] ?? -1
        return p
    }
}

public enum Checkpoint {
    static let latestFile = "latest", bestFile = "best"
    static let modelFile = "model.safetensors", optimizerFile = "optimizer.safetensors",
        replicasFile = "replicas.safetensors"

    public static func folder(_ runDir: String) -> String { (runDir as NSString).appendingPathComponent("checkpoints") }

    /// Saves model and optimizer state (and, mid-epoch, every replica's batch-norm
    /// buffers, [world][bufferCount] flattened); returns the folder.
    @discardableResult
    public static func save(
        runDir: String, model: GroupedMultiBranchNet, optimizer: Optimizer, replicaBuffers: [Float]? = nil,
        state: CheckpointState, keep: Int, card: ModelCard? = nil
    ) throws -> String {
        let fm = FileManager.default
        let dir = folder(runDir)
        try createFolder(dir, what: "the checkpoints folder")
        let name = state.name
        let tmp = (dir as NSString).appendingPathComponent(".tmp-\(name)-\(getpid())")
        try? fm.removeItem(atPath: tmp)
        try createFolder(tmp, what: "a checkpoint")
        func path(_ f: String) -> String { (tmp as NSString).appendingPathComponent(f) }
        var meta = card?.metadata ?? ["producer": "reid-dist", "classes": "\(state.classes)"]
        meta["format"] = "pt"
        meta["conv_algorithm"] = model.ws.options.convAlgorithm.rawValue // information only: the weights mean the same
        try SafeTensors.write(model.arena.stateRecords(), metadata: meta, to: path(modelFile))
        try SafeTensors.write(
            [
                TensorRecord(
                    "state1", floats: UnsafeBufferPointer(optimizer.state1.buffer), shape: [optimizer.state1.count]),
                TensorRecord(
                    "state2", floats: UnsafeBufferPointer(optimizer.state2.buffer), shape: [optimizer.state2.count])
            ],
            metadata: ["kind": optimizer.kind.rawValue, "steps": "\(optimizer.steps)"], to: path(optimizerFile))
        var files = [modelFile, optimizerFile]
        if state.midEpoch {
            guard let replicaBuffers else {
                preconditionFailure("a mid-epoch checkpoint needs every replica's buffers")
            }
            try SafeTensors.write(
                [
                    TensorRecord(
                        "buffers", floats: replicaBuffers,
                        shape: [state.worldSize, replicaBuffers.count / state.worldSize])
                ],
                to: path(replicasFile))
            files.append(replicasFile)
        }
        var st = state
        st.files = try Dictionary(uniqueKeysWithValues: files.map { ($0, try SHA256.file(path($0))) })
        try writeState(st, to: tmp)
        fsyncPath(tmp)
        let final = (dir as NSString).appendingPathComponent(name)
        if fm.fileExists(atPath: final) { try fm.removeItem(atPath: final) }
        guard rename(tmp, final) == 0 else {
            throw CheckpointError(
                "\(final): cannot move the checkpoint into place: \(String(cString: strerror(errno)))")
        }
        fsyncPath(dir)
        try writeAtomically(Data(name.utf8), to: (dir as NSString).appendingPathComponent(latestFile))
        try prune(dir, keep: keep)
        return final
    }

    static func writeState(_ st: CheckpointState, to dir: String) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try writeAtomically(try enc.encode(st), to: (dir as NSString).appendingPathComponent("state.json"))
    }

    /// After the evaluation that follows a save: its metrics into state.json, and the `best` pointer.
    public static func recordEvaluation(_ dir: String, metrics: [String: Double], best: Bool) throws {
        var st = try verify(dir)
        st.metrics = metrics
        try writeState(st, to: dir)
        if best {
            try writeAtomically(
                Data((dir as NSString).lastPathComponent.utf8),
                to: ((dir as NSString).deletingLastPathComponent as NSString).appendingPathComponent(bestFile))
        }
    }

    /// Deletes all but the `keep` newest checkpoints and the best one.
    static func prune(_ dir: String, keep: Int) throws {
        let fm = FileManager.default
        let best =
            (try? String(contentsOfFile: (dir as NSString).appendingPathComponent(bestFile), encoding: .utf8)) ?? ""
        for old in try names(dir).dropLast(keep) where old != best {
            try fm.removeItem(atPath: (dir as NSString).appendingPathComponent(old))
        }
    }

    /// Checkpoint folder names, oldest first.
    static func names(_ dir: String) throws -> [String] {
        guard FileManager.default.fileExists(atPath: dir) else { return [] }
        return try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("epoch-") }.sorted()
    }

    /// Removes the temporary folders of saves that never finished (a crash, a full disk); returns them.
    @discardableResult
    public static func removeUnfinished(runDir: String) -> [String] {
        let dir = folder(runDir)
        let tmps = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasPrefix(".tmp-") }
        for t in tmps { try? FileManager.default.removeItem(atPath: (dir as NSString).appendingPathComponent(t)) }
        return tmps
    }

    /// The checkpoint to continue from for `--resume auto|PATH`, and a note when it is not
    /// the one `latest` names. auto: this run's checkpoints; PATH: a checkpoint folder, or a
    /// run folder (its newest checkpoint that verifies). Nil when there is no checkpoint at
    /// all; an error when there are some but none verifies (nothing is thrown away silently).
    public static func resolve(_ spec: String, runDir: String) throws -> (dir: String, note: String?)? {
        if spec != "auto"
            && FileManager.default.fileExists(atPath: (spec as NSString).appendingPathComponent("state.json"))
        {
            _ = try verify(spec) // a checkpoint named directly is checked as one found in a run folder
            return (spec, nil)
        }
        let run = spec == "auto" ? runDir : spec
        let dir = folder(run)
        if spec != "auto" && !FileManager.default.fileExists(atPath: dir) {
            throw CheckpointError("\(spec): not a checkpoint folder (no state.json) nor a run folder with checkpoints/")
        }
        let all = try names(dir)
        guard !all.isEmpty else { return nil }
        let latest =
            (try? String(contentsOfFile: (dir as NSString).appendingPathComponent(latestFile), encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        var candidates = all.reversed().map { $0 }
        if let latest, let i = candidates.firstIndex(of: latest) {
            candidates.remove(at: i)
            candidates.insert(latest, at: 0)
        }
        var problems: [String] = []
        for name in candidates {
            let path = (dir as NSString).appendingPathComponent(name)
            do {
                _ = try verify(path)
                var note: String?
                if latest == nil {
                    note = "\(dir)/latest is missing"
                } else if latest != name {
                    note =
                        all.contains(latest!)
                        ? "\(dir)/latest names \(latest!), which does not verify (\(problems.first ?? "?"))"
                        : "\(dir)/latest names \(latest!), which does not exist"
                }
                return (path, note.map { $0 + "; continuing from the newest checkpoint that verifies, \(name)" })
            } catch { problems.append("\(error)") }
        }
        throw CheckpointError(
            "\(dir): none of its \(all.count) checkpoint(s) verifies (\(problems.joined(separator: "; "))). "
                + "Nothing was changed; to start over, --restart moves this run aside")
    }

    /// Reads state.json and checks that it is possible and that every file it must list is
    /// listed, present, and has its hash.
    public static func verify(_ dir: String) throws -> CheckpointState {
        let statePath = (dir as NSString).appendingPathComponent("state.json")
        guard let data = FileManager.default.contents(atPath: statePath) else {
            throw CheckpointError("\(statePath): missing")
        }
        let st: CheckpointState
        do { st = try JSONDecoder().decode(CheckpointState.self, from: data) } catch {
            throw CheckpointError("\(statePath): not a reid-dist checkpoint state (\(error))")
        }
        func impossible(_ what: String) -> CheckpointError {
            CheckpointError("\(statePath): impossible state (\(what)); the checkpoint is damaged")
        }
        guard st.epoch >= 0 else { throw impossible("epoch \(st.epoch)") }
        guard st.step >= 0, st.optimizerSteps >= 0 else {
            throw impossible("step \(st.step), optimizer steps \(st.optimizerSteps)")
        }
        guard st.worldSize >= 1 else { throw impossible("world size \(st.worldSize)") }
        guard st.classes >= 1 else { throw impossible("\(st.classes) classes") }
        guard (st.stepInEpoch ?? 0) >= 0 else { throw impossible("step in epoch \(st.stepInEpoch!)") }
        let required = [modelFile, optimizerFile] + (st.midEpoch ? [replicasFile] : [])
        for f in required where st.files[f] == nil {
            throw CheckpointError(
                "\(statePath): lists no hash for \(f); every checkpoint file must be hashed, so this one is refused")
        }
        for (file, hash) in st.files.sorted(by: { $0.key < $1.key }) {
            let p = (dir as NSString).appendingPathComponent(file)
            guard FileManager.default.fileExists(atPath: p) else {
                throw CheckpointError("\(p): missing from the checkpoint")
            }
            let got = try SHA256.file(p)
            guard got == hash else {
                throw CheckpointError(
                    "\(p): SHA-256 \(got.prefix(12))... does not match state.json's \(hash.prefix(12))...; the checkpoint is damaged"
                )
            }
        }
        return st
    }

    /// Every replica's batch-norm buffers of a mid-epoch checkpoint, [world][count] flattened.
    public static func loadReplicaBuffers(_ dir: String, world: Int, count: Int) throws -> [Float] {
        let path = (dir as NSString).appendingPathComponent(replicasFile)
        let f = try SafeTensorsFile(path: path)
        guard try f.info("buffers").shape == [world, count] else {
            throw CheckpointError(
                "\(path): 'buffers' has shape \(try f.info("buffers").shape), expected [\(world), \(count)]")
        }
        return try f.floats("buffers")
    }

    /// Number of classes of a model file (the first classifier's rows).
    public static func classes(modelFile: String) throws -> Int {
        let f = try SafeTensorsFile(path: modelFile)
        guard let t = f.tensors["head.groups.0.classifiers.0.weight"], t.shape.count == 2 else {
            throw CheckpointError(
                "\(modelFile): no head.groups.0.classifiers.0.weight; not a grouped multi-branch model")
        }
        return t.shape[0]
    }

    /// Loads the optimizer's buffers saved by `save`.
    public static func loadOptimizer(_ dir: String, into opt: Optimizer) throws {
        let path = (dir as NSString).appendingPathComponent("optimizer.safetensors")
        let f = try SafeTensorsFile(path: path)
        guard f.metadata["kind"] == opt.kind.rawValue else {
            throw CheckpointError(
                "\(path): saved for optimizer '\(f.metadata["kind"] ?? "?")', this run uses '\(opt.kind.rawValue)'")
        }
        for (name, t) in [("state1", opt.state1), ("state2", opt.state2)] {
            guard try f.info(name).count == t.count else {
                throw CheckpointError("\(path): '\(name)' does not match the model's size")
            }
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
        for f in (try? fm.contentsOfDirectory(atPath: path)) ?? [] {
            fsyncPath((path as NSString).appendingPathComponent(f))
        }
    }
    let fd = open(path, O_RDONLY)
    if fd >= 0 {
        fsync(fd)
        close(fd)
    }
}

/// ImageNet weights for `model.pretrained`: safetensors, or a torch.save file (torchvision's
/// own .pth, zip or legacy format) read by the restricted unpickler, with no Python.
/// A torch.save file may hold at most 2x the model's elements plus 4M (an ImageNet classifier's
/// 2048 x 1000 and its running statistics), checked before its tensors are materialised.
public func pretrainedWeights(_ path: String, modelElements: Int = TorchFile.defaultElementBudget / 2) throws
    -> SafeTensorsFile
{
    if let problem = InputFile.problem(path) { throw ConfigError("model.pretrained: \(path): \(problem)") }
    guard TorchFile.looks(path) else { return try SafeTensorsFile(path: path) }
    do {
        let budget = Swift.min(modelElements, TorchFile.defaultElementBudget / 2) * 2 + (4 << 20)
        return try SafeTensorsFile(
            data: SafeTensors.encode(try TorchFile.read(path, elementBudget: budget)), path: path)
    } catch let e as TorchFileError {
        throw ConfigError("model.pretrained: \(e)")
    }
}
