// Optimizers and schedules against hand-worked PyTorch semantics.
import XCTest

@testable import ReIDCore

final class OptimTests: XCTestCase {
    func testSGDMomentumNesterovWeightDecay() {
        // p = 1, grads 0.5 then -0.25; lr 0.1, momentum 0.9, wd 0.01.
        for nesterov in [false, true] {
            let opt = Optimizer(.sgd, paramCount: 1, momentum: 0.9, nesterov: nesterov, weightDecay: 0.01)
            var p: [Float] = [1]
            var buf = 0.0, pd = 1.0
            for (t, g) in [0.5, -0.25].enumerated() {
                let d = g + 0.01 * pd
                buf = t == 0 ? d : 0.9 * buf + d
                pd -= 0.1 * (nesterov ? d + 0.9 * buf : buf)
                let gf = [Float(g)]
                p.withUnsafeMutableBufferPointer { pp in
                    gf.withUnsafeBufferPointer { opt.step(value: pp.baseAddress!, grad: $0.baseAddress!, lr: 0.1) }
                }
                XCTAssertEqual(Double(p[0]), pd, accuracy: 1e-6, "nesterov=\(nesterov) step \(t)")
            }
        }
    }

    func testAdamBiasCorrectedWithL2() {
        let opt = Optimizer(.adam, paramCount: 1, weightDecay: 0.1)
        var p: [Float] = [2]
        var m = 0.0, v = 0.0, pd = 2.0
        for (t, g) in [0.3, -1.0, 0.7].enumerated() {
            let d = g + 0.1 * pd
            m = 0.9 * m + 0.1 * d
            v = 0.999 * v + 0.001 * d * d
            let bc1 = 1 - pow(0.9, Double(t + 1)), bc2 = 1 - pow(0.999, Double(t + 1))
            pd -= 0.01 / bc1 * m / (v.squareRoot() / bc2.squareRoot() + 1e-8)
            let gf = [Float(g)]
            p.withUnsafeMutableBufferPointer { pp in
                gf.withUnsafeBufferPointer { opt.step(value: pp.baseAddress!, grad: $0.baseAddress!, lr: 0.01) }
            }
            XCTAssertEqual(Double(p[0]), pd, accuracy: 1e-6, "step \(t)")
        }
        XCTAssertEqual(opt.steps, 3)
    }

    func testWarmupMultistepAndCosine() {
        let s = LRSchedule(
            base: 3.5e-4, warmupEpochs: 10, warmupFactor: 0.01, milestones: [40, 70], gamma: 0.1, epochs: 120)
        XCTAssertEqual(s.rate(epoch: 0), 3.5e-6, accuracy: 1e-12)
        XCTAssertEqual(s.rate(epoch: 5), 3.5e-4 * (0.01 * 0.5 + 0.5), accuracy: 1e-12)
        XCTAssertEqual(s.rate(epoch: 10), 3.5e-4, accuracy: 1e-12)
        XCTAssertEqual(s.rate(epoch: 39), 3.5e-4, accuracy: 1e-12)
        XCTAssertEqual(s.rate(epoch: 40), 3.5e-5, accuracy: 1e-12)
        XCTAssertEqual(s.rate(epoch: 70), 3.5e-6, accuracy: 1e-12)
        let c = LRSchedule(base: 0.1, kind: .cosine, warmupEpochs: 2, warmupFactor: 0.1, epochs: 12)
        XCTAssertEqual(c.rate(epoch: 2), 0.1, accuracy: 1e-12)
        XCTAssertEqual(c.rate(epoch: 7), 0.05, accuracy: 1e-12)
        XCTAssertEqual(c.rate(epoch: 12), 0, accuracy: 1e-12)
    }

    /// One whole training step of a small network lowers the loss.
    func testTrainingStepsLowerTheLoss() {
        let net = GroupedMultiBranchNet(ModelSpec(depth: 18, width: 8, groups: 2, branches: 2, classes: 4), seed: 1)
        let opt = Optimizer(.adam, paramCount: net.arena.paramCount, weightDecay: 5e-4)
        let x = randomTensor([8, 3, 64, 32], seed: 2)
        let labels = [0, 1, 2, 3, 0, 1, 2, 3]
        var first = 0.0, last = 0.0
        for step in 0..<12 {
            net.arena.zeroGrad()
            let r = net.forwardLoss(x, labels: labels, labelSmoothing: 0.1)
            net.backward()
            opt.step(value: net.arena.value, grad: net.arena.grad, lr: 3e-3)
            if step == 0 { first = r.loss }
            last = r.loss
        }
        XCTAssertLessThan(last, first * 0.7, "loss \(first) -> \(last)")
    }
}
