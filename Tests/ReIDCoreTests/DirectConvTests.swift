import CKernels
// The direct 7x7 convolution (CKernels, ConvBlocked.swift) on every vector path this processor
// runs: forward and weight gradient against float64 loops, and against finite differences.
import XCTest

@testable import ReIDCore

final class DirectConvTests: XCTestCase {
    /// The paths to test here: portable C, then AVX2+FMA and AVX-512 where the processor has them,
    /// each with the direct convolution on (the portable path too), on 2 workers.
    var paths: [EngineOptions] {
        KernelPath.allCases.prefix(through: KernelPath.allCases.firstIndex(of: .best)!).map { path in
            EngineOptions(threads: 2, kernelPath: path).with { $0.directOnPortable = true }
        }
    }

    /// Without AVX2 the stem falls back to the blocked GEMM (faster than 4-wide C vectors).
    func testPortablePathFallsBackToGEMMUnlessAsked() {
        let conv = Conv2d(Arena(), "c", cin: 3, cout: 8, kernel: 7, stride: 2, pad: 3)
        let portable = EngineOptions(kernelPath: .portable)
        XCTAssertEqual(portable.effectiveKernelPath, .portable)
        XCTAssertFalse(conv.runsDirect(portable))
        XCTAssertFalse(portable.directStemRuns)
        XCTAssertTrue(conv.runsDirect(portable.with { $0.directOnPortable = true }))
        XCTAssertEqual(conv.runsDirect(EngineOptions()), KernelPath.best != .portable)
    }

    /// A kernel path the processor lacks is never taken: asking for more than the best gives the best.
    func testKernelPathIsClampedToTheProcessor() {
        XCTAssertEqual(EngineOptions(kernelPath: .avx512).effectiveKernelPath, .best)
        for path in KernelPath.allCases {
            let got = EngineOptions(kernelPath: path).effectiveKernelPath
            XCTAssertLessThanOrEqual(
                KernelPath.allCases.firstIndex(of: got)!, KernelPath.allCases.firstIndex(of: path)!)
        }
    }

    /// Forward and dW of one layer against float64, with the error allowed per output scaled by the
    /// sum of its terms' magnitudes (float32 rounding of a 147-term sum stays far below 1e-5 of it).
    func checkAgainstFloat64(
        cin: Int, cout: Int, s: Int, p: Int, n: Int, h: Int, w: Int, tag: String, _ options: EngineOptions
    ) {
        let arena = Arena()
        let conv = Conv2d(arena, "c", cin: cin, cout: cout, kernel: 7, stride: s, pad: p)
        arena.allocate(seed: 11)
        XCTAssertTrue(conv.runsDirect(options), tag)
        let ws = Workspace(options)
        let x = randomTensor([cin, n, h, w], seed: 12)
        let y = conv.forward(x, ws)
        let (ho, wo) = conv.outputSize(h, w)
        let dy = randomTensor(y.shape, seed: 13)
        conv.backward(dy.ptr, dX: nil, ws)
        let wt = arena.value + conv.weight, gw = arena.grad + conv.weight
        func input(_ ci: Int, _ b: Int, _ iy: Int, _ ix: Int) -> Double {
            iy >= 0 && iy < h && ix >= 0 && ix < w ? Double(x.ptr[((ci * n + b) * h + iy) * w + ix]) : 0
        }
        var worst = 0.0
        for co in 0..<cout {
            for b in 0..<n {
                for oy in 0..<ho {
                    for ox in 0..<wo {
                        var sum = 0.0, mag = 0.0
                        for ci in 0..<cin {
                            for ki in 0..<7 {
                                for kj in 0..<7 {
                                    let t =
                                        Double(wt[((co * cin + ci) * 7 + ki) * 7 + kj])
                                        * input(ci, b, oy * s - p + ki, ox * s - p + kj)
                                    sum += t
                                    mag += abs(t)
                                }
                            }
                        }
                        worst = max(worst, abs(Double(y.ptr[((co * n + b) * ho + oy) * wo + ox]) - sum) / (mag + 1e-30))
                    }
                }
            }
        }
        XCTAssertLessThan(worst, 1e-5, "\(tag) forward")
        worst = 0
        for co in 0..<cout {
            for ci in 0..<cin {
                for ki in 0..<7 {
                    for kj in 0..<7 {
                        var sum = 0.0, mag = 0.0
                        for b in 0..<n {
                            for oy in 0..<ho {
                                for ox in 0..<wo {
                                    let t =
                                        Double(dy.ptr[((co * n + b) * ho + oy) * wo + ox])
                                        * input(ci, b, oy * s - p + ki, ox * s - p + kj)
                                    sum += t
                                    mag += abs(t)
                                }
                            }
                        }
                        worst = max(worst, abs(Double(gw[((co * cin + ci) * 7 + ki) * 7 + kj]) - sum) / (mag + 1e-30))
                    }
                }
            }
        }
        XCTAssertLessThan(worst, 1e-5, "\(tag) weight gradient")
    }

    /// Shapes that reach every tile and tail: output rows of 32 (whole AVX-512 tiles), 64, 37, 17
    /// and 3 pixels; channel counts that leave remainders of every forward and gradient tile;
    /// stride 1 and 2, the stem's padding and others; rows cut into blocks shared by 2 workers.
    func testForwardAndWeightGradientMatchFloat64OnEveryPath() {
        for path in paths {
            XCTAssertEqual(path.effectiveKernelPath, path.kernelPath)
            for columns in [2048, 40] {
                let o = path.with { $0.blockColumns = columns }
                let tag = "\(path.kernelPath.name) blocks of \(columns)"
                checkAgainstFloat64(cin: 3, cout: 32, s: 2, p: 3, n: 2, h: 24, w: 64, tag: tag + " 3->32 wo 32", o)
                checkAgainstFloat64(cin: 3, cout: 13, s: 2, p: 3, n: 1, h: 9, w: 128, tag: tag + " 3->13 wo 64", o)
                checkAgainstFloat64(cin: 1, cout: 11, s: 2, p: 3, n: 2, h: 13, w: 73, tag: tag + " 1->11 wo 37", o)
                checkAgainstFloat64(cin: 4, cout: 3, s: 1, p: 3, n: 1, h: 5, w: 17, tag: tag + " 4->3 s1 wo 17", o)
                checkAgainstFloat64(cin: 2, cout: 5, s: 2, p: 0, n: 2, h: 12, w: 11, tag: tag + " 2->5 p0 wo 3", o)
                checkAgainstFloat64(cin: 3, cout: 9, s: 1, p: 1, n: 1, h: 8, w: 9, tag: tag + " 3->9 s1 p1 wo 5", o)
            }
        }
    }

    /// dW and dX against finite differences on every path (dX of a first layer goes through
    /// GEMM + col2im, checked here with the direct forward it differentiates).
    func testGradientsOnEveryPath() {
        for path in paths {
            let o = path.with { $0.blockColumns = 4 }
            checkConv(cin: 2, cout: 3, k: 7, s: 2, p: 3, n: 2, h: 11, w: 9, options: o)
            checkConv(cin: 3, cout: 9, k: 7, s: 2, p: 3, n: 1, h: 7, w: 39, options: o)
        }
    }

    /// The direct and GEMM paths of the same layer agree to float32 rounding, and the direct path
    /// is the one taken by ResNet's stem.
    func testDirectMatchesGEMMPath() {
        let arena = Arena()
        let conv = Conv2d(arena, "c", cin: 3, cout: 32, kernel: 7, stride: 2, pad: 3)
        arena.allocate(seed: 21)
        let x = randomTensor([3, 4, 64, 32], seed: 22)
        let dy = randomTensor([32, 4, 32, 16], seed: 23)
        var outs: [[Float]] = [], grads: [[Float]] = []
        // the direct path (the best vector path with it), and the blocked GEMM the portable path takes
        let direct = EngineOptions(threads: 2).with { $0.directOnPortable = true }
        let gemm = EngineOptions(threads: 2, kernelPath: .portable)
        for o in [direct, gemm] {
            XCTAssertEqual(conv.runsDirect(o), o == direct)
            let ws = Workspace(o)
            outs.append(conv.forward(x, ws).array)
            arena.grad.update(repeating: 0, count: arena.paramCount)
            conv.backward(dy.ptr, dX: nil, ws)
            grads.append(Array(UnsafeBufferPointer(start: arena.grad + conv.weight, count: 32 * 147)))
        }
        let scaleY = outs[1].map(abs).max()!, scaleG = grads[1].map(abs).max()!
        for i in outs[0].indices { XCTAssertEqual(outs[0][i], outs[1][i], accuracy: 1e-5 * scaleY) }
        for i in grads[0].indices { XCTAssertEqual(grads[0][i], grads[1][i], accuracy: 1e-5 * scaleG) }
        let stem = ResNet(Arena(), depth: 18, width: 8)
        XCTAssertEqual(stem.conv1.runsDirect(stem.ws.options), KernelPath.best != .portable)
    }
}
