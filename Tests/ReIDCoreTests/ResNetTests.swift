// ResNet and the grouped multi-branch network: torchvision's names and
// parameter counts, and whole-network gradients against finite differences.
import Foundation
import XCTest

@testable import ReIDCore

final class ResNetTests: XCTestCase {
    /// torchvision's resnet{18,34,50} minus fc: 11,689,512 - 513,000 etc.
    func testParameterCountsAndNamesMatchTorchvision() {
        for (depth, expected) in [(18, 11_176_512), (34, 21_284_672), (50, 23_508_032)] {
            let arena = Arena()
            let net = ResNet(arena, depth: depth)
            XCTAssertEqual(arena.paramCount, expected, "resnet\(depth)")
            XCTAssertEqual(net.outChannels, depth == 50 ? 2048 : 512)
        }
        let arena = Arena()
        _ = ResNet(arena, depth: 50)
        let names = Set(arena.params.map(\.name) + arena.buffers.map(\.name) + arena.counterNames)
        for n in [
            "conv1.weight", "bn1.running_mean", "layer1.0.downsample.0.weight",
            "layer1.0.downsample.1.num_batches_tracked",
            "layer4.2.conv3.weight", "layer4.2.bn3.bias", "layer3.5.bn2.running_var"
        ] {
            XCTAssert(names.contains(n), "missing \(n)")
        }
        // torchvision's resnet50 state_dict: 320 entries, 318 without fc.weight and fc.bias.
        XCTAssertEqual(names.count, 318)
    }

    /// The graph ResNet is built from describes exactly its layers: every convolution of the
    /// graph is a parameter of that name and shape (and there is no other), every batch norm
    /// follows its convolution, and walking the graph's sizes gives the feature map's shape.
    func testTheGraphDescribesTheLayers() {
        for depth in [18, 34, 50] {
            let arena = Arena()
            let net = ResNet(arena, prefix: "backbone.", depth: depth, width: 8, lastStride: 2)
            var convs: [ConvBN] = []
            for node in net.graph {
                switch node {
                case .convBN(let c): convs.append(c)
                case .residual(_, _, let body, let shortcut): convs += body + shortcut
                case .maxPool: break
                }
            }
            let shapes = Dictionary(uniqueKeysWithValues: arena.params.map { ($0.name, $0.shape) })
            for c in convs {
                XCTAssertEqual(shapes[c.conv + ".weight"], [c.cout, c.cin, c.kernel, c.kernel], c.conv)
                XCTAssertEqual(shapes[c.bn + ".weight"], [c.cout], c.bn)
            }
            XCTAssertEqual(convs.count, arena.params.filter { $0.shape.count == 4 }.count, "depth \(depth)")
            let walked = net.graph.convolutions(height: 96, width: 40).last!
            let (h, w) = walked.conv.outputSize(walked.h, walked.w)
            let f = net.forward(nchw: randomTensor([2, 3, 96, 40], seed: 4), training: false)
            XCTAssertEqual(f.shape, [net.graph.outChannels, 2, h, w], "depth \(depth)")
        }
    }

    func testOutputShapesAndLastStride() {
        for (ls, hw) in [(1, [8, 4]), (2, [4, 2])] {
            let net = GroupedMultiBranchNet(
                ModelSpec(depth: 18, width: 4, lastStride: ls, groups: 2, branches: 1, classes: 3))
            let x = randomTensor([2, 3, 128, 64], seed: 1)
            let f = net.backbone.forward(nchw: x, training: false)
            XCTAssertEqual(f.shape, [32, 2] + hw)
        }
    }

    /// Every parameter tensor of a small network against finite differences
    /// (directional: see GradCheck.checkDirectional).
    func checkNetwork(
        _ spec: ModelSpec, h: Int, w: Int, batch: Int, step: Float = 1e-3, rtol: Double = 2e-2,
        algorithm: ConvAlgorithm
    ) {
        let net = GroupedMultiBranchNet(spec, seed: 3, options: EngineOptions(convAlgorithm: algorithm))
        checkGradients(net, name: "resnet\(spec.depth)", h: h, w: w, batch: batch, step: step, rtol: rtol)
    }

    /// Every parameter tensor of `net` (loss and all) against finite differences, on a random batch.
    func checkGradients(
        _ net: GroupedMultiBranchNet, name: String, h: Int, w: Int, batch: Int, step: Float = 1e-3,
        rtol: Double = 2e-2
    ) {
        let spec = net.spec
        // Larger classifier weights than the 0.001 init so head gradients are not tiny.
        for s in net.arena.params where s.name.contains("classifiers") {
            for j in 0..<s.count { net.arena.value[s.offset + j] *= 300 }
        }
        let x = randomTensor([batch, 3, h, w], seed: 4)
        var rng = RNG(key: 9)
        let labels = (0..<batch).map { _ in rng.below(spec.classes) }
        net.arena.zeroGrad()
        _ = net.forwardLoss(x, labels: labels, labelSmoothing: 0.1)
        net.backward()
        let grads = Array(UnsafeBufferPointer(start: net.arena.grad, count: net.arena.paramCount))
        // The loss is strongly curved at init (batch norm over few values per
        // channel), so the step must be small; rtol is relative to |g|.
        let gc = GradCheck(h: step, rtol: rtol, atol: 1e-4)
        for s in net.arena.params {
            gc.checkDirectional(
                "\(name) \(s.name)", net.arena.value + s.offset, count: s.count,
                analytic: Array(grads[s.offset..<(s.offset + s.count)]),
                loss: { net.forwardLoss(x, labels: labels, labelSmoothing: 0.1).loss })
        }
    }

    func testResNet18NetworkGradients() {
        for a in [ConvAlgorithm.gemm, .winograd, .winograd4] {
            checkNetwork(
                ModelSpec(depth: 18, width: 8, lastStride: 1, groups: 2, branches: 2, classes: 5), h: 65, w: 33,
                batch: 4, algorithm: a)
        }
    }

    /// With GEMM convolutions only: at the small step this deep network needs, the float32 loss's
    /// rounding puts about 0.03 of noise on the numeric slope, at the tolerance itself (0.05 |g|,
    /// |g| about 0.6); Winograd's different rounding crossed it once (0.0345 on layer3.5.bn3.bias).
    /// Winograd's backward is checked layer by layer (WinogradTests) and, for whole networks,
    /// against float64 PyTorch (ReferenceTests, both algorithms) and the ResNet-18 check above.
    func testResNet50NetworkGradients() {
        checkNetwork(
            ModelSpec(depth: 50, width: 8, lastStride: 1, groups: 4, branches: 1, classes: 4), h: 63, w: 33, batch: 4,
            step: 1e-4, rtol: 5e-2, algorithm: .gemm)
    }

    /// The backbone seam: a backbone that is not ResNet (`TinyBackbone`: a conv + BN + ReLU and one
    /// residual block, built from its own graph) joins the grouped head with no change to the head. Its parameters are
    /// named from its graph, the head sizes itself from its channels, and every gradient of the
    /// whole network (backbone, head, loss) agrees with finite differences.
    func testAnotherBackboneJoinsTheHead() {
        let spec = ModelSpec(depth: 18, width: 8, groups: 4, branches: 2, classes: 3)
        let net = GroupedMultiBranchNet(spec, seed: 3, backbone: { TinyBackbone($0, $1, channels: 16) })
        XCTAssertEqual(net.featureChannels, 16)
        XCTAssertEqual(
            net.arena.params.map(\.name).filter { $0.hasPrefix("backbone.") },
            [
                "backbone.conv1.weight", "backbone.bn1.weight", "backbone.bn1.bias", "backbone.block.conv1.weight",
                "backbone.block.bn1.weight", "backbone.block.bn1.bias", "backbone.block.conv2.weight",
                "backbone.block.bn2.weight", "backbone.block.bn2.bias"
            ])
        let f = net.features(randomTensor([3, 3, 20, 12], seed: 2))
        XCTAssertEqual(f.shape, [3, 16])
        checkGradients(net, name: "tiny backbone", h: 20, w: 12, batch: 4)
    }

    /// Engine options are each model's own, not the process's: two models with different options
    /// (GEMM on one thread; F(4x4) on two, with the portable C kernels), run at the same time on two
    /// threads, give bit for bit what each gives alone. OpenBLAS runs single-threaded here, so
    /// that nothing but the options can differ.
    func testModelsWithDifferentOptionsRunSideBySide() {
        let blas = blasThreads()
        setBLASThreads(1)
        defer { setBLASThreads(blas) }
        let spec = ModelSpec(depth: 18, width: 8, groups: 2, branches: 1, classes: 3)
        let x = randomTensor([4, 3, 64, 32], seed: 5)
        let options = [
            EngineOptions(convAlgorithm: .gemm),
            EngineOptions(threads: 2, convAlgorithm: .winograd4, kernelPath: .portable)
        ]
        let alone = options.map { GroupedMultiBranchNet(spec, seed: 1, options: $0).features(x).array }
        XCTAssertNotEqual(alone[0], alone[1], "the two options should compute differently")
        let nets = options.map { GroupedMultiBranchNet(spec, seed: 1, options: $0) }
        let lock = NSLock()
        var together = [[Float]](repeating: [], count: 2)
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            for _ in 0..<3 {
                let f = nets[i].features(x).array
                lock.lock()
                together[i] = f
                lock.unlock()
            }
        }
        XCTAssertEqual(together[0], alone[0])
        XCTAssertEqual(together[1], alone[1])
    }

    func testFeaturesAreUnitNorm() {
        let net = GroupedMultiBranchNet(ModelSpec(depth: 18, width: 4, groups: 4, branches: 2, classes: 3))
        let f = net.features(randomTensor([3, 3, 64, 32], seed: 2))
        XCTAssertEqual(f.shape, [3, 32])
        for i in 0..<3 { XCTAssertEqual(vdot(f.ptr + i * 32, f.ptr + i * 32, 32), 1, accuracy: 1e-5) }
    }
}

/// A small backbone that is not ResNet, for the seam's test: a 3x3 stride-2 conv + BN + ReLU, then
/// one residual block of two 3x3 convs (ResNet's BasicBlock as a part), built from its own graph.
final class TinyBackbone: Backbone {
    let graph: [GraphNode]
    let ws: Workspace
    let conv: Conv2d, bn: BatchNorm, block: BasicBlock
    let input = Tensor([0]), gb = GradBuffers()
    let outChannels: Int

    init(_ arena: Arena, _ options: EngineOptions, channels c: Int) {
        let stem = ConvBN(conv: "backbone.conv1", bn: "backbone.bn1", cin: 3, cout: c, kernel: 3, stride: 2, relu: true)
        let body = [
            ConvBN(conv: "backbone.block.conv1", bn: "backbone.block.bn1", cin: c, cout: c, kernel: 3, relu: true),
            ConvBN(conv: "backbone.block.conv2", bn: "backbone.block.bn2", cin: c, cout: c, kernel: 3, relu: false)
        ]
        graph = [.convBN(stem), .residual(name: "backbone.block", stage: 1, body: body, shortcut: [])]
        ws = Workspace(options)
        conv = Conv2d(arena, stem)
        bn = BatchNorm(arena, stem.bn, channels: c)
        block = BasicBlock(arena, body: body, shortcut: [])
        outChannels = c
    }

    func forward(nchw x: Tensor, training: Bool) -> Tensor {
        let n = x.shape[0], h = x.shape[2], w = x.shape[3]
        input.resizeForOverwrite([3, n, h, w])
        swapLeadingAxes(input.ptr, x.ptr, n, 3, h * w)
        let a = bn.forward(conv.forward(input, ws, training: training), training: training, relu: true, ws)
        return block.forward(a, training: training, ws)
    }

    func backward(_ dOut: Tensor, ready: ((Int) -> Void)?) {
        let d = dOut === gb.a ? gb.b : gb.a
        block.backward(dOut, dX: d, gb.s1, gb.s2, ws)
        gb.s1.resizeForOverwrite(conv.output.shape)
        bn.backward(d.ptr, dX: gb.s1.ptr, ws)
        conv.backward(gb.s1.ptr, dX: nil, ws)
        ready?(0)
    }

    func featureGradBuffer(_ shape: [Int]) -> Tensor {
        gb.a.resizeForOverwrite(shape)
        return gb.a
    }
}
