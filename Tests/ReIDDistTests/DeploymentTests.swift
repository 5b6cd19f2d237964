// A trained model used on its own: it describes itself (evaluate needs no config, a
// contradicting config is refused, older files still load with one), `embed` reads any
// folder of images, and `search` finds the same neighbours as a brute-force sort.
import Foundation
import ReIDImage
import ReIDReport
import XCTest

@testable import ReIDCore
@testable import ReIDData
@testable import ReIDDist
@testable import ReIDEval

final class DeploymentTests: XCTestCase {
    func cli(_ args: [String]) throws -> (Int32, String) { try runReidDist(args) }

    func testACheckpointDescribesItsModel() throws {
        let run = scratch("card") + "/run"
        let t = try Trainer(config: try tinyConfig(run, ["schedule.epochs=1"]))
        t.log = { _ in }
        try t.run()
        let model = run + "/checkpoints/epoch-0001/model.safetensors"
        let card = try XCTUnwrap(try ModelCard(metadata: try SafeTensorsFile(path: model).metadata, file: model))
        XCTAssertEqual(card.spec, t.model.spec)
        XCTAssertEqual([card.height, card.width], [64, 32])
        var (s, o) = try cli(["evaluate", "--checkpoint", run, "--json", run + "/alone.json"])
        XCTAssertEqual(s, 0, o)
        (s, o) = try cli([
            "evaluate", "--config", run + "/config.yaml", "--checkpoint", run, "--json", run + "/with.json"
        ])
        XCTAssertEqual(s, 0, o)
        let a = try EvaluationSummary.read(run + "/alone.json"), b = try EvaluationSummary.read(run + "/with.json")
        XCTAssertEqual(a.mAP, b.mAP)
        XCTAssertEqual(a.cmc, b.cmc)
        (s, o) = try cli(["evaluate", "--config", run + "/config.yaml", "--set", "model.depth=50", "--checkpoint", run])
        XCTAssertEqual(s, 1, o)
        XCTAssert(
            o.contains("the model and the configuration disagree: model.depth = 50 in the config, 18 in the model"), o)
        // A model file written before cards: loads with its config, is refused without one.
        let old = scratch("oldmodel") + "/model.safetensors"
        try SafeTensors.write(t.model.arena.stateRecords(), metadata: ["format": "pt"], to: old)
        (s, o) = try cli([
            "extract", "--config", run + "/config.yaml", "--checkpoint", old, "--split", "query", "--out", old + ".q"
        ])
        XCTAssertEqual(s, 0, o)
        (s, o) = try cli([
            "extract", "--checkpoint", old, "--data-root", tinyData, "--split", "query", "--out", old + ".q"
        ])
        XCTAssertEqual(s, 1, o)
        XCTAssert(o.contains("does not describe its model"), o)
    }

    /// `evaluate --report` draws a page for one evaluation: the model, the data, the metrics, the
    /// CMC and the ranked lists; no training charts, checkpoints or raw floats.
    func testAnEvaluationReportDescribesTheEvaluation() throws {
        let run = scratch("evalreport") + "/run"
        let t = try Trainer(config: try tinyConfig(run, ["schedule.epochs=1"]))
        t.log = { _ in }
        try t.run()
        let out = scratch("evalreport-out") + "/report"
        let (s, o) = try cli(["evaluate", "--checkpoint", run, "--report", out])
        XCTAssertEqual(s, 0, o)
        let html = try String(contentsOfFile: out + "/report.html", encoding: .utf8)
        for want in [
            "<h1>reid-dist evaluation</h1>", "ResNet-18, width 8", "2 groups x 2 branches", "epoch 1", "64 x 32 pixels",
            "Evaluated on", tinyData, "<h2>Metrics</h2>", "CMC", "Worst queries by AP", "cosine distance",
            "reid-dist version"
        ] {
            XCTAssert(html.contains(want), "missing '\(want)'")
        }
        for unwanted in ["Training loss", "no data yet", "Checkpoints", "steps logged", "(no config.yaml)"] {
            XCTAssertFalse(html.contains(unwanted), "an evaluation page shows '\(unwanted)'")
        }
        XCTAssertNil(html.range(of: #"\d\.\d{6,}"#, options: .regularExpression), "numbers are rounded")
        XCTAssertEqual(
            try FileManager.default.contentsOfDirectory(atPath: out + "/report").filter { $0.hasSuffix(".svg") },
            ["cmc.svg"])
        // The training report's run table is in words and rounded too.
        let training = try String(contentsOfFile: try RunReport.write(runDir: run), encoding: .utf8)
        XCTAssertNil(
            training.range(of: #"<td>\d+\.\d{6,}"#, options: .regularExpression), "numbers in the run table are rounded"
        )
    }

    func testEmbedAnyFolderAndSearchIt() throws {
        let run = scratch("embed") + "/run"
        let t = try Trainer(config: try tinyConfig(run, ["schedule.epochs=1"]))
        t.log = { _ in }
        try t.run()
        // A folder with no naming rules, nested, JPEG and PNG.
        let dir = scratch("embed-images")
        try FileManager.default.createDirectory(atPath: dir + "/a/b", withIntermediateDirectories: true)
        var n = 0
        for s in t.dataset.gallery.samples.prefix(6) {
            n += 1
            let img = try RGBImage(file: s.path)
            if n % 2 == 0 {
                try img.pngData().write(to: URL(fileURLWithPath: dir + "/a/b/person \(n).png"))
            } else {
                try FileManager.default.copyItem(
                    atPath: s.path, toPath: dir + "/a/\((s.path as NSString).lastPathComponent)")
            }
        }
        var (s, o) = try cli(["embed", "--checkpoint", run, "--images", dir, "--out", dir + "/f.safetensors"])
        XCTAssertEqual(s, 0, o)
        let f = try FeatureSet(path: dir + "/f.safetensors")
        XCTAssertEqual(f.count, 6)
        XCTAssertEqual(f.paths.count, 6)
        XCTAssertEqual(f.pids.filter { $0 == -1 }.count, 3, "names with no id read as -1")
        // The same images' features from the dataset's own extraction.
        let g = try extractFeatures(
            model: t.model, split: t.dataset.gallery, height: 64, width: 32, batchSize: 16, flip: true, producer: "t")
        (s, o) = try cli([
            "search", "--query", dir + "/f.safetensors", "--gallery", dir + "/f.safetensors", "--topk", "2", "--json",
            dir + "/s.json"
        ])
        XCTAssertEqual(s, 0, o)
        let rows =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/s.json")))
            as! [[String: Any]]
        XCTAssertEqual(rows.count, 6)
        for r in rows {
            XCTAssertEqual(
                ((r["results"] as! [[String: Any]])[0]["gallery"] as! String), r["query"] as! String,
                "each image finds itself first")
        }
        // Top-k equals a brute-force sort, for any block size.
        let q = FeatureSet(
            features: Tensor([5, g.dim], Array(g.features.buffer.prefix(5 * g.dim))), pids: Array(g.pids.prefix(5)),
            camids: Array(g.camids.prefix(5)))
        let d = distanceMatrix(q, g, metric: .cosine)
        for block in [1, 2, 512] {
            let hits = try searchTopK(query: q, gallery: g, metric: .cosine, k: 7, blockRows: block)
            for i in 0..<5 {
                let brute = (0..<g.count).sorted {
                    d.ptr[i * g.count + $0] < d.ptr[i * g.count + $1]
                        || (d.ptr[i * g.count + $0] == d.ptr[i * g.count + $1] && $0 < $1)
                }.prefix(7)
                XCTAssertEqual(hits[i].map(\.index), Array(brute), "query \(i), block \(block)")
            }
        }
        (s, o) = try cli(["embed", "--checkpoint", run, "--images", dir + "/nothing", "--out", dir + "/x.safetensors"])
        XCTAssertEqual(s, 1, o)
        XCTAssert(o.contains("no such folder or list file"), o)
        XCTAssert(
            FileManager.default.createFile(atPath: dir + "/a/broken.jpg", contents: Data([0xFF, 0xD8, 0xFF, 0x00])))
        (s, o) = try cli(["embed", "--checkpoint", run, "--images", dir, "--out", dir + "/x.safetensors"])
        XCTAssertEqual(s, 1, o)
        XCTAssert(o.contains("broken.jpg: not a readable JPEG"), o)
        (s, o) = try cli([
            "embed", "--checkpoint", run, "--images", dir, "--out", dir + "/x.safetensors", "--skip-bad-images"
        ])
        XCTAssertEqual(s, 0, o)
        XCTAssert(o.contains("skipped 1 unreadable image(s)"), o)
        // A JPEG whose header reads but whose data is cut: skipped too, counted apart.
        let whole = try Data(contentsOf: URL(fileURLWithPath: t.dataset.gallery.samples[7].path))
        try whole.prefix(whole.count * 2 / 3).write(to: URL(fileURLWithPath: dir + "/a/truncated.jpg"))
        (s, o) = try cli([
            "embed", "--checkpoint", run, "--images", dir, "--out", dir + "/x.safetensors", "--skip-bad-images"
        ])
        XCTAssertEqual(s, 0, o)
        XCTAssert(o.contains("skipped 1 more image(s) whose header read but whose data did not decode"), o)
        XCTAssertEqual(try FeatureSet(path: dir + "/x.safetensors").count, 6)
        // Nothing readable at all: an error, and no empty feature file.
        try FileManager.default.createDirectory(atPath: dir + "/bad", withIntermediateDirectories: true)
        XCTAssert(
            FileManager.default.createFile(atPath: dir + "/bad/broken.jpg", contents: Data([0xFF, 0xD8, 0xFF, 0x00])))
        (s, o) = try cli([
            "embed", "--checkpoint", run, "--images", dir + "/bad", "--out", dir + "/none.safetensors",
            "--skip-bad-images"
        ])
        XCTAssertEqual(s, 1, o)
        XCTAssert(o.contains("none of its 1 image(s) is readable"), o)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/none.safetensors"))
        // A photo given where a feature file is expected is named as such.
        (s, o) = try cli(["search", "--query", t.dataset.gallery.samples[0].path, "--gallery", dir + "/f.safetensors"])
        XCTAssertEqual(s, 1, o)
        XCTAssert(o.contains("not a safetensors file: it starts like a JPEG image"), o)
        // A file name that is not UTF-8 is refused with that reason, not as unreadable.
        try FileManager.default.createDirectory(atPath: dir + "/latin", withIntermediateDirectories: true)
        let raw = Array("\(dir)/latin/caf".utf8) + [0xE9] + Array(".jpg".utf8) + [0]
        let fd = raw.withUnsafeBytes {
            open($0.baseAddress!.assumingMemoryBound(to: CChar.self), O_CREAT | O_WRONLY, 0o644)
        }
        _ = whole.withUnsafeBytes { write(fd, $0.baseAddress, whole.count) }
        close(fd)
        (s, o) = try cli(["embed", "--checkpoint", run, "--images", dir + "/latin", "--out", dir + "/latin.safetensors"]
        )
        XCTAssertEqual(s, 1, o)
        XCTAssert(o.contains("the file name is not UTF-8"), o)
        // An output folder that does not exist is refused before the work.
        (s, o) = try cli(["embed", "--checkpoint", run, "--images", dir, "--out", dir + "/missing/x.safetensors"])
        XCTAssertEqual(s, 1, o)
        XCTAssert(o.contains("the folder \(dir)/missing does not exist"), o)
        XCTAssertFalse(o.contains("embedding"), "refused before any image was embedded: \(o)")
    }
}

final class PretrainedTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures").path

    /// torchvision-style .pth files (both formats) as model.pretrained give the backbone the same
    /// weights as the same tensors in safetensors; fc.* is ignored; a hostile file is refused by name.
    func testTorchvisionPthFilesAsPretrainedWeights() throws {
        func backbone(_ file: String?) throws -> [Float] {
            let c = try tinyConfig(
                scratch("pre") + "/run",
                ["model.width=4"] + (file.map { ["model.pretrained=\(Self.fixtures)/\($0)"] } ?? []))
            let t = try Trainer(config: c)
            let a = t.model.arena
            return a.params.filter { $0.name.hasPrefix("backbone.") }.flatMap {
                Array(UnsafeBufferPointer(start: a.value + $0.offset, count: $0.count))
            }
                + a.buffers.filter { $0.name.hasPrefix("backbone.") }.flatMap {
                    Array(UnsafeBufferPointer(start: a.buffer + $0.offset, count: $0.count))
                }
        }
        let reference = try backbone("resnet18w4.safetensors")
        XCTAssertEqual(try backbone("resnet18w4.pth"), reference)
        XCTAssertEqual(try backbone("resnet18w4-legacy.pth"), reference)
        XCTAssertNotEqual(try backbone(nil), reference)
        let run = scratch("pre-cli") + "/run"
        let (s, o) = try runReidDist([
            "train", "--config", Self.fixtures + "/../../Configs/debug.yaml", "--set", "data.root=\(tinyData)", "--set",
            "model.width=4",
            "--set", "model.pretrained=\(Self.fixtures)/malicious.pth", "--set", "train.run_dir=\(run)"
        ])
        XCTAssertEqual(s, 1, o)
        XCTAssert(
            o.contains("model.pretrained: \(Self.fixtures)/malicious.pth") && o.contains("refusing the pickle global"),
            o)
        XCTAssertFalse(o.contains("Fatal error"), o)
    }
}
