// ResNet and the grouped multi-branch network: torchvision's names and
// parameter counts, and whole-network gradients against finite differences.
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
    func checkNetwork(_ spec: ModelSpec, h: Int, w: Int, batch: Int, step: Float = 1e-3, rtol: Double = 2e-2) {
        let net = GroupedMultiBranchNet(spec, seed: 3)
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
                "resnet\(spec.depth) \(s.name)", net.arena.value + s.offset, count: s.count,
                analytic: Array(grads[s.offset..<(s.offset + s.count)]),
                loss: { net.forwardLoss(x, labels: labels, labelSmoothing: 0.1).loss })
        }
    }

    func testResNet18NetworkGradients() {
        defer { Conv2d.algorithm = .auto }
        for a in [ConvAlgorithm.gemm, .winograd, .winograd4] {
            Conv2d.algorithm = a
            checkNetwork(
                ModelSpec(depth: 18, width: 8, lastStride: 1, groups: 2, branches: 2, classes: 5), h: 65, w: 33,
                batch: 4)
        }
    }

    /// With GEMM convolutions only: at the small step this deep network needs, the float32 loss's
    /// rounding puts about 0.03 of noise on the numeric slope, at the tolerance itself (0.05 |g|,
    /// |g| about 0.6); Winograd's different rounding crossed it once (0.0345 on layer3.5.bn3.bias).
    /// Winograd's backward is checked layer by layer (WinogradTests) and, for whole networks,
    /// against float64 PyTorch (ReferenceTests, both algorithms) and the ResNet-18 check above.
    func testResNet50NetworkGradients() {
        defer { Conv2d.algorithm = .auto }
        Conv2d.algorithm = .gemm
        checkNetwork(
            ModelSpec(depth: 50, width: 8, lastStride: 1, groups: 4, branches: 1, classes: 4), h: 63, w: 33, batch: 4,
            step: 1e-4, rtol: 5e-2)
    }

    func testFeaturesAreUnitNorm() {
        let net = GroupedMultiBranchNet(ModelSpec(depth: 18, width: 4, groups: 4, branches: 2, classes: 3))
        let f = net.features(randomTensor([3, 3, 64, 32], seed: 2))
        XCTAssertEqual(f.shape, [3, 32])
        for i in 0..<3 { XCTAssertEqual(vdot(f.ptr + i * 32, f.ptr + i * 32, 32), 1, accuracy: 1e-5) }
    }
}
