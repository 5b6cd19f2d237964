// What a run folder holds, read for the report: the metrics.jsonl records,
// run.json (ranks, threads, processor, kernel, versions, wall time), the
// resolved config, the checkpoints and the last evaluation's ranked lists.
import Foundation
import ReIDEval

final class RunRecords {
    struct CheckpointRow { var name: String, epoch: Int, mAP: Double? }

    let runDir: String
    var name: String { (runDir as NSString).lastPathComponent }
    var train: [TrainRecord] = [], evals: [EvalRecord] = [], comm: [CommRecord] = []
    var info: [(String, String)] = []
    /// "training" for a run folder; "evaluation" for the folder `evaluate --report` writes.
    var kind = "training"

    /// A run.json or comm record's key and value as people read them: "wall_s" 83.10647 ->
    /// ("Wall time", "83.1 s"); other numbers rounded to 4 significant digits, labels in words.
    static func human(_ key: String, _ value: Any) -> (String, String) {
        let words = [
            "wall_s": "Wall time", "run_s": "Run time", "allreduce_exposed_s": "Exposed all-reduce",
            "rank_imbalance_s": "Ranks waiting for the slowest", "reid_dist_version": "reid-dist version",
            "seconds": "Time taken",
            "blas_kernel": "BLAS kernel", "mpi_ranks": "MPI ranks", "images_per_second": "Images per second"
        ]
        var label = words[key] ?? key.replacingOccurrences(of: "_", with: " ")
        if words[key] == nil { label = label.prefix(1).uppercased() + label.dropFirst() }
        guard let n = value as? NSNumber, String(cString: n.objCType) != "c" else { return (label, "\(value)") }
        let v = n.doubleValue
        if key.hasSuffix("_s") || key == "seconds" {
            if label.hasSuffix(" s") { label.removeLast(2) }
            return (
                label,
                v >= 120
                    ? String(format: "%.0f s (%dm%02ds)", v, Int(v) / 60, Int(v) % 60) : String(format: "%.1f s", v)
            )
        }
        if v == v.rounded(), abs(v) < 1e15 { return (label, "\(Int(v))") }
        return (label, String(format: "%.4g", v))
    }
    var config = "", summaryLine = ""
    var checkpoints: [CheckpointRow] = [], best: String?, latest: String?
    var ranked: RankedListsFile?
    var thumbs: [String: String] = [:]

    init(runDir: String) throws {
        self.runDir = runDir
        let metrics = (runDir as NSString).appendingPathComponent(MetricsFile.name)
        guard let text = try? String(contentsOfFile: metrics, encoding: .utf8) else {
            throw ReportError("\(metrics): missing or unreadable; is \(runDir) a reid-dist run folder?")
        }
        let records = try MetricsFile.parse(text, path: metrics)
        train = records.train
        evals = records.evals
        comm = records.comm
        config =
            (try? String(contentsOfFile: (runDir as NSString).appendingPathComponent("config.yaml"), encoding: .utf8))
            ?? "(no config.yaml)"
        if let data = FileManager.default.contents(atPath: (runDir as NSString).appendingPathComponent("run.json")),
            let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        {
            if let kind = obj["kind"] as? String { self.kind = kind }
            // the model and data first, the machine last; other keys in alphabetical order between
            let first = ["model", "architecture", "input", "evaluated_on", "metric"],
                last = ["seconds", "reid_dist_version", "blas_kernel"]
            let keys =
                first.filter { obj[$0] != nil }
                + obj.keys.filter { !first.contains($0) && !last.contains($0) && $0 != "kind" }.sorted()
                + last.filter { obj[$0] != nil }
            for k in keys { info.append(Self.human(k, obj[k]!)) }
        }
        for c in comm.suffix(1) {
            for (k, v) in [
                ("allreduce_exposed_s", c.allreduceExposedS), ("rank_imbalance_s", c.rankImbalanceS), ("run_s", c.runS)
            ] {
                let (label, text) = Self.human(k, v as NSNumber)
                info.append(("Last run: " + label.lowercased(), text))
            }
        }
        readCheckpoints()
        if let data = FileManager.default.contents(
            atPath: ((runDir as NSString).appendingPathComponent(RunReport.folder) as NSString).appendingPathComponent(
                "ranked.json"))
        {
            ranked = try? JSONDecoder().decode(RankedListsFile.self, from: data)
        }
        let steps = train.last.map { Int($0.globalStep) } ?? 0
        summaryLine =
            "\(steps) steps logged over \(train.last?.epoch ?? 0) epoch(s), \(evals.count) evaluation(s)"
            + (evals.last.map { String(format: "; last: rank-1 %.2f%%, mAP %.2f%%", $0.rank1 * 100, $0.mAP * 100) }
                ?? "")
    }

    func readCheckpoints() {
        let dir = (runDir as NSString).appendingPathComponent("checkpoints")
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter {
            $0.hasPrefix("epoch-")
        }.sorted()
        func pointer(_ f: String) -> String? {
            (try? String(contentsOfFile: (dir as NSString).appendingPathComponent(f), encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        best = pointer("best")
        latest = pointer("latest")
        for n in names {
            var row = CheckpointRow(name: n, epoch: Int(n.dropFirst(6).prefix(4)) ?? 0, mAP: nil)
            if let data = FileManager.default.contents(
                atPath: ((dir as NSString).appendingPathComponent(n) as NSString).appendingPathComponent("state.json")),
                let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
                let m = obj["metrics"] as? [String: Any]
            {
                row.mAP = (m["mAP"] as? NSNumber)?.doubleValue
            }
            checkpoints.append(row)
        }
    }

    /// The charts, by file name. Training charts have one point per logged step.
    func charts() -> [(String, SVGChart)] {
        var out: [(String, SVGChart)] = []
        if kind == "evaluation" { return cmcChart().map { [("cmc", $0)] } ?? [] }
        // Epoch boundaries: after each epoch's last logged step.
        var ends: [Double] = []
        for (a, b) in zip(train, train.dropFirst()) where b.epoch != a.epoch {
            ends.append(Double(a.globalStep + b.globalStep) / 2)
        }
        func chart(
            _ file: String, _ title: String, _ y: String, _ series: [SVGChart.Series], range: ClosedRange<Double>? = nil
        ) {
            var c = SVGChart(title: title, xLabel: "step", yLabel: y, series: series)
            c.markers = ends
            c.yRange = range
            out.append((file, c))
        }
        let x = train.map { Double($0.globalStep) }
        func pts(_ v: [Double]) -> [(x: Double, y: Double)] { zip(x, v).map { ($0, $1) } }
        var loss = [SVGChart.Series("epoch mean", pts(train.map(\.loss)), color: "#1f77b4")]
        if train.contains(where: { $0.stepLoss != nil }) {
            loss.append(.init("last step", pts(train.map { $0.stepLoss ?? .nan }), color: "#aec7e8"))
        }
        chart("loss", "Training loss", "loss", loss)
        chart(
            "accuracy", "Training accuracy (per head, epoch so far)", "%",
            [.init("accuracy", pts(train.map { $0.acc * 100 }), color: "#2ca02c")])
        chart("lr", "Learning rate", "lr", [.init("lr", pts(train.map(\.lr)), color: "#9467bd")])
        chart(
            "throughput", "Throughput", "images/s",
            [.init("images/s", pts(train.map { $0.imagesPerSecond ?? .nan }), color: "#ff7f0e")])
        chart(
            "data-wait", "Data-loader wait (cumulative in the epoch)", "s",
            [.init("wait", pts(train.map { $0.dataWaitS ?? .nan }), color: "#8c564b")])
        if train.contains(where: { $0.allreduceExposedS != nil }) {
            chart(
                "allreduce", "All-reduce per logged window", "s",
                [
                    .init("exposed all-reduce", pts(train.map { $0.allreduceExposedS ?? .nan }), color: "#d62728"),
                    .init("waiting for the slowest rank", pts(train.map { $0.rankWaitS ?? .nan }), color: "#7f7f7f")
                ])
        }
        let ex = evals.enumerated().map { Double($1.epoch ?? $0 + 1) }
        var e = SVGChart(
            title: "Evaluation", xLabel: "epoch", yLabel: "%",
            series: [
                .init("rank-1", zip(ex, evals.map { $0.rank1 * 100 }).map { ($0, $1) }, color: "#1f77b4", dots: true),
                .init("rank-5", zip(ex, evals.map { $0.rank5 * 100 }).map { ($0, $1) }, color: "#aec7e8", dots: true),
                .init("mAP", zip(ex, evals.map { $0.mAP * 100 }).map { ($0, $1) }, color: "#d62728", dots: true),
                .init("mINP", zip(ex, evals.map { $0.mINP * 100 }).map { ($0, $1) }, color: "#ff9896", dots: true)
            ])
        e.yRange = 0...100
        out.append(("eval", e))
        if let c = cmcChart() { out.append(("cmc", c)) }
        return out
    }

    /// The CMC curve of the last evaluation (ranks 1-50), if there is one.
    func cmcChart() -> SVGChart? {
        guard let last = evals.last, let cmc = last.cmc, !cmc.isEmpty else { return nil }
        var c = SVGChart(
            title: kind == "evaluation" ? "CMC" : "CMC of the last evaluation", xLabel: "rank", yLabel: "%",
            series: [
                .init(
                    "CMC", cmc.prefix(50).enumerated().map { (Double($0 + 1), $1 * 100) }, color: "#1f77b4",
                    dots: true)
            ])
        c.yRange = 0...100
        return c
    }
}
