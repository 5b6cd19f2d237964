// The run report: well-formed, self-contained, one chart point per logged step
// and per evaluation, and it renders for a run with no evaluation yet.
import Foundation
import ReIDEval
import XCTest

@testable import ReIDCore
@testable import ReIDData
@testable import ReIDDist
@testable import ReIDReport

#if canImport(FoundationXML)
    import FoundationXML
#endif

final class ReportTests: XCTestCase {
    func scratchDir(_ name: String) -> String {
        let p = FileManager.default.temporaryDirectory.appendingPathComponent("reid-report-\(name)-\(getpid())").path
        try? FileManager.default.removeItem(atPath: p)
        try! FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        return p
    }

    func train(_ run: String, _ extra: [String]) throws -> Trainer {
        let data = scratchDir("data") + "/d"
        var c = SynthConfig()
        c.trainIds = 8
        c.testIds = 6
        c.seed = 2
        _ = try writeSynthetic(c, to: data)
        var cfg = Config()
        for o in [
            "data.root=\(data)", "data.height=64", "data.width=32", "model.depth=18", "model.width=8", "model.groups=2",
            "sampler.ids_per_batch=4", "sampler.instances=2", "optim.lr=0.003", "schedule.warmup_epochs=0",
            "schedule.milestones=[10]",
            "train.run_dir=\(run)", "train.log_every=2", "train.threads=2", "eval.batch_size=16", "augment.pad=2"
        ] + extra {
            try cfg.apply(override: o)
        }
        let t = try Trainer(config: cfg)
        t.log = { _ in }
        try t.run()
        return t
    }

    /// Parses the page as XML (it is written as XHTML-compatible HTML) and returns the charts'
    /// polylines: series name -> number of points.
    func check(_ html: String) throws -> [String: [Int]] {
        XCTAssertFalse(
            html.contains("http:") || html.contains("https:") || html.contains("<script") || html.contains("src=\"/"),
            "self-contained: no external URL, no script, no absolute file reference")
        let doc = try XMLDocument(xmlString: html.replacingOccurrences(of: "<!DOCTYPE html>", with: ""), options: [])
        var series: [String: [Int]] = [:]
        for node in try doc.nodes(forXPath: "//polyline") {
            guard let e = node as? XMLElement, let name = e.attribute(forName: "data-series")?.stringValue,
                let n = Int(e.attribute(forName: "data-points")?.stringValue ?? "")
            else { continue }
            XCTAssertEqual(e.attribute(forName: "points")?.stringValue?.split(separator: " ").count ?? 0, n, name)
            series[name, default: []].append(n)
        }
        return series
    }

    func testTheReportOfATrainedRun() throws {
        let run = scratchDir("run") + "/run"
        let t = try train(run, ["schedule.epochs=2", "train.eval_every=1"])
        let html = try String(contentsOfFile: run + "/report.html", encoding: .utf8)
        let series = try check(html)
        let lines = try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        let trainLines = lines.filter { $0.contains("\"kind\":\"train\"") }.count,
            evalLines = lines.filter { $0.contains("\"kind\":\"eval\"") }.count
        XCTAssertEqual(evalLines, 2)
        XCTAssertEqual(series["epoch mean"], [trainLines], "one loss point per logged step")
        XCTAssertEqual(series["accuracy"], [trainLines])
        XCTAssertEqual(series["lr"], [trainLines])
        XCTAssertEqual(series["images/s"], [trainLines])
        XCTAssertEqual(series["wait"], [trainLines])
        XCTAssertEqual(series["rank-1"], [evalLines])
        XCTAssertEqual(series["mAP"], [evalLines])
        XCTAssertEqual(series["mINP"], [evalLines])
        XCTAssertEqual(series["CMC"], [min(50, t.dataset.gallery.samples.count)])
        XCTAssert(
            html.contains("Worst queries by AP") && html.contains("data:image/jpeg;base64,"),
            "ranked lists with inline thumbnails")
        XCTAssert(html.contains("epoch-0002") && html.contains("best"), "checkpoints and the best one")
        for k in ["Processor", "BLAS kernel", "Threads per rank", "reid-dist version", "Wall time"] {
            XCTAssert(html.contains(">\(k)<"), k)
        }
        XCTAssertNil(
            html.range(of: #"<td>\d+\.\d{6,}"#, options: .regularExpression), "numbers in the run table are rounded")
        for f in ["loss", "accuracy", "lr", "throughput", "data-wait", "eval", "cmc"] {
            let svg = try String(contentsOfFile: run + "/report/\(f).svg", encoding: .utf8)
            XCTAssert(svg.hasPrefix("<svg xmlns=\"http://www.w3.org/2000/svg\""), f)
            _ = try XMLDocument(xmlString: svg, options: [])
        }
        // `reid-dist report` writes the same page elsewhere.
        let copy = scratchDir("copy")
        XCTAssertEqual(try RunReport.write(runDir: run, out: copy + "/page.html"), copy + "/page.html")
        XCTAssert(FileManager.default.fileExists(atPath: copy + "/report/loss.svg"))
    }

    func testARunWithNoEvaluationYetRenders() throws {
        let run = scratchDir("noeval") + "/run"
        _ = try train(run, ["schedule.epochs=3", "train.eval_every=0", "train.checkpoint_every=1"])
        // Drop the final evaluation: what the page of a running job looks like before its first one.
        let metrics = try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8)
        try metrics.split(separator: "\n").filter { !$0.contains("\"kind\":\"eval\"") }.joined(separator: "\n")
            .write(toFile: run + "/metrics.jsonl", atomically: true, encoding: .utf8)
        try FileManager.default.removeItem(atPath: run + "/report")
        let html = try String(contentsOfFile: try RunReport.write(runDir: run), encoding: .utf8)
        let series = try check(html)
        XCTAssert(html.contains("No evaluation yet"))
        XCTAssertNil(series["rank-1"].flatMap { $0.first { $0 > 0 } })
        XCTAssertThrowsError(try RunReport.write(runDir: scratchDir("empty"))) {
            XCTAssert("\($0)".contains("metrics.jsonl: missing"), "\($0)")
        }
        // A count no run reaches is a damaged line, named, not a wrapped integer (or a trap).
        let base = metrics.hasSuffix("\n") ? metrics : metrics + "\n"
        try
            (base
            + #"{"kind":"train","epoch":1e300,"step":1,"global_step":1,"loss":5,"acc":0,"lr":0.1}"# + "\n")
            .write(toFile: run + "/metrics.jsonl", atomically: true, encoding: .utf8)
        let line = metrics.split(separator: "\n").count + 1
        XCTAssertThrowsError(try RunReport.write(runDir: run)) {
            XCTAssert("\($0)".contains("metrics.jsonl:\(line): 'epoch' is 1e+300, not a count a run reaches"), "\($0)")
        }
        // a record without a key its kind needs is named the same way
        try (base + #"{"kind":"eval","global_step":3}"# + "\n").write(
            toFile: run + "/metrics.jsonl", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try RunReport.write(runDir: run)) {
            XCTAssert("\($0)".contains("metrics.jsonl:\(line): no 'rank1'"), "\($0)")
        }
    }
}
