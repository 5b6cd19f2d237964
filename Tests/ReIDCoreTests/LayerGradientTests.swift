// Every layer's backward against finite differences, on odd shapes.
import XCTest

@testable import ReIDCore

extension XCTestCase {
    /// A convolution's dX and dW against finite differences (also used by WinogradTests).
    func checkConv(
        cin: Int, cout: Int, k: Int, s: Int, p: Int, n: Int, h: Int, w: Int, accumulate: Bool = false,
        cacheBudget: Int = 1 << 30, options: EngineOptions = EngineOptions()
    ) {
        let arena = Arena()
        let conv = Conv2d(arena, "c", cin: cin, cout: cout, kernel: k, stride: s, pad: p)
        arena.allocate(seed: 1)
        let ws = Workspace(options.with { $0.cacheBudget = cacheBudget })
        let x = randomTensor([cin, n, h, w], seed: 2)
        let y = conv.forward(x, ws)
        let (ho, wo) = conv.outputSize(h, w)
        XCTAssertEqual(y.shape, [cout, n, ho, wo])
        let r = randomTensor(y.shape, seed: 3)
        let dx = randomTensor(x.shape, seed: 4) // garbage unless accumulating
        let before = dx.array
        conv.backward(r.ptr, dX: dx.ptr, accumulate: accumulate, ws)
        let loss = { () -> Double in
            let o = conv.forward(x, ws)
            return weightedSum(o.ptr, r.ptr, o.count)
        }
        let gc = GradCheck()
        let tag = "conv k\(k) s\(s) p\(p) n\(n) \(h)x\(w) \(options.convAlgorithm) \(options.kernelPath)"
        gc.check(
            "\(tag) dX", x.ptr, count: x.count,
            analytic: { dx.ptr[$0] - (accumulate ? before[$0] : 0) }, loss: loss)
        gc.check(
            "\(tag) dW", arena.value + conv.weight, count: cout * cin * k * k,
            analytic: { arena.grad[conv.weight + $0] }, loss: loss)
    }
}

final class LayerGradientTests: XCTestCase {
    let gc = GradCheck()

    /// Every case under the whole-batch im2col path and under the blocked first-layer path
    /// (ConvBlocked.swift; these layers all have at most 4 input channels), the latter with
    /// blocks of 4 output columns shared by 2 workers: images cut into several row blocks,
    /// the last one shorter, and the workers' weight-gradient sums added at the end.
    func testConvGradients() {
        let whole = EngineOptions().with { $0.blockedMaxInputChannels = 0 }
        let blocked = EngineOptions(threads: 2).with { $0.blockColumns = 4 }
        for options in [whole, blocked] { convGradientCases(options) }
    }

    func convGradientCases(_ o: EngineOptions) {
        checkConv(cin: 3, cout: 4, k: 3, s: 1, p: 1, n: 2, h: 7, w: 5, options: o)
        checkConv(cin: 3, cout: 5, k: 3, s: 2, p: 1, n: 1, h: 9, w: 7, options: o)
        checkConv(cin: 2, cout: 3, k: 7, s: 2, p: 3, n: 2, h: 11, w: 9, options: o)
        // stride-2 rows gathered 8 at a time
        checkConv(cin: 2, cout: 3, k: 3, s: 2, p: 1, n: 1, h: 5, w: 41, options: o)
        checkConv(cin: 2, cout: 2, k: 7, s: 2, p: 3, n: 1, h: 7, w: 45, options: o)
        checkConv(cin: 4, cout: 6, k: 1, s: 1, p: 0, n: 3, h: 5, w: 3, options: o) // pointwise, no im2col
        checkConv(cin: 4, cout: 6, k: 1, s: 2, p: 0, n: 2, h: 7, w: 5, options: o) // strided downsample
        checkConv(cin: 3, cout: 2, k: 3, s: 2, p: 1, n: 2, h: 3, w: 1, options: o) // tiny width
        checkConv(cin: 2, cout: 3, k: 3, s: 1, p: 1, n: 2, h: 5, w: 4, accumulate: true, options: o)
        checkConv(cin: 4, cout: 3, k: 1, s: 1, p: 0, n: 2, h: 3, w: 3, accumulate: true, options: o)
        checkConv(cin: 3, cout: 4, k: 3, s: 1, p: 1, n: 2, h: 6, w: 5, cacheBudget: 0, options: o) // col rebuilt
        checkConv(cin: 3, cout: 4, k: 3, s: 2, p: 1, n: 2, h: 6, w: 5, cacheBudget: 0, options: o)
        checkConv(cin: 2, cout: 3, k: 5, s: 1, p: 2, n: 2, h: 4, w: 3, options: o) // shift wider than the image
        checkConv(cin: 2, cout: 3, k: 3, s: 1, p: 0, n: 2, h: 6, w: 5, options: o) // stride 1, "valid"
    }

    /// Conv2d forward against a direct 7-loop convolution.
    func testConvMatchesDirectLoop() {
        let arena = Arena()
        let (cin, cout, k, s, p, n, h, w) = (3, 4, 3, 2, 1, 2, 7, 6)
        let conv = Conv2d(arena, "c", cin: cin, cout: cout, kernel: k, stride: s, pad: p)
        arena.allocate(seed: 5)
        let x = randomTensor([cin, n, h, w], seed: 6)
        let y = conv.forward(x, Workspace())
        let (ho, wo) = conv.outputSize(h, w)
        let wt = arena.value + conv.weight
        for co in 0..<cout {
            for b in 0..<n {
                for oy in 0..<ho {
                    for ox in 0..<wo {
                        var acc: Float = 0
                        for ci in 0..<cin {
                            for ki in 0..<k {
                                for kj in 0..<k {
                                    let iy = oy * s - p + ki, ix = ox * s - p + kj
                                    if iy >= 0 && iy < h && ix >= 0 && ix < w {
                                        acc +=
                                            wt[((co * cin + ci) * k + ki) * k + kj]
                                            * x.ptr[((ci * n + b) * h + iy) * w + ix]
                                    }
                                }
                            }
                        }
                        XCTAssertEqual(y.ptr[((co * n + b) * ho + oy) * wo + ox], acc, accuracy: 1e-5)
                    }
                }
            }
        }
    }

    func checkBN(c: Int, n: Int, hw: Int, training: Bool, relu: Bool, residual: Bool) {
        let arena = Arena()
        let bn = BatchNorm(arena, "bn", channels: c)
        arena.allocate(seed: 1)
        // Non-trivial affine parameters and running statistics.
        for i in 0..<c {
            arena.value[bn.weight + i] = 0.5 + Float(i) * 0.3
            arena.value[bn.bias + i] = 0.1 * Float(i) - 0.2
            arena.buffer[bn.runningMean + i] = 0.05 * Float(i)
            arena.buffer[bn.runningVar + i] = 0.8 + 0.1 * Float(i)
        }
        let x = randomTensor([c, n, hw], seed: 2, scale: 1.5)
        let res = residual ? randomTensor([c, n, hw], seed: 9) : nil
        let saved = Array(UnsafeBufferPointer(start: arena.buffer, count: arena.bufferCount))
        let y = bn.forward(x, training: training, relu: relu, residual: res, Workspace())
        let r = randomTensor(y.shape, seed: 3)
        let g = Tensor(r.shape)
        g.copy(from: r)
        let dx = Tensor(x.shape)
        bn.backward(g.ptr, dX: dx.ptr, Workspace()) // g becomes d(bn + residual)
        let loss = { () -> Double in
            // Running statistics must not drift between evaluations in inference mode.
            arena.buffer.update(from: saved, count: saved.count)
            let o = bn.forward(x, training: training, relu: relu, residual: res, Workspace())
            return weightedSum(o.ptr, r.ptr, o.count)
        }
        let tag = "bn train=\(training) relu=\(relu) res=\(residual)"
        let gc = GradCheck(h: 2e-3) // a small step: a sum over a channel crosses fewer kinks
        gc.check("\(tag) dX", x.ptr, count: x.count, analytic: { dx.ptr[$0] }, loss: loss)
        gc.check(
            "\(tag) dgamma", arena.value + bn.weight, count: c, analytic: { arena.grad[bn.weight + $0] }, loss: loss)
        gc.check("\(tag) dbeta", arena.value + bn.bias, count: c, analytic: { arena.grad[bn.bias + $0] }, loss: loss)
        if let res { gc.check("\(tag) dResidual", res.ptr, count: res.count, analytic: { g.ptr[$0] }, loss: loss) }
    }

    func testBatchNormGradients() {
        checkBN(c: 3, n: 2, hw: 5, training: true, relu: false, residual: false)
        checkBN(c: 2, n: 1, hw: 7, training: true, relu: true, residual: false) // batch 1, spatial
        checkBN(c: 4, n: 5, hw: 1, training: true, relu: false, residual: false) // BatchNorm1d
        checkBN(c: 3, n: 2, hw: 3, training: true, relu: true, residual: true)
        checkBN(c: 3, n: 2, hw: 3, training: false, relu: false, residual: false)
        checkBN(c: 3, n: 2, hw: 3, training: false, relu: true, residual: true)
    }

    /// Running statistics: momentum 0.1, unbiased variance, num_batches_tracked.
    func testBatchNormRunningStatistics() {
        let arena = Arena()
        let bn = BatchNorm(arena, "bn", channels: 1)
        arena.allocate(seed: 0)
        let x = Tensor([1, 4], [1, 2, 3, 6]) // mean 3, biased var 3.5, unbiased 14/3
        let y = bn.forward(x, training: true, Workspace())
        XCTAssertEqual(arena.buffer[bn.runningMean], 0.3, accuracy: 1e-6)
        XCTAssertEqual(arena.buffer[bn.runningVar], 0.9 + 0.1 * 14 / 3, accuracy: 1e-6)
        XCTAssertEqual(arena.counters[bn.counters[0]], 1)
        XCTAssertEqual(y.ptr[0], (1 - 3) / (3.5 + 1e-5).squareRoot(), accuracy: 1e-6)
        let e = bn.forward(x, training: false, Workspace())
        XCTAssertEqual(e.ptr[3], (6 - 0.3) / (arena.buffer[bn.runningVar] + 1e-5).squareRoot(), accuracy: 1e-5)
        XCTAssertEqual(arena.counters[bn.counters[0]], 1, "inference does not count batches")
    }

    func testMaxPoolGradientAndTies() {
        let pool = MaxPool2d()
        let x = randomTensor([2, 2, 7, 5], seed: 11)
        let y = pool.forward(x, Workspace())
        XCTAssertEqual(y.shape, [2, 2, 4, 3])
        let r = randomTensor(y.shape, seed: 12)
        let dx = Tensor(x.shape)
        pool.backward(r.ptr, dX: dx.ptr, Workspace())
        gc.check(
            "maxpool dX", x.ptr, count: x.count, analytic: { dx.ptr[$0] },
            loss: {
                let o = pool.forward(x, Workspace())
                return weightedSum(o.ptr, r.ptr, o.count)
            })
        // Ties: the first maximum in scan order takes the whole gradient.
        let t = Tensor([1, 1, 2, 2], [1, 1, 1, 1])
        let o = pool.forward(t, Workspace())
        XCTAssertEqual(o.shape, [1, 1, 1, 1])
        let d = Tensor(t.shape)
        let g = Tensor([1, 1, 1, 1], [5])
        pool.backward(g.ptr, dX: d.ptr, Workspace())
        XCTAssertEqual(d.array, [5, 0, 0, 0])
    }

    /// Rows wide enough for the 8-column vector path, against the scalar rule written out here:
    /// the first maximum in scan order wins ties, a NaN takes over and ends its window's scan,
    /// padding never wins (an all -inf window points at its first cell). Values from {0, 1, 2}
    /// make ties everywhere; the backward's scatter of distinct gradients shows every winner.
    /// Widths: odd (a right border window half outside), even with a last chunk that overlaps the
    /// one before it (32: the ResNet-18 w32 stem's), and exactly one chunk past the border column.
    func testMaxPoolWideRowsMatchScalarRule() {
        for w in [41, 32, 18] { checkMaxPoolWideRows(w: w) }
    }

    func checkMaxPoolWideRows(w: Int) {
        let (planes, h) = (3, 7)
        let x = Tensor([planes, 1, h, w])
        for i in 0..<x.count { x.ptr[i] = Float((i * 7 + i / 5) % 3) }
        x.ptr[1 * w + 20] = .nan
        x.ptr[2 * w + 19] = .nan
        x.ptr[3 * w + 33] = .nan // plane 0
        for i in (2 * h * w)..<(3 * h * w) { x.ptr[i] = -.infinity } // plane 2
        x.ptr[2 * h * w + 4 * w + 26] = .nan
        let pool = MaxPool2d()
        let y = pool.forward(x, Workspace())
        let (ho, wo) = (y.shape[2], y.shape[3])
        let g = Tensor(y.shape)
        for i in 0..<g.count { g.ptr[i] = Float(i + 1) }
        let dx = Tensor(x.shape)
        pool.backward(g.ptr, dX: dx.ptr, Workspace())
        var want = [Float](repeating: 0, count: x.count)
        for pl in 0..<planes {
            for oy in 0..<ho {
                for ox in 0..<wo {
                    let y0 = max(2 * oy - 1, 0), y1 = min(2 * oy + 2, h), x0 = max(2 * ox - 1, 0),
                        x1 = min(2 * ox + 2, w)
                    var best = -Float.infinity, bi = y0 * w + x0
                    scan: for iy in y0..<y1 {
                        for ix in x0..<x1 {
                            let v = x.ptr[pl * h * w + iy * w + ix]
                            if v.isNaN {
                                best = v
                                bi = iy * w + ix
                                break scan
                            }
                            if v > best {
                                best = v
                                bi = iy * w + ix
                            }
                        }
                    }
                    let o = (pl * ho + oy) * wo + ox
                    let got = y.ptr[o]
                    XCTAssertTrue(
                        got == best || (got.isNaN && best.isNaN), "w \(w) plane \(pl) (\(oy), \(ox)): \(got) vs \(best)"
                    )
                    want[pl * h * w + bi] += g.ptr[o]
                }
            }
        }
        XCTAssertEqual(dx.array, want, "w \(w)")
    }

    func testGlobalAvgPool() {
        let x = randomTensor([3, 2, 5, 3], seed: 13)
        let pool = GlobalAvgPool()
        let r = randomTensor([3, 2], seed: 14)
        let dx = Tensor(x.shape)
        XCTAssertEqual(pool.forward(x, Workspace()).shape, [3, 2])
        XCTAssertEqual(pool.output.ptr[4], (0..<15).map { x.ptr[4 * 15 + $0] }.reduce(0, +) / 15, accuracy: 1e-6)
        pool.backward(r.ptr, dX: dx.ptr, Workspace())
        gc.check(
            "gap dX", x.ptr, count: x.count, analytic: { dx.ptr[$0] },
            loss: {
                let y = pool.forward(x, Workspace())
                return weightedSum(y.ptr, r.ptr, 6)
            })
    }

    func testLinearGradients() {
        let arena = Arena()
        let lin = Linear(arena, "fc", inFeatures: 5, outFeatures: 7, std: 0.5)
        arena.allocate(seed: 3)
        // The input is rows 2..<7 of a channel-major (C, N) tensor, as a channel group is.
        let x = randomTensor([8, 3], seed: 4)
        let y = lin.forward(x, rows: 2..<7)
        XCTAssertEqual(y.shape, [3, 7])
        // y[n, k] = sum_d W[k, d] x[2 + d, n]
        let wv = arena.value + lin.weight
        var ref: Float = 0
        for d in 0..<5 { ref += wv[2 * 5 + d] * x.ptr[(2 + d) * 3 + 1] }
        XCTAssertEqual(y.ptr[1 * 7 + 2], ref, accuracy: 1e-5)
        let r = randomTensor([3, 7], seed: 5), dx = Tensor([5, 3])
        lin.backward(r.ptr, dX: dx.ptr)
        let loss = { () -> Double in
            let o = lin.forward(x, rows: 2..<7)
            return weightedSum(o.ptr, r.ptr, o.count)
        }
        gc.check("linear dX", x.ptr + 6, count: 15, analytic: { dx.ptr[$0] }, loss: loss)
        gc.check(
            "linear dW", arena.value + lin.weight, count: 35, analytic: { arena.grad[lin.weight + $0] }, loss: loss)
    }

    func testCrossEntropyValueAndGradient() {
        // Hand-worked: logits (0, ln 2, ln 3)... softmax = (1/6, 2/6, 3/6); label 2, eps 0.3, K 3.
        let z = Tensor([1, 3], [0, Float(log(2.0)), Float(log(3.0))])
        let r = CrossEntropy.forward(logits: z.ptr, labels: [2], classes: 3, eps: 0.3, dLogits: nil)
        let q: [Double] = [0.1, 0.1, 0.8], p: [Double] = [1.0 / 6, 2.0 / 6, 3.0 / 6]
        let expect = -(0..<3).map { q[$0] * log(p[$0]) }.reduce(0, +)
        XCTAssertEqual(r.loss, expect, accuracy: 1e-6)
        XCTAssertEqual(r.correct, 1)
        let logits = randomTensor([4, 5], seed: 21, scale: 2)
        let labels = [0, 3, 4, 3]
        let d = Tensor([4, 5])
        _ = CrossEntropy.forward(logits: logits.ptr, labels: labels, classes: 5, eps: 0.1, dLogits: d.ptr)
        gc.check(
            "ce dlogits", logits.ptr, count: 20, analytic: { d.ptr[$0] },
            loss: {
                CrossEntropy.forward(logits: logits.ptr, labels: labels, classes: 5, eps: 0.1, dLogits: nil).loss
            })
    }
}
