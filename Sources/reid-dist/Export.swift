// reid-dist export: a checkpoint's inference graph as ONNX, and optionally a
// check file with which any ONNX runtime can be compared against reid-dist.
import ArgumentParser
import Foundation
import ReIDCore
import ReIDData
import ReIDDist
import ReIDEval
import ReIDImage
import ReIDONNX

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a checkpoint's inference graph as an ONNX model.",
        discussion: """
            Input "images": float32 (N, 3, H, W), RGB pixel values 0-255 resized to the model's H x W \
            (bilinear); the normalisation is inside the graph. Output "features": (N, D), L2-normalised, \
            as `reid-dist extract`. N is dynamic. Batch norms are folded into the convolutions.
            With --check-images, also writes <model>.check.safetensors: those images' input tensor and \
            reid-dist's features for them; `Cluster/python/check_onnx.py MODEL.onnx` compares them with onnxruntime.
            """)
    @OptionGroup var options: ModelConfigOptions
    @Option(help: "Checkpoint folder, run folder, or model.safetensors.") var checkpoint: String
    @Option(help: "Output ONNX file.") var onnx: String
    @Option(
        parsing: .unconditional, help: "ONNX opset (\(ONNXExport.opsets.lowerBound)-\(ONNXExport.opsets.upperBound)).")
    var opset = 17
    @Flag(
        inversion: .prefixedNo,
        help:
            "Average each image's features with its mirror image's inside the graph (twice the work; default: as the model was evaluated, its eval.flip, like every command that produces features)."
    )
    var flip: Bool?
    @Option(
        help:
            "A folder (recursive) or list of images: write <model>.check.safetensors with their inputs and reid-dist's features."
    )
    var checkImages: String?
    @Option(parsing: .unconditional, help: "At most this many images from --check-images.") var checkCount = 8

    func validate() throws {
        guard ONNXExport.opsets.contains(opset) else {
            throw ValidationError(
                "--opset \(opset) is not supported: choose \(ONNXExport.opsets.lowerBound) to \(ONNXExport.opsets.upperBound)"
            )
        }
        guard checkCount >= 1 else { throw ValidationError("--check-count must be at least 1, got \(checkCount)") }
        guard onnx.hasSuffix(".onnx") else { throw ValidationError("--onnx must name a .onnx file, got '\(onnx)'") }
    }

    func run() throws {
        try checkOutputFolder(onnx, "--onnx")
        let loaded = try loadModel(options, checkpoint: checkpoint)
        let c = loaded.config, net = loaded.model
        let flip = self.flip ?? c.eval.flip
        print(
            "features \(flip ? "flip-averaged" : "not flip-averaged") (\(self.flip == nil ? "the model's eval.flip" : self.flip! ? "--flip" : "--no-flip"))"
        )
        useThreads(c.train.threadsPerRank(ranksOnNode: 1), for: net)
        let card = ModelCard(spec: net.spec, height: c.data.height, width: c.data.width, flip: flip)
        var o = ONNXExportOptions(height: card.height, width: card.width, mean: card.mean, std: card.std)
        o.opset = opset
        o.flip = flip
        o.producerVersion = reidDistVersion
        o.metadata = card.metadata.merging(["source": loaded.file]) { a, _ in a }
        let t0 = Profile.now()
        let bytes = try ONNXExport.serialize(net, o)
        try writeAtomically(bytes, to: onnx)
        print(
            String(
                format:
                    "wrote %@ (%.1f MB, opset %d, ResNet-%d, %d features%@, input N x 3 x %d x %d RGB 0-255) in %.1f s",
                onnx, Double(bytes.count) / 1e6, opset, net.spec.depth, net.spec.featureChannels,
                flip ? ", flip-averaged" : "",
                card.height, card.width, Profile.now() - t0))
        if let checkImages { try writeCheckFile(loaded, images: checkImages, flip: flip) }
    }

    /// The first `checkCount` images as the graph's input, beside reid-dist's
    /// features for them (computed as `embed`/`extract` compute them).
    func writeCheckFile(_ loaded: LoadedModel, images: String, flip: Bool) throws {
        let c = loaded.config
        let paths = Array(try imagePaths(images).prefix(checkCount))
        guard !paths.isEmpty else { throw DataError("\(images): no .jpg, .jpeg or .png images") }
        let samples = paths.map { Sample(path: $0, pid: -1, camera: -1) }
        let split = Split(name: "check", folder: images, samples: samples, fileCount: samples.count)
        let f = try extractFeatures(
            model: loaded.model, split: split, height: c.data.height, width: c.data.width,
            batchSize: c.eval.batchSize, flip: flip, maxPixels: c.data.maxPixels, producer: "reid-dist export")
        let loader = ImageLoader(
            samples: samples, height: c.data.height, width: c.data.width, augment: .none, seed: 0,
            maxPixels: c.data.maxPixels)
        let plane = c.data.height * c.data.width
        var pixels = [Float](repeating: 0, count: samples.count * 3 * plane)
        for i in samples.indices {
            let img = try loader.image(i)
            for p in 0..<plane { for ch in 0..<3 { pixels[(i * 3 + ch) * plane + p] = Float(img.pixels[p * 3 + ch]) } }
        }
        let out = String(onnx.dropLast(".onnx".count)) + ".check.safetensors"
        let records = [
            TensorRecord("images", floats: pixels, shape: [samples.count, 3, c.data.height, c.data.width]),
            TensorRecord("features", floats: f.features.array, shape: [f.count, f.dim])
        ]
        let meta = [
            "paths": paths.joined(separator: "\n"), "flip": "\(flip)", "producer": "reid-dist \(reidDistVersion) export"
        ]
        try writeAtomically(SafeTensors.encode(records, metadata: meta), to: out)
        print(
            "wrote \(out): \(samples.count) images and their features; compare with Cluster/python/check_onnx.py \(onnx)"
        )
    }
}
