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
    /// How ranks talk: MPI under a launcher, else a single process.
    public let comm: Communicator
    /// Replicas computed in this process: 1, or N for --simulate-ranks N.
    public let simulatedRanks: Int
    /// The data-parallel world: MPI's size, or the simulated ranks.
    public var worldSize: Int { comm.size > 1 ? comm.size : simulatedRanks }
    /// Per-replica batch-norm buffers and counters (simulated ranks only).
    var replicaBuffers: [[Float]] = [], replicaCounters: [[Int64]] = []
    /// Prints a line; rank 0 only in distributed runs.
    public var log: (String) -> Void = { print($0); fflush(stdout) }

    /// A warning of this rank's own (its shard's images, say): every rank prints its own,
    /// under MPI on standard error with its rank.
    func warn(_ s: String) {
        if comm.size > 1 { FileHandle.standardError.write(Data("rank \(comm.rank): warning: \(s)\n".utf8)) }
        else { log("warning: " + s) }
    }
    let metrics: FileHandle?

    public init(config: Config, writeFiles: Bool = true, comm: Communicator = SingleProcess(), simulateRanks: Int = 1) throws {
        try config.validate()
        self.config = config
        self.comm = comm
        precondition(simulateRanks >= 1)
        guard comm.size == 1 || simulateRanks == 1 else { throw ConfigError("--simulate-ranks is for runs without a launcher") }
        simulatedRanks = simulateRanks
        let world = comm.size > 1 ? comm.size : simulateRanks
        if config.sampler.kind == .identity && config.sampler.idsPerBatch % world != 0 {
            throw ConfigError("sampler.ids_per_batch = \(config.sampler.idsPerBatch) is the global P and must be divisible by the \(world) ranks")
        }
        if config.sampler.kind == .sequential && config.sampler.batchSize % world != 0 {
            throw ConfigError("sampler.ids_per_batch * sampler.instances = \(config.sampler.batchSize) must be divisible by the \(world) ranks")
        }
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
        let files = writeFiles && comm.isRoot
        if files {
            try FileManager.default.createDirectory(atPath: runDir, withIntermediateDirectories: true)
            try writeAtomically(Data(config.yaml.utf8), to: (runDir as NSString).appendingPathComponent("config.yaml"))
            let mpath = (runDir as NSString).appendingPathComponent("metrics.jsonl")
            if !FileManager.default.fileExists(atPath: mpath) { _ = FileManager.default.createFile(atPath: mpath, contents: nil) }
            metrics = FileHandle(forWritingAtPath: mpath)
            metrics?.seekToEndOfFile()
        } else { metrics = nil }
        if !comm.isRoot { log = { _ in } }
        if simulateRanks > 1 {
            replicaBuffers = Array(repeating: Array(UnsafeBufferPointer(start: model.arena.buffer, count: model.arena.bufferCount)), count: simulateRanks)
            replicaCounters = Array(repeating: model.arena.counters, count: simulateRanks)
        }
    }

    /// Rank 0's parameters, buffers, counters, optimizer state and position go
    /// to every rank; then the replicas are checked identical by checksum.
    public func synchronizeReplicas() throws {
        guard comm.size > 1 else { return }
        let a = model.arena
        try comm.broadcast(a.value, bytes: a.paramCount * 4, root: 0)
        try comm.broadcast(a.buffer, bytes: a.bufferCount * 4, root: 0)
        try a.counters.withUnsafeMutableBytes { try comm.broadcast($0.baseAddress!, bytes: $0.count, root: 0) }
        try comm.broadcast(optimizer.state1.ptr, bytes: optimizer.state1.count * 4, root: 0)
        if optimizer.state2.count > 0 { try comm.broadcast(optimizer.state2.ptr, bytes: optimizer.state2.count * 4, root: 0) }
        var pos = [Double(startEpoch), Double(globalStep), bestMAP, Double(optimizer.steps)]
        try pos.withUnsafeMutableBytes { try comm.broadcast($0.baseAddress!, bytes: $0.count, root: 0) }
        startEpoch = Int(pos[0]); globalStep = Int(pos[1]); bestMAP = pos[2]; optimizer.restore(steps: Int(pos[3]))
        try checkReplicas()
    }

    /// Compares a checksum of the parameters across ranks; a mismatch is an error.
    public func checkReplicas() throws {
        guard comm.size > 1 else { return }
        var sum = 0.0
        let a = model.arena
        for i in 0..<a.paramCount { sum += Double(a.value[i]) * Double(i % 7 + 1) }
        let sums = try comm.allgather([sum]).map { $0[0] }
        guard sums.allSatisfy({ $0 == sums[0] }) else { throw CommError("replicas differ: parameter checksums \(sums)") }
    }

    /// Running statistics averaged over ranks (before evaluation and checkpoints).
    func averageBatchNorm() throws {
        let a = model.arena, n = a.bufferCount
        if comm.size > 1 { try comm.allreduceMean(a.buffer, n); return }
        guard simulatedRanks > 1 else { return }
        var mean = [Float](repeating: 0, count: n)
        for r in replicaBuffers { for i in 0..<n { mean[i] += r[i] } }
        for i in 0..<n { mean[i] /= Float(simulatedRanks) }
        for r in 0..<simulatedRanks { replicaBuffers[r] = mean }
        a.buffer.update(from: mean, count: n)
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
        if simulatedRanks > 1 {       // every replica starts from the saved (averaged) statistics
            for r in 0..<simulatedRanks { swapOut(r) }
        }
        if st.worldSize != worldSize {
            log("note: the checkpoint was written by \(st.worldSize) rank(s), this run has \(worldSize): "
                + "it continues from the epoch boundary with \(worldSize)-way identity shards")
        }
        log("resumed from \(dir): epoch \(st.epoch) done, step \(st.step)")
    }

    func record(_ obj: [String: Any]) {
        guard let metrics, let data = try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]) else { return }
        metrics.write(data); metrics.write(Data("\n".utf8))
    }

    public var epochs: Int { config.int("schedule.epochs") }

    /// Each rank's batches of the epoch, as sample indices: [rank][step].
    /// With N ranks the training identities are permuted by (seed, epoch) and
    /// dealt into N disjoint shards; rank r draws P/N x K batches from shard r.
    /// Every rank computes every shard, so all agree on the step count with no
    /// communication; the count is the smallest over ranks.
    public func batches(epoch: Int) -> [[[Int]]] {
        let s = config.sampler, n = worldSize, seed = UInt64(config.int("train.seed"))
        let labels = dataset.train.samples.map(\.label)
        var perRank: [[[Int]]]
        switch s.kind {
        case .identity where n == 1:
            perRank = [identityBatches(labels: labels, config: s, seed: seed, epoch: epoch)]
        case .identity:
            let shards = identityShards(classes: dataset.classes, ranks: n, seed: seed, epoch: epoch)
            let local = SamplerConfig(kind: .identity, idsPerBatch: s.idsPerBatch / n, instances: s.instances)
            perRank = (0..<n).map { r in
                identityBatches(labels: labels, config: local, seed: seed &+ UInt64(r) &* 0x9E37, epoch: epoch, among: shards[r])
            }
        case .sequential:
            let global = sequentialBatches(count: labels.count, batchSize: s.batchSize).filter { $0.count == s.batchSize || n == 1 }
            let part = s.batchSize / n
            perRank = (0..<n).map { r in global.map { Array($0[(r * part)..<Swift.min((r + 1) * part, $0.count)]) } }
        }
        let steps = perRank.map(\.count).min() ?? 0
        return perRank.map { Array($0.prefix(steps)) }
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
        var commWaits: [Double] = []
        runStart = Profile.now()
        let myRanks = comm.size > 1 ? [comm.rank] : Array(0..<simulatedRanks)
        let bucketBytes = Int(config.double("train.bucket_mb") * 1_048_576)
        let sync = comm.size > 1 && bucketBytes > 0
            ? GradientSync(comm: comm, grad: model.arena.grad, count: model.arena.paramCount, bucketBytes: bucketBytes) : nil
        defer { sync?.close() }
        let tracing = !config.string("train.trace").isEmpty
        let checkEvery = config.int("train.check_replicas_every")
        for epoch in startEpoch..<end {
            let all = self.batches(epoch: epoch)
            let steps = all[0].count
            guard steps > 0 else {
                throw ConfigError("sampler.ids_per_batch = \(config.sampler.idsPerBatch): the training split has too few identities with images for one batch\(worldSize > 1 ? " per rank" : "")")
            }
            let lr = Float(schedule.rate(epoch: Double(epoch)))
            let pres = myRanks.map { r in Prefetcher(steps: 0..<steps) { s in try loader.batch(all[r][s], epoch: epoch, step: s, training: true) } }
            var lossSum = 0.0, correct = 0, seen = 0
            var windowStart = Profile.now(), windowImages = 0
            for step in 0..<steps {
                let tStep = Profile.now()
                model.arena.zeroGrad()
                sync?.beginStep()
                var stepLoss = 0.0, stepImages = 0, stepCorrect = 0
                var tForward = 0.0, tBackward = 0.0
                for (i, r) in myRanks.enumerated() {
                    let batch = try pres[i].next(step)
                    if simulatedRanks > 1 { swapIn(r) }
                    let t0 = Profile.now()
                    let res = model.forwardLoss(batch.images, labels: batch.labels, labelSmoothing: eps)
                    tForward += Profile.now() - t0
                    guard res.loss.isFinite else {
                        throw ConfigError("loss is \(res.loss) at epoch \(epoch + 1) step \(step + 1)\(worldSize > 1 ? " on rank \(r)" : ""): training diverged (lower optim.lr?)")
                    }
                    let t1 = Profile.now()
                    var syncError: Error?
                    if let sync {
                        model.backward(ready: { off in do { try sync.ready(off) } catch { syncError = syncError ?? error } })
                    } else {
                        model.backward()
                    }
                    if let syncError { throw syncError }
                    tBackward += Profile.now() - t1
                    if simulatedRanks > 1 { swapOut(r) }
                    stepLoss += res.loss * Double(batch.labels.count); stepImages += batch.labels.count; stepCorrect += res.correct
                }
                // Gradients averaged over ranks: summed, then scaled by 1/N.
                let tComm = Profile.now()
                if let sync { try sync.finish() }
                else if comm.size > 1 { try comm.allreduceMean(model.arena.grad, model.arena.paramCount) }
                else if simulatedRanks > 1 {
                    let g = model.arena.grad, k = 1 / Float(simulatedRanks)
                    for i in 0..<model.arena.paramCount { g[i] *= k }
                }
                let tOpt = Profile.now()
                optimizer.step(value: model.arena.value, grad: model.arena.grad, lr: lr)
                globalStep += 1
                if tracing && traceEvents.count < 50 * 64 {
                    let base = tStep - runStart
                    traceEvents.append((0, base, tForward))
                    traceEvents.append((1, base + tForward, tBackward))
                    for e in sync?.events ?? [] { traceEvents.append((Self.bucketKind + e.bucket, base + e.start, e.end - e.start)) }
                    traceEvents.append((2, base + tComm - tStep, tOpt - tComm))
                    traceEvents.append((3, base + tOpt - tStep, Profile.now() - tOpt))
                }
                if comm.size > 1 { commWaits.append(tOpt - tComm) }
                if checkEvery > 0 && globalStep % checkEvery == 0 { try checkReplicas() }
                var sums = [stepLoss, Double(stepImages), Double(stepCorrect)]
                if comm.size > 1 { try sums.withUnsafeMutableBufferPointer { try comm.allreduceSum($0.baseAddress!, 3) } }
                lossSum += sums[0]; seen += Int(sums[1]); correct += Int(sums[2])
                imagesSeen += Int(sums[1]); windowImages += Int(sums[1])
                if (step + 1) % logEvery == 0 || step + 1 == steps {
                    let now = Profile.now()
                    let ips = Double(windowImages) / Swift.max(now - windowStart, 1e-9)
                    let stepsLeft = (end - epoch - 1) * steps + (steps - step - 1)
                    let eta = Double(stepsLeft * config.sampler.batchSize) / Swift.max(ips, 1e-9)
                    let acc = Double(correct) / Double(seen) / heads
                    log(String(format: "epoch %d/%d step %d/%d  loss %.4f  acc %5.1f%%  lr %.2e  %.1f img/s  ETA %@",
                               epoch + 1, epochs, step + 1, steps, lossSum / Double(seen), acc * 100, lr, ips, formatDuration(eta)))
                    record(["kind": "train", "epoch": epoch + 1, "step": step + 1, "global_step": globalStep, "loss": lossSum / Double(seen),
                            "step_loss": sums[0] / sums[1], "acc": acc, "lr": Double(lr), "images_per_second": ips,
                            "data_wait_s": pres[0].waitSeconds, "ranks": worldSize])
                    windowStart = now; windowImages = 0
                }
            }
            if !loader.skipped.isEmpty { warn("\(loader.skipped.count) unreadable image(s) skipped so far (data.skip_bad_images); first: \(loader.skipped[0])") }
            let done = epoch + 1
            var metricsNow: [String: Double] = ["loss": lossSum / Double(seen)]
            var isBest = false
            let every = config.int("train.eval_every")
            let evaluating = done == epochs || (every > 0 && done % every == 0)
            let saving = done == epochs || done % config.int("train.checkpoint_every") == 0 || done == end
            if evaluating || saving { try averageBatchNorm() }
            if evaluating, let e = try evaluate() {
                metricsNow["mAP"] = e.ranking.mAP; metricsNow["rank1"] = e.ranking.rank(1)
                if e.ranking.mAP > bestMAP { bestMAP = e.ranking.mAP; isBest = true }
            }
            metricsNow["best_mAP"] = bestMAP
            if saving && comm.isRoot {
                let st = CheckpointState(epoch: done, step: globalStep, optimizerSteps: optimizer.steps, worldSize: worldSize,
                                         seed: config.int("train.seed"), classes: dataset.classes,
                                         config: config.values.mapValues(\.description), metrics: metricsNow, files: [:])
                let dir = try Checkpoint.save(runDir: runDir, model: model, optimizer: optimizer, state: st,
                                              keep: config.int("train.keep_checkpoints"), best: isBest)
                log("saved \(dir)")
            }
            if evaluating || saving { try comm.barrier() }
        }
        let total = Profile.now() - runStart
        var summary = String(format: "trained %d images in %@ (%.1f img/s)", imagesSeen, formatDuration(total), Double(imagesSeen) / Swift.max(total, 1e-9))
        if comm.size > 1 {
            let (exposed, imbalance) = GradientSync.splitWaits(try comm.allgather(commWaits))
            summary += String(format: "; gradient all-reduce exposed %.1f s (%.1f%% of the run%@), ranks waiting for the slowest %.1f s",
                              exposed, exposed / Swift.max(total, 1e-9) * 100, sync == nil ? ", blocking: train.bucket_mb 0" : "", imbalance)
            record(["kind": "comm", "allreduce_exposed_s": exposed, "rank_imbalance_s": imbalance, "run_s": total, "ranks": worldSize])
        }
        log(summary)
        if tracing { try writeTrace() }
    }

    var runStart = 0.0
    /// Trace event kinds: these four, then `bucketKind + b` for bucket b's all-reduce.
    static let traceNames = ["forward", "backward", "wait for all-reduce", "optimizer"]
    static let bucketKind = traceNames.count
    /// (kind, start, duration) of the traced steps, seconds from the run's start.
    var traceEvents: [(kind: Int, start: Double, duration: Double)] = []

    /// Writes the trace: rank 0 gathers every rank's events (pid = rank).
    func writeTrace() throws {
        // Every rank's events as (kind, start, duration) doubles, padded to the longest with -1.
        var mine = traceEvents.flatMap { [Double($0.kind), $0.start, $0.duration] }
        let counts = try comm.allgather([Double(mine.count)]).map { Int($0[0]) }
        mine += [Double](repeating: -1, count: counts.max()! - mine.count)
        let all = try comm.allgather(mine)
        guard comm.isRoot else { return }
        var events: [[String: Any]] = []
        for (rank, values) in all.enumerated() {
            for k in stride(from: 0, to: counts[rank], by: 3) {
                let kind = Int(values[k]), bucket = kind >= Self.bucketKind
                events.append(["name": bucket ? "all-reduce bucket \(kind - Self.bucketKind)" : Self.traceNames[kind],
                               "ph": "X", "pid": rank, "tid": bucket ? 1 : 0, "ts": values[k + 1] * 1e6, "dur": values[k + 2] * 1e6])
            }
        }
        let data = try JSONSerialization.data(withJSONObject: ["traceEvents": events, "displayTimeUnit": "ms"], options: [])
        try writeAtomically(data, to: config.string("train.trace"))
        log("wrote trace \(config.string("train.trace")) (\(events.count) events; open in a browser's trace viewer, e.g. chrome://tracing or Perfetto)")
    }

    /// Simulated rank r's batch-norm statistics in and out of the model.
    func swapIn(_ r: Int) {
        model.arena.buffer.update(from: replicaBuffers[r], count: model.arena.bufferCount)
        model.arena.counters = replicaCounters[r]
    }
    func swapOut(_ r: Int) {
        let src = model.arena.buffer, n = model.arena.bufferCount
        replicaBuffers[r].withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: src, count: n) }
        replicaCounters[r] = model.arena.counters
    }

    /// Query and gallery features with the current weights (every rank extracts
    /// a share), then the protocol on rank 0, which alone gets a result.
    @discardableResult
    public func evaluate() throws -> EvalResult? {
        let t0 = Profile.now()
        let h = config.int("data.height"), w = config.int("data.width"), bs = config.int("eval.batch_size")
        let flip = config.bool("eval.flip")
        let q = try extractFeatures(model: model, split: dataset.query, height: h, width: w, batchSize: bs, flip: flip, comm: comm, producer: "reid-dist")
        let g = try extractFeatures(model: model, split: dataset.gallery, height: h, width: w, batchSize: bs, flip: flip, comm: comm, producer: "reid-dist")
        guard let q, let g else { return nil }
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
