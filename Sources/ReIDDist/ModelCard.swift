// A model that describes itself: model.safetensors carries, in its
// __metadata__, the architecture and the preprocessing it was trained with, so
// that evaluate, extract, embed and search need the checkpoint alone. A config
// given beside it may change data paths and evaluation settings only; a
// contradiction (another depth, another input size) is an error naming both.
import Foundation
import ReIDCore
import ReIDData

public struct ModelCard: Equatable {
    public var spec: ModelSpec
    public var height: Int, width: Int
    public var mean: [Float] = Normalize.mean, std: [Float] = Normalize.std
    public var flip: Bool
    public var producer = "reid-dist \(reidDistVersion)"

    public init(spec: ModelSpec, height: Int, width: Int, flip: Bool) {
        self.spec = spec
        self.height = height
        self.width = width
        self.flip = flip
    }

    /// The card of a training configuration (classes from its data).
    public init(config: Config, classes: Int) {
        var spec = config.model.spec
        spec.classes = classes
        self.init(spec: spec, height: config.data.height, width: config.data.width, flip: config.eval.flip)
    }

    /// The safetensors __metadata__ entries.
    public var metadata: [String: String] {
        [
            "architecture": "grouped-multibranch-resnet", "depth": "\(spec.depth)", "width": "\(spec.width)",
            "last_stride": "\(spec.lastStride)",
            "groups": "\(spec.groups)", "branches": "\(spec.branches)", "classes": "\(spec.classes)",
            "input_height": "\(height)", "input_width": "\(width)", "input": "N,3,H,W RGB, (x/255 - mean)/std",
            "mean": mean.map { "\($0)" }.joined(separator: ","), "std": std.map { "\($0)" }.joined(separator: ","),
            "eval_flip": "\(flip)", "producer": producer
        ]
    }

    /// Reads a card from a model file's metadata; nil for files written before cards existed.
    public init?(metadata m: [String: String], file: String) throws {
        guard m["architecture"] != nil || m["depth"] != nil else { return nil }
        func int(_ k: String) throws -> Int {
            guard let v = m[k].flatMap({ Int($0) }) else {
                throw CheckpointError("\(file): __metadata__ '\(k)' is missing or not an integer")
            }
            return v
        }
        spec = ModelSpec(
            depth: try int("depth"), width: try int("width"), lastStride: try int("last_stride"),
            groups: try int("groups"), branches: try int("branches"), classes: try int("classes"))
        height = try int("input_height")
        width = try int("input_width")
        flip = m["eval_flip"] == "true"
        mean = m["mean"]?.split(separator: ",").compactMap { Float($0) } ?? Normalize.mean
        std = m["std"]?.split(separator: ",").compactMap { Float($0) } ?? Normalize.std
        producer = m["producer"] ?? "?"
        guard ResNet.depths[spec.depth] != nil else {
            throw CheckpointError("\(file): __metadata__ depth \(spec.depth) is not 18, 34 or 50")
        }
    }

    /// What a config given beside the checkpoint says that contradicts the card, if anything.
    public func contradictions(_ c: Config) -> [String] {
        var out: [String] = []
        let s = c.model.spec
        for (key, mine, theirs) in [
            ("model.depth", spec.depth, s.depth), ("model.width", spec.width, s.width),
            ("model.last_stride", spec.lastStride, s.lastStride), ("model.groups", spec.groups, s.groups),
            ("model.branches", spec.branches, s.branches), ("data.height", height, c.data.height),
            ("data.width", width, c.data.width)
        ] where mine != theirs {
            out.append("\(key) = \(theirs) in the config, \(mine) in the model")
        }
        return out
    }
}
