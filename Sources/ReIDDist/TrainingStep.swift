// One training step, the same code for `train` and `bench`: zero the
// gradients; for each replica this process computes (one, or every simulated
// rank): its batch, forward and loss, backward (telling the gradient
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

    public func total(_ p: Phase) -> Double { phases.filter { $0.phase == p }.reduce(0) { $0 + $1.duration } }
}

public final class TrainingStep {
    public let model: GroupedMultiBranchNet
    public let optimizer: Optimizer
    public let averaging: GradientAveraging
    public let labelSmoothing: Float

    public init(model: GroupedMultiBranchNet, optimizer: Optimizer, averaging: GradientAveraging, labelSmoothing: Float) {
        self.model = model; self.optimizer = optimizer; self.averaging = averaging; self.labelSmoothing = labelSmoothing
    }

    /// One step at learning rate `lr`. `batch(i)` gives the batch of `averaging.localRanks[i]`;
    /// `context` names the step in errors ("epoch 3 step 12").
    public func run(lr: Float, context: @autoclosure () -> String,
                    batch: (Int) throws -> (images: Tensor, labels: [Int])) throws -> StepResult {
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
        for (i, rank) in averaging.localRanks.enumerated() {
            let b = try batch(i)
            averaging.enter(rank: rank)
            var t = Profile.now()
            let out = model.forwardLoss(b.images, labels: b.labels, labelSmoothing: labelSmoothing)
            t = phase(.forward, since: t)
            guard out.loss.isFinite else {
                throw TrainingError("loss is \(out.loss) at \(context())\(averaging.worldSize > 1 ? " on rank \(rank)" : ""): training diverged (lower optim.lr?)")
            }
            try backward()
            _ = phase(.backward, since: t)
            averaging.leave(rank: rank)
            r.lossSum += out.loss * Double(b.labels.count); r.images += b.labels.count; r.correct += out.correct
        }
        var t = Profile.now()
        try averaging.finish()
        t = phase(.allreduceWait, since: t)
        r.buckets = averaging.bucketEvents.map { BucketEvent(bucket: $0.bucket, start: $0.start + begun, end: $0.end + begun) }
        optimizer.step(value: model.arena.value, grad: model.arena.grad, lr: lr)
        _ = phase(.optimizer, since: t)
        r.seconds = Profile.now() - r.start
        return r
    }

    /// Backward, passing each "gradients final from this offset on" to the averaging;
    /// its first error (a failed all-reduce) is thrown once backward is over.
    private func backward() throws {
        var failure: Error?
        model.backward { offset in
            guard failure == nil else { return }
            do { try self.averaging.gradientsFinal(from: offset) } catch { failure = error }
        }
        if let failure { throw failure }
    }
}
