// The training loop. For each epoch: this process's batches (identity shards
// dealt to ranks); for each step: the next batch, forward and loss, backward
// with the gradients averaged over ranks, the optimizer's update, the ranks'
// agreement on its figures (and on stopping or checkpointing: a signal,
// train.checkpoint_minutes), a record of it. At an epoch's end: batch-norm
// statistics averaged over ranks, then a checkpoint and an evaluation when due.
//
// The parts: TrainingStep (one step, also what `bench` times),
// GradientAveraging (one process, simulated ranks or MPI), RunOutputs (what
// the run prints and writes), Checkpoint (folders written atomically).
import Foundation
import ReIDCore
import ReIDData
import ReIDEval
import ReIDImage
import ReIDReport

public struct EvalResult {
    public let ranking: RankingResult
    public let seconds: Double
}

public final class Trainer {
    public let config: Config
    public let dataset: ReIDDataset
    public let model: GroupedMultiBranchNet
    public let optimizer: Optimizer
    /// How ranks talk: MPI under a launcher, else a single process.
    public let comm: Communicator
    /// How gradients become the world's mean; knows how many ranks there are.
    public let averaging: GradientAveraging
    public let outputs: RunOutputs
    /// BLAS and engine threads of this process.
    public let threads: Int
    /// Where the run stands: where it starts (a checkpoint's position, or the beginning), then
    /// its global step and best mAP as it goes.
    public var position = TrainingPosition()
    /// The epoch the loop starts at (epochs completed before it).
    public var startEpoch: Int { position.epoch }
    public var globalStep: Int { position.globalStep }
    public var bestMAP: Double { position.bestMAP }
    /// Steps of `startEpoch` already taken (a mid-epoch checkpoint).
    public var startStep: Int { position.stepInEpoch }
    /// Every replica's batch-norm buffers from a mid-epoch checkpoint (rank 0), until synchronised.
    var resumedReplicaBuffers: [Float]?
    /// Rank 0's hold on the run folder (RunFolder.swift).
    let lock: RunLock?
    var lastCheckpoint = Profile.now()

    public var worldSize: Int { averaging.worldSize }
    public var runDir: String { config.train.runDir }
    public var epochs: Int { config.schedule.epochs }
    /// Prints a line; rank 0 only in distributed runs.
    public var log: (String) -> Void {
        get { outputs.log }
        set { outputs.log = newValue }
    }

    /// Sets a run up, step by step: the run folder and where to resume from (rank 0), the data,
    /// the model and optimizer, gradient averaging and the outputs; then continues from a
    /// checkpoint if asked, and makes every replica equal to rank 0's. With `writeFiles` false
    /// nothing is written (tests, benchmarks).
    public init(
        config: Config, writeFiles: Bool = true, comm: Communicator = SingleProcess(), simulateRanks: Int = 1,
        start: StartMode = .fresh
    ) throws {
        try config.validate()
        self.config = config
        self.comm = comm
        let folder = try Self.prepareRunFolder(config.train.runDir, start: start, writeFiles: writeFiles, comm: comm)
        lock = folder.lock
        let world = comm.size > 1 ? comm.size : simulateRanks
        threads = config.train.threadsPerRank(ranksOnNode: comm.localSize)
        setBLASThreads(threads)
        dataset = try Self.loadData(config, ranks: world, comm: comm, threads: threads)
        model = try Self.buildModel(config, classes: dataset.classes, threads: threads)
        optimizer = config.optim.make(paramCount: model.arena.paramCount)
        averaging = try makeGradientAveraging(
            comm: comm, simulatedRanks: simulateRanks, arena: model.arena, bucketBytes: config.train.bucketBytes,
            wire: config.train.gradType)
        outputs = try Self.makeOutputs(
            config, writeFiles: writeFiles, comm: comm, model: model.spec, world: world, threads: threads,
            averaging: averaging.description)
        if config.loss.usesTriplet { log("loss: " + config.loss.description) }
        if let r = folder.resumeFrom {
            if let note = r.note { log("note: " + note) }
            try resume(from: r.dir)
        }
        try synchronizeReplicas()
    }

    /// Set-up, step 1 (rank 0 with `writeFiles`): the run folder's lock, unfinished checkpoints
    /// removed, and the folder prepared as `start` says: refused when it holds a run (`fresh`),
    /// moved aside (`restart`), or the checkpoint to continue from found (`resume`; none yet: the
    /// run starts over, what was there moved aside). Without `writeFiles` rank 0 only finds the
    /// checkpoint; other ranks do nothing here (rank 0's position reaches them by broadcast).
    static func prepareRunFolder(_ runDir: String, start: StartMode, writeFiles: Bool, comm: Communicator) throws -> (
        lock: RunLock?, resumeFrom: (dir: String, note: String?)?
    ) {
        guard writeFiles && comm.isRoot else {
            if case .resume(let spec) = start, comm.isRoot {
                return (nil, try Checkpoint.resolve(spec, runDir: runDir))
            }
            return (nil, nil)
        }
        let lock = try RunLock(runDir: runDir)
        for t in Checkpoint.removeUnfinished(runDir: runDir) {
            print("removed \(t), an unfinished checkpoint of an earlier job")
        }
        switch start {
        case .restart:
            if ((try? FileManager.default.contentsOfDirectory(atPath: runDir)) ?? []).contains(where: { $0 != ".lock" })
            {
                print("moved the previous run to \(try RunFolder.moveAside(runDir))")
            }
            return (lock, nil)
        case .fresh:
            if let what = RunFolder.holdsRun(runDir) {
                throw ConfigError(
                    "\(runDir): already holds a run (\(what)); continue it with --resume auto, or move it aside and start over with --restart"
                )
            }
            return (lock, nil)
        case .resume(let spec):
            if let found = try Checkpoint.resolve(spec, runDir: runDir) { return (lock, found) }
            // A job that ended before its first checkpoint (killed, preempted, a dead link) is
            // started again: what it wrote is moved aside as --restart does, so a requeued or
            // resubmitted job with --resume auto always goes on.
            if let what = RunFolder.holdsRun(runDir) {
                print(
                    "\(runDir) holds \(what) but no checkpoint yet: moved it to \(try RunFolder.moveAside(runDir)) and starting from scratch"
                )
            } else {
                print("no checkpoint in \(runDir) yet: starting from scratch")
            }
            return (lock, nil)
        }
    }

    /// Set-up, step 2: the dataset, the sampler checked against the ranks, and (with
    /// `data.check_images`) every image's header, each rank reading its share (a collective).
    static func loadData(_ config: Config, ranks: Int, comm: Communicator, threads: Int) throws -> ReIDDataset {
        try checkDivisible(config.sampler, ranks: ranks)
        let data = config.data
        let dataset = try data.load()
        guard dataset.train.samples.count >= 2 else {
            throw DataError("\(dataset.train.folder): fewer than 2 training images")
        }
        if data.checkImages {
            try checkImages(
                dataset, skipBadTraining: data.skipBadImages, maxPixels: data.maxPixels, comm: comm, threads: threads)
        }
        return dataset
    }

    /// Set-up, step 3: the network for `classes` identities with the configuration's engine
    /// options, initialised from `train.seed`, then from `model.pretrained` (the backbone) and
    /// `model.init` (everything) when given.
    static func buildModel(_ config: Config, classes: Int, threads: Int) throws -> GroupedMultiBranchNet {
        let m = config.model
        var spec = m.spec
        spec.classes = classes
        let model = GroupedMultiBranchNet(
            spec, seed: UInt64(config.train.seed), options: config.engineOptions(threads: threads))
        if let pre = m.pretrained {
            try model.loadPretrainedBackbone(try pretrainedWeights(pre, modelElements: model.arena.paramCount))
            if let bad = model.arena.firstNonFinite() { throw CheckpointError("\(pre) (model.pretrained): \(bad)") }
        }
        if let initial = m.initial {
            try model.arena.load(from: try SafeTensorsFile(path: initial), strict: true)
            if let bad = model.arena.firstNonFinite() { throw CheckpointError("\(initial) (model.init): \(bad)") }
        }
        return model
    }

    /// Set-up, step 4: what the run prints and writes (the run folder's files on rank 0).
    static func makeOutputs(
        _ config: Config, writeFiles: Bool, comm: Communicator, model spec: ModelSpec, world: Int, threads: Int,
        averaging: String
    ) throws -> RunOutputs {
        let outputs = try RunOutputs(
            runDir: writeFiles ? config.train.runDir : nil, configYAML: config.yaml, comm: comm,
            logEvery: config.train.logEvery, heads: spec.groups * spec.branches, worldSize: world,
            averaging: averaging, tracePath: config.train.trace)
        let data = config.data
        outputs.runInfo = [
            "threads_per_rank": threads, "gradient_averaging": averaging,
            "data": "\(data.root) (\(data.layout.rawValue))",
            "model":
                "ResNet-\(spec.depth) width \(spec.width), \(spec.groups) groups x \(spec.branches) branches, \(spec.classes) classes",
            "loss": config.loss.description
        ]
        return outputs
    }

    /// Every image's header, each rank reading its share; a damaged query or gallery image
    /// (or training image, unless data.skip_bad_images) stops the run before it starts.
    static func checkImages(
        _ d: ReIDDataset, skipBadTraining: Bool, maxPixels: Int, comm: Communicator, threads: Int
    ) throws {
        let t0 = Profile.now()
        let splits = [d.train, d.query, d.gallery]
        let paths = splits.flatMap { $0.samples.map(\.path) }
        let mine = stride(from: comm.rank, to: paths.count, by: comm.size).map { paths[$0] }
        let bad = checkImageHeaders(mine, threads: Swift.max(threads, 2), maxPixels: maxPixels) { done, total in
            if comm.isRoot && total > 2000 && done < total {
                print(String(format: "\rchecking images: %d of %d", done * comm.size, paths.count), terminator: "")
                fflush(stdout)
            }
        }
        let trainSet = Set(d.train.samples.map(\.path))
        let fatal = bad.filter { !(skipBadTraining && trainSet.contains($0.path)) }
        var counts = [Double(bad.count), Double(fatal.count)]
        try comm.allreduceSum(&counts, 2)
        let who = comm.size > 1 ? "rank \(comm.rank): " : ""
        for b in fatal.prefix(20) { FileHandle.standardError.write(Data("\(who)error: \(b.error)\n".utf8)) }
        if comm.isRoot {
            print(
                String(
                    format: "\rchecked %d images in %.1f s%@", paths.count, Profile.now() - t0,
                    counts[0] > 0 ? ": \(Int(counts[0])) unreadable" : ""))
        }
        if counts[1] > 0 {
            throw DataError(
                "\(Int(counts[1])) unreadable image(s) in \(d.root) (listed above); fix or remove them"
                    + (skipBadTraining ? "" : ", or set data.skip_bad_images to skip unreadable training images"))
        }
        if counts[0] > 0 {
            for b in bad.prefix(5) {
                FileHandle.standardError.write(Data("\(who)warning: \(b.error) (skipped: data.skip_bad_images)\n".utf8))
            }
        }
    }

    static func checkDivisible(_ s: SamplerConfig, ranks: Int) throws {
        if s.kind == .identity && s.idsPerBatch % ranks != 0 {
            throw ConfigError(
                "sampler.ids_per_batch = \(s.idsPerBatch) is the global P and must be divisible by the \(ranks) ranks")
        }
        if s.kind == .sequential && s.batchSize % ranks != 0 {
            throw ConfigError(
                "sampler.ids_per_batch * sampler.instances = \(s.batchSize) must be divisible by the \(ranks) ranks")
        }
    }

    /// How a run ended: trained to its end, or stopped on a signal after a checkpoint.
    public enum RunEnd: Equatable {
        case finished
        case stopped(signal: String, checkpoint: String?)
    }

    /// Trains from `startEpoch` (and `startStep`) to the configured end (or `untilEpoch`).
    @discardableResult
    public func run(untilEpoch: Int? = nil) throws -> RunEnd {
        try lock?.acquire()
        defer { lock?.release() }
        let end = Swift.min(untilEpoch ?? epochs, epochs)
        let loader = ImageLoader(
            samples: dataset.train.samples, height: config.data.height, width: config.data.width,
            augment: config.augment, seed: UInt64(config.train.seed), skipBadImages: config.data.skipBadImages,
            maxPixels: config.data.maxPixels)
        let comm = self.comm
        let step = TrainingStep(
            model: model, optimizer: optimizer, averaging: averaging, loss: config.loss,
            allgather: comm.size > 1 ? { try comm.allgather($0, bytes: $1) } : nil)
        let watchdog = StepWatchdog(
            timeout: config.train.stepTimeout, heartbeatTimeout: config.train.heartbeatTimeout,
            comm: comm, rank: comm.rank, ranks: comm.size)
        defer {
            averaging.close()
            watchdog.close()
        }
        outputs.beginRun(epochs: epochs, until: end, imagesPerStep: config.sampler.batchSize)
        for epoch in startEpoch..<end {
            let mine = try localBatches(epoch: epoch), first = epoch == startEpoch ? startStep : 0
            let feeds = mine.map { b in
                Prefetcher(steps: first..<b.count) { s in try loader.batch(b[s], epoch: epoch, step: s, training: true)
                }
            }
            let lr = Float(config.schedule.rate(epoch: Double(epoch)))
            outputs.beginEpoch(epoch, steps: mine[0].count, progress: first > 0 ? position.epochProgress : nil)
            for s in first..<mine[0].count {
                watchdog.arm("epoch \(epoch + 1) step \(s + 1)")
                defer { watchdog.disarm() }
                let result = try step.run(lr: lr, context: "epoch \(epoch + 1) step \(s + 1)") { i in
                    let b = try feeds[i].next(s)
                    return (b.images, b.labels)
                }
                position.globalStep += 1
                let totals = try agree(on: result)
                if outputs.stepDone(result, totals: totals, step: s) {
                    let waits = try comm.allgather([outputs.windowWait]).map { $0[0] }
                    outputs.logWindow(
                        result, totals: totals, step: s, globalStep: globalStep, lr: lr,
                        dataWait: feeds[0].waitSeconds, rankWaits: waits)
                }
                try checkReplicasIfDue()
                if totals.stop || totals.checkpoint {
                    let dir = try saveMidEpoch(epoch: epoch, stepsDone: s + 1)
                    if totals.stop { return try stopped(checkpoint: dir) }
                }
            }
            position.stepInEpoch = 0
            if !loader.skipped.isEmpty {
                outputs.warn(
                    "\(loader.skipped.count) unreadable image(s) skipped so far (data.skip_bad_images); first: \(loader.skipped[0])"
                )
            }
            try endEpoch(epoch + 1, runEnd: end, watchdog: watchdog)
        }
        try finishRun()
        return .finished
    }

    /// Every rank's all-reduce waits and trace events, gathered (collectives: every rank calls
    /// this at the run's end), then rank 0's summary and trace file.
    func finishRun() throws {
        let waits = comm.size > 1 ? try comm.allgather(outputs.allreduceWaits) : nil
        let traces = outputs.tracePath == nil ? nil : try comm.allgatherVariable(outputs.traceValues)
        try outputs.endRun(rankWaits: waits, traces: traces)
    }

    /// The step's figures summed over ranks, with any rank's stop request (a signal) and
    /// rank 0's checkpoint clock, in the one all-reduce every step makes anyway.
    func agree(on r: StepResult) throws -> StepTotals {
        let minutes = config.train.checkpointMinutes
        let due = comm.isRoot && minutes > 0 && Profile.now() - lastCheckpoint >= minutes * 60
        let t = r.triplet
        var v = [
            r.lossSum, Double(r.images), Double(r.correct), StopSignal.pending == nil ? 0 : 1, due ? 1 : 0,
            t.lossSum, t.dapSum, t.danSum, Double(t.anchors)
        ]
        try comm.allreduceSum(&v, v.count)
        return StepTotals(
            lossSum: v[0], images: Int(v[1]), correct: Int(v[2]), stop: v[3] > 0, checkpoint: v[4] > 0,
            triplet: TripletStats(lossSum: v[5], dapSum: v[6], danSum: v[7], anchors: Int(v[8])))
    }

    func stopped(checkpoint dir: String?) throws -> RunEnd {
        let why = StopSignal.pending ?? "another rank's signal"
        log(
            "stopped on \(why) after step \(globalStep)"
                + (dir.map { "; checkpoint \($0); continue with --resume auto" } ?? ""))
        try finishRun()
        return .stopped(signal: why, checkpoint: dir)
    }

    /// At an epoch's end: when an evaluation or a checkpoint is due, batch-norm statistics
    /// averaged over ranks, then the evaluation, then (rank 0) the checkpoint.
    /// The batch-norm average is the one collective every rank enters right after the epoch's
    /// last step: the watchdog times it like a step, so a link that goes down there ends the job
    /// as it does mid-epoch (it hung until the launcher's own time limit before). The checkpoint
    /// and evaluation after it are not timed, but a rank that stops answering heartbeats there
    /// ends the job too.
    func endEpoch(_ done: Int, runEnd: Int, watchdog: StepWatchdog? = nil) throws {
        let t = config.train
        let evaluating = done == epochs || (t.evalEvery > 0 && done % t.evalEvery == 0)
        let saving = done == epochs || done % t.checkpointEvery == 0 || done == runEnd
        guard evaluating || saving else { return }
        do {
            watchdog?.arm("the end of epoch \(done) (batch-norm statistics averaged over ranks)", .collective)
            defer { watchdog?.disarm() }
            try averaging.averageBatchNorm()
        }
        // Rank 0's checkpoint and the evaluation may rightly take long (a large gallery, a slow
        // file system): not timed, but the other ranks must keep answering their heartbeats.
        watchdog?.arm("the \(evaluating ? "evaluation" : "checkpoint") after epoch \(done)", .pingedOnly)
        defer { watchdog?.disarm() }
        var metrics: [String: Double] = ["loss": outputs.epochLoss, "best_mAP": bestMAP]
        // The checkpoint first: an evaluation that fails (a damaged gallery image) loses nothing.
        let dir = saving && comm.isRoot ? try saveCheckpoint(epoch: done, stepInEpoch: nil, metrics: metrics) : nil
        if evaluating, let e = try evaluate() {
            metrics["mAP"] = e.ranking.mAP
            metrics["rank1"] = e.ranking.rank(1)
            let isBest = e.ranking.mAP > bestMAP
            if isBest { position.bestMAP = e.ranking.mAP }
            metrics["best_mAP"] = bestMAP
            // The best pointer names the best evaluated checkpoint: this one if it beats every
            // evaluation so far, or if none of the saved ones has been marked yet.
            let unmarked = !FileManager.default.fileExists(
                atPath: (Checkpoint.folder(runDir) as NSString).appendingPathComponent("best"))
            if let dir { try Checkpoint.recordEvaluation(dir, metrics: metrics, best: isBest || unmarked) }
        }
        try comm.barrier()
    }

    /// A checkpoint of the exact step: every replica's batch-norm statistics go with it
    /// (gathered at rank 0), so that resuming continues as if nothing had happened.
    func saveMidEpoch(epoch: Int, stepsDone: Int) throws -> String? {
        let replicas = try averaging.replicaBuffers()
        var dir: String?
        if comm.isRoot {
            dir = try saveCheckpoint(
                epoch: epoch, stepInEpoch: stepsDone, metrics: ["loss": outputs.epochLoss, "best_mAP": bestMAP],
                replicas: replicas)
        }
        try comm.barrier()
        return dir
    }

    @discardableResult
    func saveCheckpoint(epoch: Int, stepInEpoch: Int?, metrics: [String: Double], replicas: [Float]? = nil) throws
        -> String
    {
        let st = CheckpointState(
            epoch: epoch, step: globalStep, optimizerSteps: optimizer.steps, worldSize: worldSize,
            seed: config.train.seed, classes: dataset.classes,
            config: config.values.mapValues(\.description), metrics: metrics, files: [:],
            stepInEpoch: stepInEpoch, epochProgress: stepInEpoch == nil ? nil : outputs.epochProgress)
        let dir = try Checkpoint.save(
            runDir: runDir, model: model, optimizer: optimizer, replicaBuffers: replicas, state: st,
            keep: config.train.keepCheckpoints, card: ModelCard(config: config, classes: dataset.classes))
        lastCheckpoint = Profile.now()
        log("saved \(dir)")
        return dir
    }

    // MARK: replicas

    /// Rank 0's parameters, buffers, counters, optimizer state and position go
    /// to every rank; then the replicas are checked identical by checksum.
    public func synchronizeReplicas() throws {
        guard comm.size > 1 else {
            if startStep > 0 { try averaging.restoreReplicaBuffers(resumedReplicaBuffers) }
            resumedReplicaBuffers = nil
            return
        }
        let a = model.arena
        try comm.broadcast(a.value, bytes: a.paramCount * 4, root: 0)
        try comm.broadcast(a.buffer, bytes: a.bufferCount * 4, root: 0)
        try a.counters.withUnsafeMutableBytes { try comm.broadcast($0.baseAddress!, bytes: $0.count, root: 0) }
        try comm.broadcast(optimizer.state1.ptr, bytes: optimizer.state1.count * 4, root: 0)
        if optimizer.state2.count > 0 {
            try comm.broadcast(optimizer.state2.ptr, bytes: optimizer.state2.count * 4, root: 0)
        }
        position.optimizerSteps = optimizer.steps
        position = try comm.broadcast(position, root: 0)
        optimizer.restore(steps: position.optimizerSteps)
        if startStep > 0 { try averaging.restoreReplicaBuffers(resumedReplicaBuffers) }
        resumedReplicaBuffers = nil
        try checkReplicas()
    }

    /// Compares a checksum of the parameters across ranks; a mismatch is an error.
    public func checkReplicas() throws {
        guard comm.size > 1 else { return }
        var sum = 0.0
        let a = model.arena
        for i in 0..<a.paramCount { sum += Double(a.value[i]) * Double(i % 7 + 1) }
        let sums = try comm.allgather([sum]).map { $0[0] }
        guard sums.allSatisfy({ $0 == sums[0] }) else {
            throw CommError("replicas differ: parameter checksums \(sums)")
        }
    }

    func checkReplicasIfDue() throws {
        let every = config.train.checkReplicasEvery
        if every > 0 && globalStep % every == 0 { try checkReplicas() }
    }

    /// Restores a checkpoint folder (hashes checked) to continue after its epoch.
    public func resume(from dir: String) throws {
        let st = try Checkpoint.verify(dir)
        guard st.classes == dataset.classes else {
            throw CheckpointError(
                "\(dir): checkpoint has \(st.classes) classes but \(dataset.train.folder) has \(dataset.classes) identities"
            )
        }
        try model.arena.load(
            from: try SafeTensorsFile(path: (dir as NSString).appendingPathComponent("model.safetensors")), strict: true
        )
        if let bad = model.arena.firstNonFinite() {
            throw CheckpointError("\(dir)/model.safetensors: \(bad); the run cannot continue from it")
        }
        guard st.epoch <= epochs else {
            throw CheckpointError(
                "\(dir): the checkpoint has done \(st.epoch) epochs, beyond this run's schedule.epochs = \(epochs)")
        }
        if st.midEpoch && st.worldSize != worldSize {
            throw CheckpointError(
                "\(dir) was written in the middle of epoch \(st.epoch + 1) by \(st.worldSize) rank(s); this run has \(worldSize). "
                    + "Resume it with \(st.worldSize) rank(s), or from an epoch boundary (a checkpoint folder epoch-NNNN) with any number"
            )
        }
        try Checkpoint.loadOptimizer(dir, into: optimizer)
        position = st.position
        averaging.adoptModelState() // every replica starts from the saved (averaged) statistics
        if st.midEpoch {
            resumedReplicaBuffers = try Checkpoint.loadReplicaBuffers(
                dir, world: worldSize, count: model.arena.bufferCount)
        } else if st.worldSize != worldSize {
            log(
                "note: the checkpoint was written by \(st.worldSize) rank(s), this run has \(worldSize): "
                    + "it continues from the epoch boundary with \(worldSize)-way identity shards")
        }
        log(
            "resumed from \(dir): epoch \(st.epoch) done"
                + (st.midEpoch ? " and \(startStep) step(s) of epoch \(st.epoch + 1)" : "") + ", step \(st.step)")
    }

    // MARK: batches

    /// Each rank's batches of the epoch, as sample indices: [rank][step].
    /// With N ranks the training identities are permuted by (seed, epoch) and
    /// dealt into N disjoint shards; rank r draws P/N x K batches from shard r.
    /// Every rank computes every shard, so all agree on the step count with no
    /// communication; the count is the smallest over ranks.
    public func batches(epoch: Int) -> [[[Int]]] {
        let s = config.sampler, n = worldSize, seed = UInt64(config.train.seed)
        let labels = dataset.train.samples.map(\.label)
        var perRank: [[[Int]]]
        switch s.kind {
        case .identity where n == 1:
            perRank = [identityBatches(labels: labels, config: s, seed: seed, epoch: epoch)]
        case .identity:
            let shards = identityShards(classes: dataset.classes, ranks: n, seed: seed, epoch: epoch)
            let local = SamplerConfig(kind: .identity, idsPerBatch: s.idsPerBatch / n, instances: s.instances)
            perRank = (0..<n).map { r in
                identityBatches(
                    labels: labels, config: local, seed: seed &+ UInt64(r) &* 0x9E37, epoch: epoch, among: shards[r])
            }
        case .sequential:
            let global = sequentialBatches(count: labels.count, batchSize: s.batchSize).filter {
                $0.count == s.batchSize || n == 1
            }
            let part = s.batchSize / n
            perRank = (0..<n).map { r in global.map { Array($0[(r * part)..<Swift.min((r + 1) * part, $0.count)]) } }
        }
        let steps = perRank.map(\.count).min() ?? 0
        return perRank.map { Array($0.prefix(steps)) }
    }

    /// The batches of the ranks this process computes: [local replica][step].
    func localBatches(epoch: Int) throws -> [[[Int]]] {
        let all = batches(epoch: epoch)
        guard all[0].count > 0 else {
            throw ConfigError(
                "sampler.ids_per_batch = \(config.sampler.idsPerBatch): the training split has too few identities with images for one batch\(worldSize > 1 ? " per rank" : "")"
            )
        }
        return averaging.localRanks.map { all[$0] }
    }

    // MARK: evaluation

    /// Query and gallery features with the current weights (every rank extracts
    /// a share), then the protocol on rank 0, which alone gets a result.
    @discardableResult
    public func evaluate() throws -> EvalResult? {
        let e = config.eval
        guard
            let ev = try Evaluation.run(
                model: model, dataset: dataset, data: config.data, eval: e, comm: comm, producer: "reid-dist")
        else { return nil }
        let q = ev.query, g = ev.gallery, r = ev.ranking, sec = ev.seconds
        let epoch = globalStep == 0 ? startEpoch : outputs.epoch + 1
        let ranked = RankedListsFile(
            title: "epoch \(epoch)",
            worst: rankedLists(query: q, gallery: g, metric: e.metric, result: r, indices: r.queries(.worst, 4)),
            best: rankedLists(query: q, gallery: g, metric: e.metric, result: r, indices: r.queries(.best, 4)))
        outputs.evaluated(
            RankingResultSummary(
                rank1: r.rank(1), rank5: r.rank(5), rank10: r.rank(10), mAP: r.mAP, mINP: r.mINP,
                queries: q.count, gallery: g.count, seconds: sec, cmc: r.cmc),
            epoch: epoch, globalStep: globalStep, ranked: ranked)
        return EvalResult(ranking: r, seconds: sec)
    }
}
