// A trained model as the commands use it: found from a checkpoint folder, a run folder or a
// model file, built from its own description, with the configuration to use it with.
import Foundation
import ReIDCore

/// A trained model and the configuration to use it with.
public struct LoadedModel {
    public let model: GroupedMultiBranchNet
    public let config: Config
    public let file: String

    /// Finds the model of `checkpoint` (a checkpoint folder, a run folder: its newest checkpoint
    /// that verifies, or a model.safetensors file, verified against its folder's state.json when
    /// beside one), builds it from its own description (older files: from the config), and
    /// resolves the configuration: the given one checked against the model, else the one the
    /// checkpoint was trained with, else the defaults with the model's settings. The model computes
    /// on one thread until told otherwise (`useThreads`).
    public static func load(checkpoint: String, config configFile: String?, overrides: [String]) throws -> LoadedModel {
        var file = checkpoint, stateDir: String?
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: checkpoint, isDirectory: &isDir) else {
            throw CheckpointError("\(checkpoint): no such checkpoint folder, run folder or model file")
        }
        if isDir.boolValue {
            guard let found = try Checkpoint.resolve(checkpoint, runDir: checkpoint) else {
                throw CheckpointError("\(checkpoint): the run folder holds no checkpoint yet")
            }
            if let note = found.note { print("note: " + note) }
            file = (found.dir as NSString).appendingPathComponent("model.safetensors")
            stateDir = found.dir
        } else {
            let folder = (checkpoint as NSString).deletingLastPathComponent
            let dir = folder.isEmpty ? "." : folder
            if FileManager.default.fileExists(atPath: (dir as NSString).appendingPathComponent("state.json")) {
                _ = try Checkpoint.verify(dir)
                stateDir = dir
            }
        }
        let weights = try SafeTensorsFile(path: file)
        let card = try ModelCard(metadata: weights.metadata, file: file)
        var c: Config
        if let path = configFile {
            c = try Config(file: path)
        } else if let dir = stateDir, let st = try? Checkpoint.verify(dir) {
            c = Config()
            for (k, v) in st.config { try? c.apply(override: "\(k)=\(v == "\"\"" ? "" : v)") }
        } else {
            guard let card else {
                throw ConfigError(
                    "\(file) does not describe its model (written before reid-dist 0.5): give the --config it was trained with"
                )
            }
            c = Config()
            for o in [
                "model.depth=\(card.spec.depth)", "model.width=\(card.spec.width)",
                "model.last_stride=\(card.spec.lastStride)",
                "model.groups=\(card.spec.groups)", "model.branches=\(card.spec.branches)",
                "data.height=\(card.height)",
                "data.width=\(card.width)", "eval.flip=\(card.flip)", "data.root=."
            ] { try c.apply(override: o) }
        }
        for o in overrides { try c.apply(override: o) }
        try c.validate()
        var spec = c.model.spec
        if let card {
            let clash = card.contradictions(c)
            guard clash.isEmpty else {
                throw ConfigError(
                    "\(file): the model and the configuration disagree: \(clash.joined(separator: "; ")); a config may only change data paths and evaluation settings"
                )
            }
            spec = card.spec
        } else {
            spec.classes = try Checkpoint.classes(modelFile: file)
        }
        let m = GroupedMultiBranchNet(spec, options: c.engineOptions(threads: 1))
        try m.arena.load(from: weights, strict: true)
        if let bad = m.arena.firstNonFinite() {
            throw CheckpointError("\(file): \(bad); refusing to compute features with it")
        }
        return LoadedModel(model: m, config: c, file: file)
    }
}
