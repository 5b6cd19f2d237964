// One training step, the same code for `train` and `bench`: zero the
// gradients; for each replica this process computes (one, or every simulated
// rank): its batch, forward and loss (LossSpec: cross-entropy, triplet with
// mining over the global batch, or both), backward (telling the gradient
// averaging which gradients are final); then the gradients' mean over the
// world; then the optimizer's update.
import Foundation
import ReIDCore

/// What one step did and how long each part took (seconds; `start` on Profile's clock).
public struct StepResult {
    public enum Phase: Int, CaseIterable { case forward, backward, allreduceWait, optimizer }
    /// This process's images, their summed loss and the correct predictions summed over heads.
    public var lossSum = 0.0, images = 0, correct = 0
    public var start = 0.0, seconds = 0.0
    /// (phase, start, duration) in order, starts relative to `start`.
    public var phases: [(phase: Phase, start: Double, duration: Double)] = []
    /// The step's bucket all-reduces, relative to `start`.
    public var buckets: [BucketEvent] = []
    /// Triplet figures over this process's anchors (zero without a triplet loss).
    public var triplet = TripletStats()
    /// Seconds this process spent in the features' all-gather (global mining across processes).
    public var gatherSeconds = 0.0

    public func total(_ p: Phase) -> Double { phases.filter { $0.phase == p }.reduce(0) { $0 + $1.duration } }
}

public final class TrainingStep {
    public let model: GroupedMultiBranchNet
    public let optimizer: Optimizer
    public let averaging: GradientAveraging
    public let loss: LossSpec
    /// Every rank's bytes (the same count on each), in rank order: the communicator's all-gather,
    /// for mining over the global batch across processes (nil: one process).
    let allgather: ((UnsafeRawPointer, Int) throws -> [UInt8])?

    public init(
        model: GroupedMultiBranchNet, optimizer: Optimizer, averaging: GradientAveraging, loss: LossSpec,
        allgather: ((UnsafeRawPointer, Int) throws -> [UInt8])? = nil
    ) {
        self.model = model
        self.optimizer = optimizer
        self.averaging = averaging
        self.loss = loss
        self.allgather = allgather
    }

    public convenience init(
        model: GroupedMultiBranchNet, optimizer: Optimizer, averaging: GradientAveraging, labelSmoothing: Float
    ) {
        self.init(
            model: model, optimizer: optimizer, averaging: averaging, loss: LossSpec(labelSmoothing: labelSmoothing))
    }

    /// Whether this step mines triplets over every rank's images.
    var minesGlobally: Bool { loss.usesTriplet && loss.scope == .global && averaging.worldSize > 1 }

    /// One step at learning rate `lr`. `batch(i)` gives the batch of `averaging.localRanks[i]`;
    /// `context` names the step in errors ("epoch 3 step 12").
    public func run(
        lr: Float, context: @autoclosure () -> String,
        batch: (Int) throws -> (images: Tensor, labels: [Int])
    ) throws -> StepResult {
        var r = StepResult()
        r.start = Profile.now()
        func phase(_ p: StepResult.Phase, since t: Double) -> Double {
            let now = Profile.now()
            r.phases.append((p, t - r.start, now - t))
            return now
        }
        model.arena.zeroGrad()
        let begun = Profile.now() - r.start
        averaging.beginStep()
        let ranks = averaging.localRanks
        // Simulated ranks mining globally: every replica's features before any backward.
        var batches: [(images: Tensor, labels: [Int])] = []
        var global: (anchors: TripletLoss.Anchors, grad: [Float], perRank: Int)?
        if minesGlobally && ranks.count > 1 {
            let t = Profile.now()
            let buffers = Array(UnsafeBufferPointer(start: model.arena.buffer, count: model.arena.bufferCount))
            let counters = model.arena.counters
            var all: [Float] = [], labels: [Int] = []
            for i in ranks.indices {
                let b = try batch(i)
                batches.append(b)
                _ = model.forwardLoss(b.images, labels: b.labels, labelSmoothing: loss.labelSmoothing, weight: 0)
                all += rows(of: model.pooledFeatures)
                labels += b.labels
            }
            buffers.withUnsafeBufferPointer { model.arena.buffer.update(from: $0.baseAddress!, count: $0.count) }
            model.arena.counters = counters
            global = globalTriplet(all, labels, perRank: batches[0].labels.count)
            _ = phase(.forward, since: t)
        }
        for (i, rank) in ranks.enumerated() {
            let b = batches.isEmpty ? try batch(i) : batches[i]
            averaging.enter(rank: rank)
            var t = Profile.now()
            let out = model.forwardLoss(
                b.images, labels: b.labels, labelSmoothing: loss.labelSmoothing,
                weight: loss.usesCrossEntropy ? Float(loss.ceWeight) : 0)
            var total = loss.usesCrossEntropy ? loss.ceWeight * out.loss : 0
            var featureGrad: [Float]?
            if loss.usesTriplet {
                let (value, grad) = try tripletPart(
                    rank: rank, labels: b.labels, global: &global, stats: &r.triplet,
                    gatherSeconds: &r.gatherSeconds)
                total += loss.tripletWeight * value
                featureGrad = grad
            }
            t = phase(.forward, since: t)
            guard total.isFinite else {
                throw TrainingError(
                    "loss is \(total) at \(context())\(averaging.worldSize > 1 ? " on rank \(rank)" : ""): training diverged (lower optim.lr?)"
                )
            }
            try backward(featureGrad)
            _ = phase(.backward, since: t)
            averaging.leave(rank: rank)
            r.lossSum += total * Double(b.labels.count)
            r.images += b.labels.count
            r.correct += out.correct
        }
        var t = Profile.now()
        try averaging.finish()
        t = phase(.allreduceWait, since: t)
        r.buckets = averaging.bucketEvents.map {
            BucketEvent(bucket: $0.bucket, start: $0.start + begun, end: $0.end + begun)
        }
        optimizer.step(value: model.arena.value, grad: model.arena.grad, lr: lr)
        _ = phase(.optimizer, since: t)
        r.seconds = Profile.now() - r.start
        return r
    }

    /// The triplet loss of `rank`'s images after its forward, and its gradient with respect to the
    /// pooled feature ((C, N), weighted): over its own images (local), or its share of the global
    /// batch's (gathered from the other processes now, or computed by the first simulated replica).
    private func tripletPart(
        rank: Int, labels: [Int], global: inout (anchors: TripletLoss.Anchors, grad: [Float], perRank: Int)?,
        stats: inout TripletStats, gatherSeconds: inout Double
    ) throws -> (Double, [Float]) {
        let f = model.pooledFeatures, c = f.shape[0], n = f.shape[1]
        var own = rows(of: f)
        var grad = [Float](repeating: 0, count: n * c)
        let value: Double
        if minesGlobally {
            if global == nil {
                guard let allgather else {
                    preconditionFailure("TrainingStep: global mining across processes needs an all-gather")
                }
                // one collective: each rank's labels (as floats, exact below 2^24) then its feature rows
                let mine = labels.map(Float.init) + own
                let t0 = Profile.now()
                let bytes = try mine.withUnsafeBytes { try allgather($0.baseAddress!, $0.count) }
                gatherSeconds += Profile.now() - t0
                let flat = bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
                let per = n * (c + 1), world = flat.count / per
                var all: [Float] = [], allLabels: [Int] = []
                for k in 0..<world {
                    allLabels += flat[(k * per)..<(k * per + n)].map { Int($0) }
                    all += flat[(k * per + n)..<((k + 1) * per)]
                }
                global = globalTriplet(all, allLabels, perRank: n)
            }
            let g = global!, lo = rank * g.perRank
            precondition(g.perRank == n, "TrainingStep: rank \(rank) has \(n) images, the others \(g.perRank)")
            // this rank's rows of the global gradient, times the ranks (the all-reduce takes the mean)
            let scale = Float(averaging.worldSize) * Float(loss.tripletWeight)
            for i in 0..<(n * c) { own[i] = g.grad[lo * c + i] * scale }
            stats.add(g.anchors, rows: lo..<(lo + n))
            value = g.anchors.mean
        } else {
            let a = own.withUnsafeBufferPointer { p in
                grad.withUnsafeMutableBufferPointer {
                    loss.triplet(
                        p.baseAddress!, n: n, dim: c, labels: labels, grad: $0.baseAddress!,
                        scale: loss.tripletWeight)
                }
            }
            own = grad
            stats.add(a, rows: 0..<n)
            value = a.mean
        }
        // rows (N, C) -> (C, N)
        own.withUnsafeBufferPointer { swapLeadingAxes(&grad, $0.baseAddress!, n, c, 1) }
        return (value, grad)
    }

    /// The global batch's loss and its gradient (unweighted) over all ranks' rows, in rank order.
    private func globalTriplet(_ all: [Float], _ labels: [Int], perRank: Int) -> (
        anchors: TripletLoss.Anchors, grad: [Float], perRank: Int
    ) {
        let n = labels.count, c = all.count / Swift.max(n, 1)
        var grad = [Float](repeating: 0, count: all.count)
        let a = all.withUnsafeBufferPointer { p in
            grad.withUnsafeMutableBufferPointer {
                loss.triplet(p.baseAddress!, n: n, dim: c, labels: labels, grad: $0.baseAddress!)
            }
        }
        return (a, grad, perRank)
    }

    /// Backward, passing each "gradients final from this offset on" to the averaging;
    /// its first error (a failed all-reduce) is thrown once backward is over.
    private func backward(_ featureGrad: [Float]?) throws {
        var failure: Error?
        let ready: (Int) -> Void = { offset in
            guard failure == nil else { return }
            do { try self.averaging.gradientsFinal(from: offset) } catch { failure = error }
        }
        if let featureGrad {
            featureGrad.withUnsafeBufferPointer { model.backward(featureGrad: $0.baseAddress!, ready: ready) }
        } else {
            model.backward(ready: ready)
        }
        if let failure { throw failure }
    }
}
