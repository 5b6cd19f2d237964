// Training configuration: YAML files (Configs/*.yaml) plus `--set key=value`
// overrides, checked against one table of known keys. An unknown key, a
// wrong type or an impossible value is an error naming the key. The rest of
// the program reads typed sections (`config.train.seed`, `config.optim.kind`);
// look-ups by key string happen in this file only.
import Foundation
import ReIDCore
import ReIDData
import ReIDEval
import Yams

/// The resolved key -> value map, with typed accessors.
public struct Config {
    public private(set) var values: [String: ConfigValue]
    public private(set) var sources: [String: String] = [:] // key -> where it was set

    public init() {
        values = Dictionary(uniqueKeysWithValues: configKeys.map { ($0.name, $0.defaultValue) })
    }

    /// Loads a YAML file over the defaults. The document is composed into a node tree
    /// first (aliases share nodes there, so an alias bomb stays small) and walked with a
    /// budget of nodes; a key given twice in a mapping is an error naming both lines.
    public init(file: String) throws {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            throw ConfigError("\(file): cannot read the config file")
        }
        try self.init(yaml: text, source: file)
    }

    /// The same from YAML text; `source` names it in errors.
    public init(yaml text: String, source file: String) throws {
        self.init()
        let tree: Node?
        do { tree = try Yams.compose(yaml: text) } catch { throw ConfigError("\(file): not valid YAML (\(error))") }
        guard case .mapping(let root)? = tree else {
            throw ConfigError("\(file): the top level must be a mapping of sections")
        }
        var budget = Self.nodeBudget
        var flat: [(String, Any)] = []
        func walk(_ prefix: String, _ node: Node.Mapping) throws {
            var seen: [String: Int] = [:]
            for (k, v) in node {
                guard let name = k.scalar?.string else {
                    throw ConfigError("\(file): line \(k.mark?.line ?? 0): a key must be a plain name")
                }
                let key = prefix.isEmpty ? name : prefix + "." + name
                if let first = seen[name] {
                    throw ConfigError(
                        "\(file): '\(key)' is given twice (lines \(first) and \(k.mark?.line ?? 0)); the second would silently replace the first"
                    )
                }
                seen[name] = k.mark?.line ?? 0
                if case .mapping(let sub) = v {
                    try Self.spend(&budget, file)
                    try walk(key, sub)
                } else {
                    flat.append((key, try Self.value(v, budget: &budget, source: file)))
                }
            }
        }
        try walk("", root)
        for (k, v) in flat.sorted(by: { $0.0 < $1.0 }) { try set(k, v, source: file) }
    }

    /// At most this many YAML nodes in a config (the largest real one has about 60).
    static let nodeBudget = 10_000

    static func spend(_ budget: inout Int, _ source: String) throws {
        budget -= 1
        if budget < 0 {
            throw ConfigError(
                "\(source): more than \(nodeBudget) YAML nodes (an alias bomb?); a configuration is a few sections of keys"
            )
        }
    }

    /// A scalar or a list as Foundation values, counting every node against the budget.
    static func value(_ node: Node, budget: inout Int, source: String) throws -> Any {
        try spend(&budget, source)
        switch node {
        case .sequence(let items): return try items.map { try value($0, budget: &budget, source: source) }
        case .mapping(let m):
            return try Dictionary(
                m.map { (k, v) in (k.scalar?.string ?? "?", try value(v, budget: &budget, source: source)) },
                uniquingKeysWith: { a, _ in a })
        default: return node.any
        }
    }

    /// Applies `key=value` (the value read as YAML: 3e-4, true, [40, 70], text).
    public mutating func apply(override: String) throws {
        guard let eq = override.firstIndex(of: "="), eq != override.startIndex else {
            throw ConfigError("--set \(override): expected key=value")
        }
        let key = String(override[..<eq]), text = String(override[override.index(after: eq)...])
        var budget = Self.nodeBudget
        let parsed: Any =
            try (try? Yams.compose(yaml: text)).flatMap { $0 }.map {
                try Self.value($0, budget: &budget, source: "--set \(key)")
            } ?? text
        try set(key, parsed, source: "--set")
    }

    mutating func set(_ key: String, _ raw: Any, source: String) throws {
        guard let def = configKeys.first(where: { $0.name == key }) else {
            throw ConfigError(
                "\(source): unknown key '\(key.count > 80 ? String(key.prefix(80)) + "..." : key)'\(Self.hint(key))")
        }
        func bad(_ expected: String) -> ConfigError {
            let text = "\(raw)"
            return ConfigError(
                "\(source): \(key) must be \(expected), got '\(text.count > 80 ? String(text.prefix(80)) + "..." : text)'"
            )
        }
        let v: ConfigValue
        switch def.kind {
        case .int:
            if let i = raw as? Int { v = .int(i) } else { throw bad("an integer") }
        case .double:
            if let d = raw as? Double {
                v = .double(d)
            } else if let i = raw as? Int {
                v = .double(Double(i))
            } else if let s = raw as? String, let d = Double(s) {
                v = .double(d)
            } else {
                throw bad("a number")
            }
        case .bool:
            if let b = raw as? Bool { v = .bool(b) } else { throw bad("true or false") }
        case .string:
            if let s = raw as? String {
                v = .string(s)
            } else if raw is NSNull {
                v = .string("")
            } else {
                throw bad("a string")
            }
        case .ints:
            if let a = raw as? [Any], a.allSatisfy({ $0 is Int }) {
                v = .ints(a as! [Int])
            } else if let i = raw as? Int {
                v = .ints([i])
            } else {
                throw bad("a list of integers")
            }
        case .choice(let options):
            let s = (raw as? String) ?? (raw as? Int).map(String.init) ?? ""
            guard options.contains(s) else { throw bad("one of \(options.joined(separator: ", "))") }
            v = Int(s).map { .int($0) } ?? .string(s)
        }
        let numbers: [Double]
        switch v {
        case .int(let i): numbers = [Double(i)]
        case .double(let d): numbers = [d]
        case .ints(let a): numbers = a.map(Double.init)
        default: numbers = []
        }
        if case .double(let d) = v, !d.isFinite { throw bad("a finite number") }
        if let r = def.range, let out = numbers.first(where: { !r.contains($0) }) {
            let shown = out == out.rounded() && abs(out) < 1e15 ? "\(Int(out))" : "\(out)"
            throw ConfigError("\(source): \(key) = \(shown) is out of its range, \(def.rangeText!)")
        }
        values[key] = v
        sources[key] = source
    }

    /// " (did you mean 'x'?)" for an unknown key: a key within 3 edits, or the keys of any section
    /// with the same last part (`train.epochs` -> `schedule.epochs`); "" when nothing is close.
    static func hint(_ key: String) -> String {
        guard key.count <= 200 else { return "" }
        let names = configKeys.map(\.name)
        let near = names.min { editDistance($0, key) < editDistance($1, key) }!
        if editDistance(near, key) <= 3 { return " (did you mean '\(near)'?)" }
        let last = key.split(separator: ".").last.map(String.init) ?? key
        let same =
            names.filter { $0.split(separator: ".").last.map(String.init) == last }
            + names.filter { n in
                let l = n.split(separator: ".").last.map(String.init) ?? n
                return l != last && editDistance(l, last) <= 2
            }
        guard !same.isEmpty else { return "" }
        return " (did you mean " + same.prefix(3).map { "'\($0)'" }.joined(separator: " or ") + "?)"
    }

    // Typed reads of the key table: for this file only (every key exists with its kind's value).
    fileprivate func int(_ k: String) -> Int {
        if case .int(let v)? = values[k] { return v }
        preconditionFailure(k)
    }
    fileprivate func double(_ k: String) -> Double {
        if case .double(let v)? = values[k] { return v }
        preconditionFailure(k)
    }
    fileprivate func bool(_ k: String) -> Bool {
        if case .bool(let v)? = values[k] { return v }
        preconditionFailure(k)
    }
    fileprivate func string(_ k: String) -> String {
        if case .string(let v)? = values[k] { return v }
        preconditionFailure(k)
    }
    fileprivate func ints(_ k: String) -> [Int] {
        if case .ints(let v)? = values[k] { return v }
        preconditionFailure(k)
    }

    /// The resolved configuration as YAML (written into the run folder).
    public var yaml: String {
        var out = "# resolved by reid-dist\n", section = ""
        for key in configKeys.map(\.name) {
            let parts = key.split(separator: ".", maxSplits: 1).map(String.init)
            if parts[0] != section {
                section = parts[0]
                out += "\(section):\n"
            }
            var text = values[key]!.description
            if case .string(let s) = values[key]!, !s.isEmpty {
                text = "\"\(s.replacingOccurrences(of: "\"", with: "\\\""))\""
            }
            out += "  \(parts[1]): \(text)\n"
        }
        return out
    }

    /// Checks the values that can be checked without data; errors name the key.
    public func validate() throws {
        func need(_ ok: Bool, _ key: String, _ why: String) throws {
            if !ok {
                throw ConfigError("\(key) = \(values[key]!): \(why)\(sources[key].map { " (set in \($0))" } ?? "")")
            }
        }
        try need(!string("data.root").isEmpty, "data.root", "a dataset folder is required")
        try need(int("data.height") >= 32 && int("data.width") >= 16, "data.height", "images must be at least 32x16")
        try need(int("data.width") >= 16, "data.width", "images must be at least 16 pixels wide")
        try need(int("data.max_pixels") >= 1, "data.max_pixels", "must be >= 1")
        try need((0...1).contains(double("augment.flip")), "augment.flip", "must be a probability in [0, 1]")
        try need(int("augment.pad") >= 0, "augment.pad", "must be >= 0")
        try need((0...1).contains(double("augment.erasing")), "augment.erasing", "must be a probability in [0, 1]")
        try need(int("sampler.ids_per_batch") >= 1, "sampler.ids_per_batch", "must be >= 1")
        try need(int("sampler.instances") >= 1, "sampler.instances", "must be >= 1")
        try need(
            int("sampler.ids_per_batch") * int("sampler.instances") <= 65_536, "sampler.instances",
            "P*K = \(int("sampler.ids_per_batch") * int("sampler.instances")) images per batch, more than 65,536")
        try need(
            int("sampler.ids_per_batch") * int("sampler.instances") >= 2, "sampler.ids_per_batch",
            "P*K = \(int("sampler.ids_per_batch") * int("sampler.instances")) < 2: batch norm needs at least 2 images per batch"
        )
        try need(int("model.width") >= 1, "model.width", "must be >= 1")
        try need([1, 2].contains(int("model.last_stride")), "model.last_stride", "must be 1 or 2")
        let channels = ModelSpec(depth: int("model.depth"), width: int("model.width")).featureChannels
        try need(
            int("model.groups") >= 1 && channels % int("model.groups") == 0, "model.groups",
            "must divide the \(channels) channels of the pooled feature (ResNet-\(int("model.depth")), width \(int("model.width")))"
        )
        try need(int("model.branches") >= 1, "model.branches", "must be >= 1")
        try need((0..<1).contains(double("loss.label_smoothing")), "loss.label_smoothing", "must be in [0, 1)")
        if string("loss.kind") != LossSpec.Kind.ce.rawValue {
            try need(
                string("sampler.kind") == "identity" && int("sampler.instances") >= 2, "loss.kind",
                "\(string("loss.kind")) needs positives in each batch: sampler.kind identity with sampler.instances >= 2"
            )
            try need(
                int("sampler.ids_per_batch") >= 2, "loss.kind",
                "\(string("loss.kind")) needs negatives in each batch: sampler.ids_per_batch >= 2")
        }
        try need(double("optim.lr") > 0, "optim.lr", "must be positive")
        try need(double("optim.momentum") >= 0 && double("optim.momentum") < 1, "optim.momentum", "must be in [0, 1)")
        try need(!bool("optim.nesterov") || double("optim.momentum") > 0, "optim.nesterov", "needs optim.momentum > 0")
        try need(double("optim.weight_decay") >= 0, "optim.weight_decay", "must be >= 0")
        try need(int("schedule.epochs") >= 1, "schedule.epochs", "must be >= 1")
        try need(int("schedule.warmup_epochs") >= 0, "schedule.warmup_epochs", "must be >= 0")
        try need(
            double("schedule.warmup_factor") > 0 && double("schedule.warmup_factor") <= 1, "schedule.warmup_factor",
            "must be in (0, 1]")
        try need(
            ints("schedule.milestones").allSatisfy { $0 > 0 }
                && ints("schedule.milestones") == ints("schedule.milestones").sorted(),
            "schedule.milestones", "must be increasing positive epochs")
        try need(double("schedule.gamma") > 0, "schedule.gamma", "must be positive")
        try need(int("train.seed") >= 0, "train.seed", "must be >= 0")
        try need(!string("train.run_dir").isEmpty, "train.run_dir", "must name a folder")
        try need(int("train.checkpoint_every") >= 1, "train.checkpoint_every", "must be >= 1")
        try need(double("train.checkpoint_minutes") >= 0, "train.checkpoint_minutes", "must be >= 0")
        try need(int("train.keep_checkpoints") >= 1, "train.keep_checkpoints", "must be >= 1")
        try need(int("train.eval_every") >= 0, "train.eval_every", "must be >= 0")
        try need(int("train.log_every") >= 1, "train.log_every", "must be >= 1")
        try need(
            int("train.threads") <= 16 * availableCores(), "train.threads",
            "more than 16 threads for each of the \(availableCores()) cores this process may use")
        try need(double("train.step_timeout_s") >= 0, "train.step_timeout_s", "must be >= 0")
        try need(
            double("train.heartbeat_timeout_s") == 0 || double("train.heartbeat_timeout_s") >= 3,
            "train.heartbeat_timeout_s",
            "must be 0 (no pings) or at least 3 s (pings every third of it, each given up to 3 s)")
        try need(double("train.bucket_mb") >= 0, "train.bucket_mb", "must be >= 0")
        try need(int("train.check_replicas_every") >= 0, "train.check_replicas_every", "must be >= 0")
        try need(int("eval.batch_size") >= 1, "eval.batch_size", "must be >= 1")
    }

    // Typed sections: the only way the rest of the program reads the configuration.
    public var data: DataSettings {
        DataSettings(
            root: string("data.root"), layout: Layout(rawValue: string("data.layout"))!, height: int("data.height"),
            width: int("data.width"), skipBadImages: bool("data.skip_bad_images"),
            checkImages: bool("data.check_images"),
            maxPixels: int("data.max_pixels"),
            options: DatasetOptions(
                cuhk03Images: DatasetOptions.CUHK03Images(rawValue: string("data.cuhk03_images"))!,
                msmt17MergeVal: bool("data.msmt17_merge_val")))
    }
    public var augment: AugmentConfig {
        AugmentConfig(flip: double("augment.flip"), pad: int("augment.pad"), erasing: double("augment.erasing"))
    }
    public var sampler: SamplerConfig {
        SamplerConfig(
            kind: SamplerKind(rawValue: string("sampler.kind"))!, idsPerBatch: int("sampler.ids_per_batch"),
            instances: int("sampler.instances"))
    }
    public var model: ModelSettings {
        ModelSettings(
            spec: ModelSpec(
                depth: int("model.depth"), width: int("model.width"), lastStride: int("model.last_stride"),
                groups: int("model.groups"), branches: int("model.branches"), classes: 1),
            pretrained: nonEmpty("model.pretrained"), initial: nonEmpty("model.init"),
            convAlgorithm: ConvAlgorithm(rawValue: string("model.conv_algorithm"))!)
    }
    public var labelSmoothing: Float { Float(double("loss.label_smoothing")) }
    public var loss: LossSpec {
        LossSpec(
            kind: LossSpec.Kind(rawValue: string("loss.kind"))!, labelSmoothing: labelSmoothing,
            ceWeight: double("loss.ce_weight"),
            tripletWeight: double("loss.triplet_weight"),
            triplet: TripletLoss(
                margin: double("loss.triplet_margin"), soft: bool("loss.triplet_soft_margin"),
                distance: TripletLoss.Distance(rawValue: string("loss.triplet_distance"))!),
            scope: LossSpec.Scope(rawValue: string("loss.triplet_scope"))!)
    }
    public var optim: OptimSettings {
        OptimSettings(
            kind: OptimizerKind(rawValue: string("optim.name"))!, lr: double("optim.lr"),
            momentum: double("optim.momentum"),
            nesterov: bool("optim.nesterov"), weightDecay: double("optim.weight_decay"))
    }
    public var schedule: LRSchedule {
        LRSchedule(
            base: double("optim.lr"), kind: LRSchedule.Kind(rawValue: string("schedule.kind"))!,
            warmupEpochs: int("schedule.warmup_epochs"),
            warmupFactor: double("schedule.warmup_factor"), milestones: ints("schedule.milestones"),
            gamma: double("schedule.gamma"),
            epochs: int("schedule.epochs"))
    }
    public var train: TrainSettings {
        TrainSettings(
            seed: int("train.seed"), runDir: string("train.run_dir"), checkpointEvery: int("train.checkpoint_every"),
            checkpointMinutes: double("train.checkpoint_minutes"),
            keepCheckpoints: int("train.keep_checkpoints"), evalEvery: int("train.eval_every"),
            logEvery: int("train.log_every"),
            bucketBytes: Int(double("train.bucket_mb") * 1_048_576), trace: nonEmpty("train.trace"),
            checkReplicasEvery: int("train.check_replicas_every"), threads: int("train.threads"),
            stepTimeout: double("train.step_timeout_s") > 0 ? double("train.step_timeout_s") : nil,
            heartbeatTimeout: double("train.heartbeat_timeout_s"),
            gradType: WireType(rawValue: string("train.grad_dtype"))!)
    }
    public var eval: EvalSettings {
        EvalSettings(
            metric: Metric(rawValue: string("eval.metric"))!, flip: bool("eval.flip"),
            batchSize: int("eval.batch_size"),
            rerank: bool("eval.rerank"))
    }
    /// The string at `k`, nil when empty.
    private func nonEmpty(_ k: String) -> String? { string(k).isEmpty ? nil : string(k) }
}

public struct DataSettings {
    public var root: String, layout: Layout, height: Int, width: Int, skipBadImages: Bool, checkImages: Bool,
        maxPixels: Int
    public var options: DatasetOptions
    /// The dataset these settings name.
    public func load() throws -> ReIDDataset { try ReIDDataset(root: root, layout: layout, options: options) }
}

public struct ModelSettings {
    /// The architecture; `classes` is 1 until the training split is known.
    public var spec: ModelSpec
    /// ImageNet backbone weights, and a whole state dict to start from.
    public var pretrained: String?, initial: String?
    /// How 3x3 stride-1 convolutions are computed (same weights, other rounding).
    public var convAlgorithm: ConvAlgorithm = .auto
}

public struct OptimSettings {
    public var kind: OptimizerKind, lr: Double, momentum: Double, nesterov: Bool, weightDecay: Double
    public func make(paramCount: Int) -> Optimizer {
        Optimizer(
            kind, paramCount: paramCount, momentum: Float(momentum), nesterov: nesterov, weightDecay: Float(weightDecay)
        )
    }
}

public struct TrainSettings {
    public var seed: Int, runDir: String, checkpointEvery: Int, checkpointMinutes: Double, keepCheckpoints: Int,
        evalEvery: Int, logEvery: Int
    /// Gradient all-reduce bucket size; 0: one blocking all-reduce after backward.
    public var bucketBytes: Int
    /// Chrome trace file of the first steps, if any.
    public var trace: String?
    public var checkReplicasEvery: Int
    /// train.threads as set: 0 means "derive from the cores" (`threadsPerRank`).
    public var threads: Int
    /// The step watchdog's bound in seconds; nil: automatic.
    public var stepTimeout: Double?
    /// Seconds another rank may answer no heartbeat while this one waits on it; 0: no pings.
    public var heartbeatTimeout: Double
    /// The gradients' type in the all-reduce.
    public var gradType: WireType

    /// BLAS and engine threads for one rank: train.threads, or the cores this
    /// process may run on (its affinity mask) shared among the node's ranks.
    public func threadsPerRank(ranksOnNode: Int) -> Int {
        threads > 0 ? threads : Swift.max(1, availableCores() / Swift.max(ranksOnNode, 1))
    }
}

public struct EvalSettings {
    public var metric: Metric, flip: Bool, batchSize: Int, rerank: Bool
}

/// Cores this process may run on: its affinity mask (what taskset, Slurm's
/// cgroups or mpirun's binding allow; the kernel's `Cpus_allowed` mask in
/// /proc/self/status), else the online processors.
public func availableCores() -> Int {
    if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed:") })
    {
        let hex = line.dropFirst("Cpus_allowed:".count).filter(\.isHexDigit)
        let n = hex.reduce(0) { $0 + ($1.hexDigitValue ?? 0).nonzeroBitCount }
        if n > 0 { return n }
    }
    return ProcessInfo.processInfo.activeProcessorCount
}

func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var prev = Array(0...b.count)
    for i in 1...Swift.max(a.count, 1) where !a.isEmpty {
        var cur = [i] + [Int](repeating: 0, count: b.count)
        for j in 1...Swift.max(b.count, 1) where !b.isEmpty {
            cur[j] = Swift.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        prev = cur
    }
    return prev[b.count]
}
