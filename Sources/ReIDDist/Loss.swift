// What a training step minimises (`loss.*` in the config): the grouped multi-branch
// cross-entropy of the paper (the default), a batch-hard triplet loss on the pooled feature, or
// both (weighted; BNNeck: cross-entropy after the group batch norms, triplet before them).
//
// Mining over the global batch. With several ranks, `loss.triplet_scope: global` gathers every
// rank's pooled features and labels (one all-gather per step), so each anchor finds its hardest
// positive and negative among the P x K images of the whole step. Every rank computes the same
// global loss; each back-propagates the part of its gradient that falls on its own images, times
// the number of ranks, so that the gradient mean the all-reduce takes is the global loss's
// gradient. Simulated ranks (one process) compute every replica's features first (batch-norm
// statistics put back afterwards), then run each replica again with its part.
import Foundation
import ReIDCore

public struct LossSpec: Equatable, Sendable {
    public enum Kind: String, CaseIterable, Sendable {
        case ce
        case triplet
        case ceTriplet = "ce+triplet"
    }
    /// Where the hardest positive and negative are looked for: the whole step's batch over all
    /// ranks, or each rank's own images (what a DDP user of the usual toolboxes gets).
    public enum Scope: String, CaseIterable, Sendable { case global, local }

    public var kind = Kind.ce
    public var labelSmoothing: Float = 0.1
    public var ceWeight = 1.0, tripletWeight = 1.0
    public var triplet = TripletLoss()
    public var scope = Scope.global

    public init(
        kind: Kind = .ce, labelSmoothing: Float = 0.1, ceWeight: Double = 1, tripletWeight: Double = 1,
        triplet: TripletLoss = TripletLoss(), scope: Scope = .global
    ) {
        self.kind = kind
        self.labelSmoothing = labelSmoothing
        self.ceWeight = ceWeight
        self.tripletWeight = tripletWeight
        self.triplet = triplet
        self.scope = scope
    }

    public var usesCrossEntropy: Bool { kind != .triplet }
    public var usesTriplet: Bool { kind != .ce }

    /// For the log: "ce", "triplet (euclidean, margin 0.3, global mining)", ...
    public var description: String {
        guard usesTriplet else { return "cross-entropy (label smoothing \(labelSmoothing))" }
        let t =
            "batch-hard triplet (\(triplet.distance.rawValue), \(triplet.soft ? "soft margin" : "margin \(triplet.margin)"), \(scope.rawValue) mining)"
        return kind == .triplet
            ? t : "\(ceWeight) x cross-entropy (label smoothing \(labelSmoothing)) + \(tripletWeight) x \(t)"
    }
}

/// A step's triplet figures over this process's anchors: summed loss, hardest-positive and
/// hardest-negative distances, and the anchors that had both.
public struct TripletStats {
    public var lossSum = 0.0, dapSum = 0.0, danSum = 0.0, anchors = 0

    public init(lossSum: Double = 0, dapSum: Double = 0, danSum: Double = 0, anchors: Int = 0) {
        self.lossSum = lossSum
        self.dapSum = dapSum
        self.danSum = danSum
        self.anchors = anchors
    }

    mutating func add(_ a: TripletLoss.Anchors, rows: Range<Int>) {
        for i in rows where a.valid[i] {
            lossSum += a.loss[i]
            dapSum += a.dap[i]
            danSum += a.dan[i]
            anchors += 1
        }
    }
}

/// (C, N) channel-major -> (N, C) rows, and back.
func rows(of t: Tensor) -> [Float] {
    let c = t.shape[0], n = t.shape[1]
    var out = [Float](repeating: 0, count: c * n)
    out.withUnsafeMutableBufferPointer { swapLeadingAxes($0.baseAddress!, t.ptr, c, n, 1) }
    return out
}
