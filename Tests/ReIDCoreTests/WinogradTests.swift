// Winograd F(2x2,3x3) against finite differences and against a float64 direct
// convolution, beside the GEMM path's own error on the same case.
import XCTest
@testable import ReIDCore

final class WinogradTests: XCTestCase {
    override func tearDown() { Conv2d.algorithm = .auto }

    /// The 3x3 stride-1 gradient checks of LayerGradientTests, under each algorithm (odd sizes, 1-wide images, accumulate, no cache).
    func testGradientsUnderBothAlgorithms() {
        for a in [ConvAlgorithm.gemm, .winograd] {
            Conv2d.algorithm = a
            checkConv(cin: 3, cout: 4, k: 3, s: 1, p: 1, n: 2, h: 7, w: 5)
            checkConv(cin: 2, cout: 3, k: 3, s: 1, p: 1, n: 1, h: 1, w: 3)             // one row: shifts past the block
            checkConv(cin: 2, cout: 3, k: 3, s: 1, p: 1, n: 2, h: 5, w: 4, accumulate: true)
            checkConv(cin: 3, cout: 4, k: 3, s: 1, p: 1, n: 2, h: 6, w: 5, cacheBudget: 0)
        }
    }

    /// Forward, input gradient and weight gradient against float64 sums: Winograd's
    /// largest error relative to the largest value stays within 4x the GEMM path's (or 1e-6).
    func testAgreesWithFloat64() {
        let (cin, cout, n, h, w) = (24, 16, 3, 9, 7)
        let x = randomTensor([cin, n, h, w], seed: 11), dy = randomTensor([cout, n, h, w], seed: 12)
        let arena = Arena()
        let conv = Conv2d(arena, "c", cin: cin, cout: cout, kernel: 3, stride: 1, pad: 1)
        arena.allocate(seed: 13)
        let wt = Array(UnsafeBufferPointer(start: arena.value + conv.weight, count: cout * cin * 9)).map(Double.init)
        let xd = x.array.map(Double.init), gd = dy.array.map(Double.init)
        var y64 = [Double](repeating: 0, count: cout * n * h * w), dx64 = [Double](repeating: 0, count: x.count)
        var dw64 = [Double](repeating: 0, count: wt.count)
        for co in 0..<cout { for b in 0..<n { for oy in 0..<h { for ox in 0..<w {
            let o = ((co * n + b) * h + oy) * w + ox
            for ci in 0..<cin { for ki in 0..<3 { for kj in 0..<3 {
                let iy = oy - 1 + ki, ix = ox - 1 + kj
                guard iy >= 0, iy < h, ix >= 0, ix < w else { continue }
                let i = ((ci * n + b) * h + iy) * w + ix, k = ((co * cin + ci) * 3 + ki) * 3 + kj
                y64[o] += wt[k] * xd[i]; dx64[i] += wt[k] * gd[o]; dw64[k] += xd[i] * gd[o]
            }}}
        }}}}
        func relError(_ got: [Float], _ want: [Double]) -> Double {
            zip(got, want).map { abs(Double($0) - $1) }.max()! / want.map(abs).max()!
        }
        var errors: [ConvAlgorithm: [Double]] = [:]
        for a in [ConvAlgorithm.gemm, .winograd] {
            Conv2d.algorithm = a
            XCTAssertEqual(conv.usesWinograd(n: n, h: h, w: w), a == .winograd)
            arena.zeroGrad()
            let ws = Workspace()
            let y = conv.forward(x, ws).array
            let dx = Tensor(x.shape)
            conv.backward(dy.ptr, dX: dx.ptr, ws)
            errors[a] = [relError(y, y64), relError(dx.array, dx64),
                         relError(Array(UnsafeBufferPointer(start: arena.grad + conv.weight, count: wt.count)), dw64)]
        }
        print("relative error vs float64 (forward, dX, dW): gemm \(errors[.gemm]!), winograd \(errors[.winograd]!)")
        for i in 0..<3 { XCTAssertLessThan(errors[.winograd]![i], max(4 * errors[.gemm]![i], 1e-6)) }
    }
}
