// The training loop: next batch, forward + loss, zero grad, backward,
// (gradient all-reduce: `afterBackward`), optimizer step, one log line.
// Epoch boundaries bring checkpoints and evaluations.
import Foundation
import ReIDCore
import ReIDData
import ReIDEval

public struct EvalResult {
    public let ranking: RankingResult
    public let seconds: Double
}

public final class Trainer {
    public let config: Config
    public let dataset: ReIDDataset
    public let model: GroupedMultiBranchNet
    public let optimizer: Optimizer
    public let runDir: String
    public var startEpoch = 0, globalStep = 0
    public var bestMAP = -1.0
    /// Called between backward and the optimizer step (the gradient all-reduce goes here).
    public var afterBackward: ((Arena) throws -> Void)?
    /// Prints a line; rank 0 only in distributed runs.
    public var log: (String) -> Void = { print($0); fflush(stdout) }
    let metrics: FileHandle?

    public init(config: Config, writeFiles: Bool = true) throws {
        try config.validate()
        self.config = config
        setBLASThreads(config.threads); engineThreads = config.threads
        dataset = try ReIDDataset(root: config.string("data.root"), layout: config.layout)
        var spec = config.modelSpec
        spec.classes = dataset.classes
        guard dataset.train.samples.count >= 2 else { throw ConfigError("\(dataset.train.folder): fewer than 2 training images") }
        model = GroupedMultiBranchNet(spec, seed: UInt64(config.int("train.seed")))
        let kind: OptimizerKind = config.string("optim.name") == "sgd" ? .sgd : .adam
        optimizer = Optimizer(kind, paramCount: model.arena.paramCount, momentum: Float(config.double("optim.momentum")),
                              nesterov: config.bool("optim.nesterov"), weightDecay: Float(config.double("optim.weight_decay")))
        runDir = config.string("train.run_dir")
        let pre = config.string("model.pretrained")
        if !pre.isEmpty { try model.loadPretrainedBackbone(try SafeTensorsFile(path: pre)) }
        let initial = config.string("model.init")
        if !initial.isEmpty { try model.arena.load(from: try SafeTensorsFile(path: initial), strict: true) }
        if writeFiles {
            try FileManager.default.createDirectory(atPath: runDir, withIntermediateDirectories: true)
            try writeAtomically(Data(config.yaml.utf8), to: (runDir as NSString).appendingPathComponent("config.yaml"))
            let mpath = (runDir as NSString).appendingPathComponent("metrics.jsonl")
            if !FileManager.default.fileExists(atPath: mpath) { _ = FileManager.default.createFile(atPath: mpath, contents: nil) }
            metrics = FileHandle(forWritingAtPath: mpath)
            metrics?.seekToEndOfFile()
        } else { metrics = nil }
    }

    /// Restores a checkpoint folder (hashes checked) to continue after its epoch.
    public func resume(from dir: String) throws {
        let st = try Checkpoint.verify(dir)
        guard st.classes == dataset.classes else {
            throw ConfigError("\(dir): checkpoint has \(st.classes) classes but \(dataset.train.folder) has \(dataset.classes) identities")
        }
        try model.arena.load(from: try SafeTensorsFile(path: (dir as NSString).appendingPathComponent("model.safetensors")), strict: true)
        try Checkpoint.loadOptimizer(dir, into: optimizer)
        startEpoch = st.epoch; globalStep = st.step
        bestMAP = st.metrics["best_mAP"] ?? -1
        log("resumed from \(dir): epoch \(st.epoch) done, step \(st.step)")
    }

    func record(_ obj: [String: Any]) {
        guard let metrics, let data = try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]) else { return }
        metrics.write(data); metrics.write(Data("\n".utf8))
    }

    public var epochs: Int { config.int("schedule.epochs") }

    /// Batches of the epoch, as sample indices.
    public func batches(epoch: Int) -> [[Int]] {
        let s = config.sampler
        switch s.kind {
        case .identity:
            return identityBatches(labels: dataset.train.samples.map(\.label), config: s, seed: UInt64(config.int("train.seed")), epoch: epoch)
        case .sequential:
            return sequentialBatches(count: dataset.train.samples.count, batchSize: s.batchSize)
        }
    }

    /// Trains from `startEpoch` to the configured end (or `untilEpoch`).
    public func run(untilEpoch: Int? = nil) throws {
        let end = Swift.min(untilEpoch ?? epochs, epochs)
        let loader = ImageLoader(samples: dataset.train.samples, height: config.int("data.height"), width: config.int("data.width"),
                                 augment: config.augment, seed: UInt64(config.int("train.seed")),
                                 skipBadImages: config.bool("data.skip_bad_images"))
        let eps = Float(config.double("loss.label_smoothing"))
        let heads = Double(model.spec.groups * model.spec.branches)
        let logEvery = config.int("train.log_every")
        let schedule = config.schedule
        var imagesSeen = 0
        let runStart = Profile.now()
        for epoch in startEpoch..<end {
            let batches = self.batches(epoch: epoch)
            guard !batches.isEmpty else {
                throw ConfigError("sampler.ids_per_batch = \(config.sampler.idsPerBatch): the training split has too few identities with images for one batch")
            }
            let lr = Float(schedule.rate(epoch: Double(epoch)))
            let pre = Prefetcher(steps: 0..<batches.count) { s in try loader.batch(batches[s], epoch: epoch, step: s, training: true) }
            var lossSum = 0.0, correct = 0, seen = 0
            var windowStart = Profile.now(), windowImages = 0
            for step in 0..<batches.count {
                let batch = try pre.next(step)
                model.arena.zeroGrad()
                let r = model.forwardLoss(batch.images, labels: batch.labels, labelSmoothing: eps)
                guard r.loss.isFinite else {
                    throw ConfigError("loss is \(r.loss) at epoch \(epoch + 1) step \(step + 1): training diverged (lower optim.lr?)")
                }
                model.backward()
                try afterBackward?(model.arena)
                optimizer.step(value: model.arena.value, grad: model.arena.grad, lr: lr)
                globalStep += 1
                let n = batch.labels.count
                lossSum += r.loss * Double(n); correct += r.correct; seen += n
                imagesSeen += n; windowImages += n
                if (step + 1) % logEvery == 0 || step + 1 == batches.count {
                    let now = Profile.now()
                    let ips = Double(windowImages) / Swift.max(now - windowStart, 1e-9)
                    let stepsLeft = (end - epoch - 1) * batches.count + (batches.count - step - 1)
                    let eta = Double(stepsLeft * config.sampler.batchSize) / Swift.max(ips, 1e-9)
                    let acc = Double(correct) / Double(seen) / heads
                    log(String(format: "epoch %d/%d step %d/%d  loss %.4f  acc %5.1f%%  lr %.2e  %.1f img/s  ETA %@",
                               epoch + 1, epochs, step + 1, batches.count, lossSum / Double(seen), acc * 100, lr, ips, formatDuration(eta)))
                    record(["kind": "train", "epoch": epoch + 1, "step": step + 1, "global_step": globalStep, "loss": lossSum / Double(seen),
                        "step_loss": r.loss,
                            "acc": acc, "lr": Double(lr), "images_per_second": ips, "data_wait_s": pre.waitSeconds])
                    windowStart = now; windowImages = 0
                }
            }
            if !loader.skipped.isEmpty { log("warning: \(loader.skipped.count) unreadable images skipped so far (data.skip_bad_images); first: \(loader.skipped[0])") }
            let done = epoch + 1
            var metricsNow: [String: Double] = ["loss": lossSum / Double(seen)]
            var isBest = false
            let every = config.int("train.eval_every")
            if done == epochs || (every > 0 && done % every == 0) {
                let e = try evaluate()
                metricsNow["mAP"] = e.ranking.mAP; metricsNow["rank1"] = e.ranking.rank(1)
                if e.ranking.mAP > bestMAP { bestMAP = e.ranking.mAP; isBest = true }
            }
            metricsNow["best_mAP"] = bestMAP
            if done == epochs || done % config.int("train.checkpoint_every") == 0 || done == end {
                let st = CheckpointState(epoch: done, step: globalStep, optimizerSteps: optimizer.steps, worldSize: 1,
                                         seed: config.int("train.seed"), classes: dataset.classes,
                                         config: config.values.mapValues(\.description), metrics: metricsNow, files: [:])
                let dir = try Checkpoint.save(runDir: runDir, model: model, optimizer: optimizer, state: st,
                                              keep: config.int("train.keep_checkpoints"), best: isBest)
                log("saved \(dir)")
            }
        }
        let total = Profile.now() - runStart
        log(String(format: "trained %d images in %@ (%.1f img/s)", imagesSeen, formatDuration(total), Double(imagesSeen) / Swift.max(total, 1e-9)))
    }

    /// Query and gallery features with the current weights, then the protocol.
    @discardableResult
    public func evaluate() throws -> EvalResult {
        let t0 = Profile.now()
        let h = config.int("data.height"), w = config.int("data.width"), bs = config.int("eval.batch_size")
        let flip = config.bool("eval.flip"), seed = UInt64(config.int("train.seed"))
        let q = try extractFeatures(model: model, split: dataset.query, height: h, width: w, batchSize: bs, flip: flip, seed: seed, producer: "reid-dist")
        let g = try extractFeatures(model: model, split: dataset.gallery, height: h, width: w, batchSize: bs, flip: flip, seed: seed, producer: "reid-dist")
        let r = config.bool("eval.rerank") ? try rankReranked(query: q, gallery: g, metric: config.metric)
                                          : try rank(query: q, gallery: g, metric: config.metric)
        let sec = Profile.now() - t0
        log(String(format: "eval: rank-1 %.2f%%  rank-5 %.2f%%  rank-10 %.2f%%  mAP %.2f%%  mINP %.2f%%  (%d queries, %d gallery, %.1f s)",
                   r.rank(1) * 100, r.rank(5) * 100, r.rank(10) * 100, r.mAP * 100, r.mINP * 100, q.count, g.count, sec))
        record(["kind": "eval", "global_step": globalStep, "rank1": r.rank(1), "rank5": r.rank(5), "rank10": r.rank(10),
                "mAP": r.mAP, "mINP": r.mINP, "seconds": sec])
        return EvalResult(ranking: r, seconds: sec)
    }
}

public func formatDuration(_ s: Double) -> String {
    guard s.isFinite else { return "?" }
    let t = Int(s.rounded())
    return t >= 3600 ? String(format: "%dh%02dm", t / 3600, (t % 3600) / 60) : String(format: "%dm%02ds", t / 60, t % 60)
}
