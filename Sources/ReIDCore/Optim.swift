// Optimizers over the flat parameter arena, with PyTorch's semantics:
// https://pytorch.org/docs/stable/generated/torch.optim.SGD.html
// https://pytorch.org/docs/stable/generated/torch.optim.Adam.html
// Weight decay is L2 added to the gradient (not AdamW's decoupled decay).
import Foundation

public enum OptimizerKind: String, Codable, CaseIterable { case sgd, adam }

public final class Optimizer {
    public let kind: OptimizerKind
    public var momentum: Float, nesterov: Bool, weightDecay: Float
    public var beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8
    public private(set) var steps = 0
    /// SGD: momentum buffer. Adam: exp_avg then exp_avg_sq. Each arena-sized.
    public let state1: Tensor, state2: Tensor
    let count: Int

    public init(
        _ kind: OptimizerKind, paramCount: Int, momentum: Float = 0.9, nesterov: Bool = false, weightDecay: Float = 0
    ) {
        precondition(!nesterov || momentum > 0, "nesterov needs momentum > 0")
        self.kind = kind
        self.momentum = momentum
        self.nesterov = nesterov
        self.weightDecay = weightDecay
        count = paramCount
        state1 = Tensor([paramCount])
        state2 = Tensor([kind == .adam ? paramCount : 0])
    }

    /// One update of `value` from `grad` (both `count` long) at learning rate `lr`.
    public func step(value p: UnsafeMutablePointer<Float>, grad g: UnsafePointer<Float>, lr: Float) {
        steps += 1
        let wd = weightDecay, n = count
        switch kind {
        case .sgd:
            let buf = state1.ptr, mu = momentum, first = steps == 1, nest = nesterov
            if mu == 0 {
                for i in 0..<n { p[i] -= lr * (g[i] + wd * p[i]) }
                return
            }
            for i in 0..<n {
                let d = g[i] + wd * p[i]
                let b = first ? d : mu * buf[i] + d // dampening 0; first step: buf = d
                buf[i] = b
                p[i] -= lr * (nest ? d + mu * b : b)
            }
        case .adam:
            let m = state1.ptr, v = state2.ptr, b1 = beta1, b2 = beta2, e = eps
            let bc1 = 1 - Float(pow(Double(b1), Double(steps)))
            let bc2 = 1 - Float(pow(Double(b2), Double(steps)))
            let stepSize = lr / bc1, rbc2 = 1 / bc2.squareRoot()
            for i in 0..<n {
                let d = g[i] + wd * p[i]
                let mi = b1 * m[i] + (1 - b1) * d
                let vi = b2 * v[i] + (1 - b2) * d * d
                m[i] = mi
                v[i] = vi
                p[i] -= stepSize * mi / (vi.squareRoot() * rbc2 + e)
            }
        }
    }

    /// Restores the step count when resuming from saved state.
    public func restore(steps: Int) { self.steps = steps }
}

/// Learning rate per epoch: linear warm-up from `warmupFactor` to 1 over
/// `warmupEpochs`, then multi-step decay (x gamma at each milestone) or cosine to 0.
public struct LRSchedule: Codable, Equatable {
    public enum Kind: String, Codable { case multistep, cosine }
    public var base: Double, kind: Kind = .multistep
    public var warmupEpochs = 0, warmupFactor = 0.01
    public var milestones: [Int] = [], gamma = 0.1, epochs = 1
    public init(
        base: Double, kind: Kind = .multistep, warmupEpochs: Int = 0, warmupFactor: Double = 0.01,
        milestones: [Int] = [], gamma: Double = 0.1, epochs: Int = 1
    ) {
        self.base = base
        self.kind = kind
        self.warmupEpochs = warmupEpochs
        self.warmupFactor = warmupFactor
        self.milestones = milestones
        self.gamma = gamma
        self.epochs = epochs
    }

    /// The rate for 0-based `epoch` (fractional epochs allowed for per-step warm-up).
    public func rate(epoch e: Double) -> Double {
        var f = 1.0
        if e < Double(warmupEpochs) {
            let alpha = e / Double(warmupEpochs)
            f = warmupFactor * (1 - alpha) + alpha
        }
        switch kind {
        case .multistep:
            let passed = milestones.filter { Double($0) <= e }.count
            return base * f * pow(gamma, Double(passed))
        case .cosine:
            if e < Double(warmupEpochs) { return base * f }
            let span = Double(Swift.max(epochs - warmupEpochs, 1))
            return base * 0.5 * (1 + cos(Double.pi * Swift.min((e - Double(warmupEpochs)) / span, 1)))
        }
    }
}
