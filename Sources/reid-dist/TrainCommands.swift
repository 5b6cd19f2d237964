// `reid-dist synth | train | extract | evaluate`.
import ArgumentParser
import Foundation
import ReIDCore
import ReIDData
import ReIDDist
import ReIDEval
import ReIDImage
import ReIDReport

/// --config and --set, shared by the commands that read a training configuration.
struct ConfigOptions: ParsableArguments {
    @Option(help: "YAML configuration (see Configs/ and docs/configuration.md).") var config: String
    @Option(name: .customLong("set"), help: "Override one key: --set optim.lr=1e-4 (repeatable).") var overrides:
        [String] = []

    func load(extra: [String] = []) throws -> Config {
        var c = try Config(file: config)
        for o in overrides + extra { try c.apply(override: o) }
        try c.validate()
        return c
    }
}

/// --data-root and --layout: evaluate or extract on another dataset than the config's
/// (train on Market, test on MSMT17); the model's number of training classes does not matter.
struct DataOptions: ParsableArguments {
    @Option(help: "Dataset to use instead of the config's data.root.") var dataRoot: String?
    @Option(help: "Its layout (market, duke, cuhk03, msmt17, list) instead of the config's data.layout.") var layout:
        Layout?
    var overrides: [String] {
        (dataRoot.map { ["data.root=\($0)"] } ?? []) + (layout.map { ["data.layout=\($0.rawValue)"] } ?? [])
    }
}

/// "model X (trained on R, layout L, N classes)": what a checkpoint's state.json says about it.
func modelDescription(_ checkpoint: String, classes: Int) -> String {
    var dir = checkpoint
    if !FileManager.default.fileExists(atPath: (dir as NSString).appendingPathComponent("state.json")) {
        dir = (checkpoint as NSString).deletingLastPathComponent
    }
    if let found = try? Checkpoint.resolve(checkpoint, runDir: checkpoint) { dir = found.dir }
    guard let st = try? Checkpoint.verify(dir) else { return "model \(checkpoint) (\(classes) training classes)" }
    return
        "model \(dir) (trained on \(st.config["data.root"] ?? "?"), layout \(st.config["data.layout"] ?? "?"), \(st.classes) classes, epoch \(st.epoch))"
}

extension Layout: ExpressibleByArgument {}

/// Checks, before any long work, that the folder an output file goes into exists and may be
/// written: an evaluation used to run to its end and then fail on a missing folder.
func checkOutputFolder(_ file: String?, _ option: String) throws {
    guard let file else { return }
    let folder = (file as NSString).deletingLastPathComponent
    let dir = folder.isEmpty ? "." : folder
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
        throw ConfigError("\(option) \(file): the folder \(dir) does not exist (create it first)")
    }
    guard access(dir, W_OK) == 0 else { throw ConfigError("\(option) \(file): the folder \(dir) is not writable") }
}

/// Runs `body` with MPI under a launcher, else as one process. Under MPI one
/// rank's error ends the whole job (no rank is left waiting in a collective),
/// after printing the rank and the cause.
func withCommunicator(_ body: (Communicator) throws -> Void) throws {
    let comm = try MPICommunicator.forThisProcess()
    do { try body(comm) } catch {
        guard comm.size > 1 else { throw error }
        FileHandle.standardError.write(Data("rank \(comm.rank): error: \(error)\n".utf8))
        comm.abort(1)
    }
    (comm as? MPICommunicator)?.finalize()
}

/// Under mpirun, a watchdog that pings the other ranks for the rest of a command (untimed: a
/// large gallery may rightly take long): a rank that answers none for train.heartbeat_timeout_s
/// (stopped, or its link is down) ends the job instead of leaving the others waiting in a
/// collective. nil for one process or with the pings off; close it when the command is done.
func heartbeatWatch(_ what: String, _ c: Config, _ comm: Communicator) -> StepWatchdog? {
    guard comm.size > 1, c.train.heartbeatTimeout > 0 else { return nil }
    let dog = StepWatchdog(
        timeout: nil, heartbeatTimeout: c.train.heartbeatTimeout, comm: comm, rank: comm.rank, ranks: comm.size,
        advice: "Run it again once every rank is up")
    dog.arm(what, .pingedOnly)
    return dog
}

struct Synth: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a deterministic synthetic pedestrian dataset in any of the dataset layouts.")
    @Option(
        help:
            "market, duke, cuhk03 (PNGs in labeled/ and detected/), msmt17 (list files) or list (CSV files over JPEG and PNG images)."
    )
    var layout: Layout = .market
    @Option(help: "Output folder.") var out: String
    @Option(parsing: .unconditional, help: "Training identities.") var trainIds = 100
    @Option(parsing: .unconditional, help: "Test identities (query and gallery).") var testIds = 100
    @Option(help: "Seed.") var seed: UInt64 = 0

    func validate() throws {
        guard trainIds >= 2, testIds >= 1 else { throw ValidationError("--train-ids must be >= 2 and --test-ids >= 1") }
        guard trainIds + testIds <= 9000 else { throw ValidationError("at most 9000 identities in all") }
    }

    func run() throws {
        var c = SynthConfig()
        c.layout = layout
        c.trainIds = trainIds
        c.testIds = testIds
        c.seed = seed
        let t0 = Profile.now()
        let s = try writeSynthetic(c, to: out)
        print(String(format: "wrote %@ to %@ in %.1f s", s.description, out, Profile.now() - t0))
    }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train the grouped multi-branch network (one process, or data-parallel under mpirun).",
        discussion: """
            Under mpirun (Open MPI) every rank trains a replica on its shard of the identities and
            gradients are averaged after each backward; rank 0 prints, evaluates and writes files.
            --simulate-ranks N computes in one process exactly what N ranks would.

            One job at a time per run folder (a lock); a folder that already holds a run is
            continued with --resume auto or moved aside with --restart, never overwritten.
            SIGTERM, SIGINT or SIGUSR1 finish the current step, write a checkpoint of that exact
            step and exit with status \(StopSignal.exitStatus); --resume auto continues as if
            nothing had happened. A second signal ends the process at once.
            """)
    @OptionGroup var options: ConfigOptions
    @Option(
        help:
            "Continue a run: 'auto' (this run folder's newest checkpoint that verifies) or a checkpoint or run folder.")
    var resume: String?
    @Flag(
        help:
            "Start over in a run folder that holds an earlier run, after moving that run aside to <run_dir>.old-<time> (nothing is deleted)."
    )
    var restart = false
    @Option(parsing: .unconditional, help: "Stop after this epoch (for tests and debugging; checkpoints it).")
    var stopAfter: Int?
    @Option(parsing: .unconditional, help: "Reproduce N data-parallel ranks in this one process (no launcher).")
    var simulateRanks = 1

    func validate() throws {
        guard simulateRanks >= 1 else { throw ValidationError("--simulate-ranks must be at least 1") }
        guard !(restart && resume != nil) else { throw ValidationError("--restart and --resume exclude each other") }
        if let s = stopAfter, s < 1 { throw ValidationError("--stop-after must be at least 1, got \(s)") }
    }

    func run() throws {
        StopSignal.install()
        var end = Trainer.RunEnd.finished
        try withCommunicator { end = try train($0) }
        if case .stopped = end { throw ExitCode(StopSignal.exitStatus) }
    }

    func train(_ comm: Communicator) throws -> Trainer.RunEnd {
        let c = try options.load()
        let start: StartMode = restart ? .restart : resume.map { .resume($0) } ?? .fresh
        let t = try Trainer(config: c, comm: comm, simulateRanks: simulateRanks, start: start)
        if comm.isRoot {
            for w in t.dataset.warnings { print("warning: \(w)") }
            print(
                "data: \(t.dataset.train.samples.count) training images of \(t.dataset.classes) ids, "
                    + "\(t.dataset.query.samples.count) queries, \(t.dataset.gallery.samples.count) gallery (\(t.dataset.root))"
            )
            let m = t.model.spec
            print(
                "model: ResNet-\(m.depth) width \(m.width), \(m.groups) groups x \(m.branches) branches, \(t.model.arena.paramCount) parameters; "
                    + "\(t.averaging.description), \(t.threads) thread(s) \(t.worldSize > 1 ? "per rank" : "")")
        }
        if t.startEpoch >= t.epochs {
            t.log("already trained \(t.epochs) epochs; nothing to do")
            return .finished
        }
        return try t.run(untilEpoch: stopAfter)
    }
}

/// --config (optional) and --set, for the commands that use a trained model: the checkpoint
/// describes itself, so a config may only add data paths and evaluation settings.
struct ModelConfigOptions: ParsableArguments {
    @Option(
        help:
            "YAML configuration (optional: the checkpoint describes its model; a config may change data and evaluation settings only)."
    )
    var config: String?
    @Option(name: .customLong("set"), help: "Override one key: --set eval.flip=false (repeatable).") var overrides:
        [String] = []
}

/// The model of `checkpoint` with the configuration to use it with (`LoadedModel.load`).
func loadModel(_ options: ModelConfigOptions, checkpoint: String, extra: [String] = []) throws -> LoadedModel {
    try LoadedModel.load(checkpoint: checkpoint, config: options.config, overrides: options.overrides + extra)
}

struct Extract: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a split's features as a feature file (for `reid-dist rank`).")
    @OptionGroup var options: ModelConfigOptions
    @Option(help: "Checkpoint folder, run folder, or model.safetensors.") var checkpoint: String
    @Option(help: "query, gallery or train.") var split: String
    @Option(help: "Output feature file (.safetensors).") var out: String
    @OptionGroup var data: DataOptions

    func validate() throws {
        guard ["query", "gallery", "train"].contains(split) else {
            throw ValidationError("--split must be query, gallery or train")
        }
    }

    func run() throws {
        try checkOutputFolder(out, "--out")
        let loaded = try loadModel(options, checkpoint: checkpoint, extra: data.overrides)
        let c = loaded.config, model = loaded.model
        useThreads(c.train.threadsPerRank(ranksOnNode: 1), for: model)
        let d = c.data
        let ds = try d.load()
        let s = split == "query" ? ds.query : split == "gallery" ? ds.gallery : ds.train
        let t0 = Profile.now()
        let f = try extractFeatures(
            model: model, split: s, height: d.height, width: d.width, batchSize: c.eval.batchSize, flip: c.eval.flip,
            skipBadImages: d.skipBadImages, maxPixels: d.maxPixels, producer: "reid-dist extract \(checkpoint)")
        try f.write(to: out, producer: "reid-dist extract \(checkpoint)")
        print(
            String(
                format: "wrote %d x %d features of %@ to %@ (%@, eval.flip; %.1f s)", f.count, f.dim, s.folder, out,
                c.eval.flip ? "flip-averaged" : "not flip-averaged", Profile.now() - t0))
    }
}

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Extract query and gallery features with a checkpoint and report the protocol's numbers.",
        discussion: "Under mpirun each rank extracts a slice of the images; rank 0 gathers them, ranks and reports.")
    @OptionGroup var options: ModelConfigOptions
    @Option(help: "Checkpoint folder, run folder, or model.safetensors.") var checkpoint: String
    @Option(help: "Write the results as JSON.") var json: String?
    @Option(help: "Also write the query and gallery feature files with this prefix (PREFIX-query.safetensors, ...).")
    var saveFeatures: String?
    @Option(
        help:
            "Write a report of this evaluation (report.html with its CMC, the worst and best queries' ranked lists, the model and data) into this folder."
    )
    var report: String?
    @OptionGroup var data: DataOptions

    func run() throws { try withCommunicator(evaluate) }

    func evaluate(_ comm: Communicator) throws {
        try checkOutputFolder(json, "--json")
        try checkOutputFolder(saveFeatures, "--save-features")
        let loaded = try loadModel(options, checkpoint: checkpoint, extra: data.overrides)
        let c = loaded.config, model = loaded.model
        let watchdog = heartbeatWatch("the evaluation", c, comm)
        defer { watchdog?.close() }
        useThreads(c.train.threadsPerRank(ranksOnNode: comm.localSize), for: model)
        let d = c.data, e = c.eval
        let ds = try d.load()
        guard
            let ev = try Evaluation.run(
                model: model, dataset: ds, data: d, eval: e, comm: comm, producer: "reid-dist evaluate")
        else {
            try comm.barrier()
            return
        }
        let q = ev.query, g = ev.gallery, r = ev.ranking, sec = ev.seconds
        let which = modelDescription(checkpoint, classes: model.spec.classes)
        print(
            "\(which)\non \(d.root) (layout \(d.layout.rawValue)\(d.layout == .market || d.layout == .duke ? "" : ", Market protocol: same-camera images of the query's id removed"))"
        )
        print(
            "\(q.count) queries x \(g.count) gallery, \(e.metric)\(e.flip ? ", flip-averaged" : "")\(comm.size > 1 ? ", \(comm.size) ranks" : "")"
        )
        print(" rank-1   rank-5  rank-10  rank-20      mAP     mINP")
        print(
            String(
                format: "%6.2f%%  %6.2f%%  %6.2f%%  %6.2f%%  %6.2f%%  %6.2f%%",
                r.rank(1) * 100, r.rank(5) * 100, r.rank(10) * 100, r.rank(20) * 100, r.mAP * 100, r.mINP * 100))
        print(String(format: "valid queries %d of %d; %.1f s", r.validQueries, r.totalQueries, sec))
        if let json {
            try writeAtomically(try EvaluationSummary(ev, ranks: comm.size, model: which, data: d).json(), to: json)
        }
        if let dir = report {
            print("report: \(try ev.writeReport(to: dir, model: which, spec: model.spec, data: d, eval: e))")
        }
        if let prefix = saveFeatures {
            try q.write(to: prefix + "-query.safetensors", producer: "reid-dist evaluate \(checkpoint)")
            try g.write(to: prefix + "-gallery.safetensors", producer: "reid-dist evaluate \(checkpoint)")
        }
        try comm.barrier()
    }
}

struct ConfigKeys: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config-keys", abstract: "Print every configuration key as a Markdown table.")
    func run() {
        print(configKeysMarkdown)
    }
}
