// `reid-dist export`: the ONNX graph, run by onnxruntime (from PyPI, in a
// virtual environment outside the repository that Cluster/test.sh makes),
// gives the features reid-dist computes, for a ResNet-18 and a ResNet-50, at
// two batch sizes, with and without flip averaging, at the lowest and the
// default opset; onnx.checker accepts every file.
import Foundation
import ReIDEval
import ReIDONNX
import XCTest

@testable import ReIDCore
@testable import ReIDDist

final class ONNXTests: XCTestCase {
    func python() throws -> String { try suitePython() }

    /// A model file with random weights and batch-norm statistics far from
    /// 0/1, so that folding them into the convolutions is really exercised.
    func modelFile(_ spec: ModelSpec, height: Int, width: Int, seed: UInt64) throws -> String {
        let net = GroupedMultiBranchNet(spec, seed: seed)
        var rng = RNG(seed: seed)
        for s in net.arena.buffers {
            let p = net.arena.buffer + s.offset
            for i in 0..<s.count {
                p[i] = s.name.hasSuffix("running_var") ? Float(0.5 + rng.uniform()) : Float(0.2 * (rng.uniform() - 0.5))
            }
        }
        for s in net.arena.params where s.name.contains("bn") {
            let p = net.arena.value + s.offset
            for i in 0..<s.count {
                p[i] = s.name.hasSuffix(".weight") ? Float(0.5 + rng.uniform()) : Float(0.2 * (rng.uniform() - 0.5))
            }
        }
        let card = ModelCard(spec: spec, height: height, width: width, flip: false)
        let file = scratch("onnx-r\(spec.depth)") + "/model.safetensors"
        try SafeTensors.write(net.arena.stateRecords(), metadata: card.metadata, to: file)
        return file
    }

    func check(_ spec: ModelSpec, flip: Bool, opset: Int) throws {
        let py = try python()
        let model = try modelFile(spec, height: 96, width: 48, seed: UInt64(spec.depth))
        let dir = (model as NSString).deletingLastPathComponent
        let onnx = dir + "/model-\(opset)\(flip ? "-flip" : "").onnx"
        let images = tinyData + "/query"
        var args = [
            "export", "--checkpoint", model, "--onnx", onnx, "--opset", "\(opset)", "--check-images", images,
            "--check-count", "7"
        ]
        if flip { args.append("--flip") }
        var (s, o) = try runReidDist(args)
        XCTAssertEqual(s, 0, o)
        // Without --flip the model's own eval.flip (false here) rules, and export says which it used.
        XCTAssert(
            o.contains(flip ? "features flip-averaged (--flip)" : "features not flip-averaged (the model's eval.flip)"),
            o)
        // The check file's features are extract's: the same images through `embed` give the same
        // numbers (to rounding: another batch size changes the GEMMs' shapes).
        let check = try SafeTensorsFile(path: String(onnx.dropLast(5)) + ".check.safetensors")
        let listed = dir + "/check-images.txt"
        try check.metadata["paths", default: ""].write(toFile: listed, atomically: true, encoding: .utf8)
        var embed = [
            "embed", "--checkpoint", model, "--images", listed, "--out", dir + "/embedded.safetensors", "--batch", "3"
        ]
        embed.append(flip ? "--flip" : "--no-flip")
        (s, o) = try runReidDist(embed)
        XCTAssertEqual(s, 0, o)
        let embedded = try FeatureSet(path: dir + "/embedded.safetensors").features.array,
            checked = try check.floats("features")
        XCTAssertEqual(embedded.count, checked.count)
        XCTAssertLessThan(zip(embedded, checked).map { abs($0 - $1) }.max() ?? 1, 1e-6)

        let script = toolPath("check_onnx.py")
        (s, o) = try runProgram(py, [script, onnx, "--batches", "1,5", "--tolerance", "1e-4"])
        print(o)
        XCTAssertEqual(s, 0, o)
        XCTAssert(o.contains("onnx.checker: ok (opset \(opset)"), o)
        XCTAssert(o.contains("batch 1: 7 images") && o.contains("batch 5: 7 images"), o)
    }

    func testResNet18ExportMatchesExtractInOnnxruntime() throws {
        try check(
            ModelSpec(depth: 18, width: 16, lastStride: 2, groups: 2, branches: 2, classes: 10), flip: false, opset: 17)
        try check(
            ModelSpec(depth: 18, width: 16, lastStride: 2, groups: 2, branches: 2, classes: 10), flip: true, opset: 13)
    }

    func testResNet50ExportMatchesExtractInOnnxruntime() throws {
        try check(
            ModelSpec(depth: 50, width: 8, lastStride: 1, groups: 4, branches: 2, classes: 10), flip: false,
            opset: ONNXExport.opsets.upperBound)
        try check(
            ModelSpec(depth: 50, width: 8, lastStride: 1, groups: 4, branches: 2, classes: 10), flip: true, opset: 17)
    }

    /// The graph's structure, without a runtime: folded convolutions (no BatchNormalization in the
    /// backbone), one BatchNormalization per group, a dynamic batch dimension, the card in metadata.
    func testGraphShape() throws {
        let spec = ModelSpec(depth: 18, width: 8, lastStride: 1, groups: 4, branches: 1, classes: 5)
        let net = GroupedMultiBranchNet(spec)
        var o = ONNXExportOptions(height: 64, width: 32, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25])
        o.metadata = ["depth": "18"]
        let m = try ONNXExport.model(net, o)
        let ops = m.graph.node.map(\.opType)
        XCTAssertEqual(ops.filter { $0 == "Conv" }.count, 20) // stem, 8 blocks x 2, 3 downsamples
        XCTAssertEqual(ops.filter { $0 == "BatchNormalization" }.count, 4)
        XCTAssertEqual(m.graph.input[0].type.tensorType.shape.dim[0].dimParam, "N")
        XCTAssertEqual(m.graph.output[0].type.tensorType.shape.dim[1].dimValue, Int64(spec.featureChannels))
        XCTAssertEqual(m.metadataProps.first?.key, "depth")
        XCTAssertEqual(m.graph.node.last?.output, ["features"])
        o.opset = 12
        XCTAssertThrowsError(try ONNXExport.model(net, o)) {
            XCTAssert("\($0)".contains("--opset 12 is not supported"), "\($0)")
        }
        // The bytes parse back to the same message.
        o.opset = 17
        let bytes = try ONNXExport.serialize(net, o)
        XCTAssertEqual(try Onnx_ModelProto(serializedBytes: bytes).graph.node.count, m.graph.node.count)
    }
}
