// A study: one base configuration trained under a grid of overrides and several seeds, each cell
// and seed an ordinary run folder under the study's folder, and the table that sums them up
// (mean and spread over seeds of rank-1, mAP, mINP, speed and wall time; failed cells with their
// reason). `reid-dist study` runs it and writes study.json, study.csv and study.html.
//
//   base: ../debug.yaml                 # a config file, relative to the study file
//   out: runs/studies/ablation          # the study folder (relative to the working directory)
//   seeds: [1, 2, 3]
//   set: {data.root: synth/market}      # every run
//   grid:                               # cells: every combination, in this order
//     model.groups: [1, 4]
//     model.branches: [1, 2]
//   cells:                              # more cells, each named, with its overrides
//     - {name: triplet, set: {loss.kind: triplet}}
import Foundation
import ReIDReport
import Yams

public struct Study {
    public struct Cell: Equatable {
        public var name: String
        /// key=value overrides, in order.
        public var overrides: [String]
    }
    public struct Run {
        public var cell: Cell, seed: Int, runDir: String
        /// Every override of this run: the study's, the cell's, its seed and its folder.
        public var overrides: [String]
    }

    public let file: String, base: String, out: String
    public let seeds: [Int]
    public let common: [String]
    public let cells: [Cell]

    /// At most this many runs in a study (cells x seeds), bytes in its file, and YAML nodes walked
    /// (aliases count each time they are used, so an alias bomb stops here).
    public static let maxRuns = 10_000
    static let maxBytes = 1 << 20
    static let nodeBudget = 100_000

    public init(file: String) throws {
        let size = (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0
        guard size <= Self.maxBytes else { throw ConfigError("\(file): \(size) bytes; a study file is at most 1 MB") }
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            throw ConfigError("\(file): cannot read the study file")
        }
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch { throw ConfigError("\(file): not valid YAML (\(error))") }
        guard case .mapping(let top)? = root else {
            throw ConfigError("\(file): the top level must be a mapping (base, out, seeds, set, grid, cells)")
        }
        self.file = file
        var budget = Self.nodeBudget
        let known: Set = ["base", "out", "seeds", "set", "grid", "cells"]
        for (k, _) in top where !known.contains(k.scalar?.string ?? "") {
            throw ConfigError(
                "\(file): line \(k.mark?.line ?? 0): unknown key '\(k.scalar?.string.prefix(80) ?? "?")' (known: \(known.sorted().joined(separator: ", ")))"
            )
        }
        func entry(_ key: String) -> Node? { top.first { $0.key.scalar?.string == key }?.value }
        guard let b = entry("base")?.scalar?.string, !b.isEmpty else {
            throw ConfigError("\(file): 'base' must name the configuration every run starts from")
        }
        let dir = (file as NSString).deletingLastPathComponent
        base = b.hasPrefix("/") || dir.isEmpty ? b : (dir as NSString).appendingPathComponent(b)
        guard let o = entry("out")?.scalar?.string, !o.isEmpty else {
            throw ConfigError("\(file): 'out' must name the study folder")
        }
        out = o
        seeds = try entry("seeds").map { try Self.seedList($0, file) } ?? [1]
        common = try entry("set").map { try Self.overrides($0, "set", file, &budget) } ?? []
        var all: [Cell] = []
        if let grid = entry("grid") { all += try Self.gridCells(grid, seeds: seeds.count, file, &budget) }
        if let named = entry("cells") { all += try Self.namedCells(named, file, &budget) }
        try Self.check(all, runs: all.count * seeds.count, file)
        cells = all
    }

    /// `seeds`: distinct integers >= 0.
    static func seedList(_ node: Node, _ file: String) throws -> [Int] {
        guard case .sequence(let items) = node, !items.isEmpty else {
            throw ConfigError("\(file): 'seeds' must be a list of seeds, e.g. [1, 2, 3]")
        }
        let seeds = try items.map {
            guard let v = $0.scalar.flatMap({ Int($0.string) }), v >= 0 else {
                throw ConfigError("\(file): line \($0.mark?.line ?? 0): a seed must be an integer >= 0")
            }
            return v
        }
        guard Set(seeds).count == seeds.count else { throw ConfigError("\(file): 'seeds' lists a seed twice") }
        return seeds
    }

    /// `grid`: the product of its keys' values, one cell each, named by its values; its size
    /// checked key by key before the product is built.
    static func gridCells(_ node: Node, seeds: Int, _ file: String, _ budget: inout Int) throws -> [Cell] {
        guard case .mapping(let axes) = node, !axes.isEmpty else {
            throw ConfigError("\(file): 'grid' must map keys to lists of values")
        }
        var product: [[(String, String)]] = [[]]
        for (k, v) in axes {
            guard let key = k.scalar?.string else {
                throw ConfigError("\(file): line \(k.mark?.line ?? 0): a grid key must be a config key")
            }
            guard case .sequence(let values) = v, !values.isEmpty else {
                throw ConfigError("\(file): grid key '\(key)' must have a non-empty list of values")
            }
            guard product.count * values.count * seeds <= maxRuns else {
                throw ConfigError("\(file): the grid has more than \(maxRuns) runs")
            }
            let texts = try values.map { try text($0, key, file, &budget) }
            product = product.flatMap { p in texts.map { p + [(key, $0)] } }
        }
        return product.map { p in
            Cell(
                name: folderName(p.map { "\(short($0.0))-\($0.1)" }.joined(separator: "_")),
                overrides: p.map { "\($0.0)=\($0.1)" })
        }
    }

    /// `cells`: a list of {name, set}.
    static func namedCells(_ node: Node, _ file: String, _ budget: inout Int) throws -> [Cell] {
        guard case .sequence(let items) = node else {
            throw ConfigError("\(file): 'cells' must be a list of {name, set}")
        }
        return try items.map { item in
            guard case .mapping(let m) = item,
                let name = m.first(where: { $0.key.scalar?.string == "name" })?.value.scalar?.string,
                !name.isEmpty
            else {
                throw ConfigError(
                    "\(file): line \(item.mark?.line ?? 0): each cell needs a name and a set of overrides")
            }
            let set =
                try m.first(where: { $0.key.scalar?.string == "set" }).map {
                    try overrides($0.value, "cell \(name)", file, &budget)
                } ?? []
            return Cell(name: name, overrides: set)
        }
    }

    /// At least one cell, names that make folders and differ, at most `maxRuns` runs.
    static func check(_ cells: [Cell], runs: Int, _ file: String) throws {
        guard !cells.isEmpty else { throw ConfigError("\(file): no cells: give a 'grid' or a list of 'cells'") }
        for c in cells {
            guard c.name.count <= 200, c.name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.+".contains($0) }),
                !c.name.hasPrefix(".")
            else {
                throw ConfigError(
                    "\(file): cell name '\(c.name.prefix(80))' must be letters, digits and - _ . + (it names a folder)")
            }
        }
        if let dup = Dictionary(grouping: cells, by: \.name).first(where: { $0.value.count > 1 }) {
            throw ConfigError("\(file): two cells are named '\(dup.key)'")
        }
        guard runs <= maxRuns else { throw ConfigError("\(file): more than \(maxRuns) runs") }
    }

    /// "model.groups" -> "groups", "loss.kind" -> "kind": a grid value's part of a cell's name.
    static func short(_ key: String) -> String { String(key.split(separator: ".").last ?? Substring(key)) }

    /// A grid cell's name as a folder name: characters other than letters, digits and - _ . +
    /// (a path's slashes, spaces) become _, at most 200 of them.
    static func folderName(_ s: String) -> String {
        var name = String(
            s.map { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.+".contains($0)) ? $0 : "_" }.prefix(200))
        if name.hasPrefix(".") { name = "_" + name.dropFirst() }
        return name
    }

    static func spend(_ budget: inout Int, _ file: String) throws {
        budget -= 1
        if budget < 0 { throw ConfigError("\(file): more than \(nodeBudget) YAML values (an alias bomb?)") }
    }

    /// A YAML value as an override's text: scalars as written, lists as [a, b].
    static func text(_ node: Node, _ key: String, _ file: String, _ budget: inout Int) throws -> String {
        try spend(&budget, file)
        switch node {
        case .scalar(let s): return s.string
        case .sequence(let items):
            var parts: [String] = []
            for item in items { parts.append(try text(item, key, file, &budget)) }
            return "[" + parts.joined(separator: ", ") + "]"
        default:
            throw ConfigError("\(file): line \(node.mark?.line ?? 0): '\(key)' takes a value or a list, not a mapping")
        }
    }

    /// A mapping of config keys (dotted, or nested sections) to values, as key=value overrides.
    static func overrides(_ node: Node, _ what: String, _ file: String, _ budget: inout Int) throws -> [String] {
        try spend(&budget, file)
        guard case .mapping(let m) = node else {
            throw ConfigError("\(file): '\(what)' must map config keys to values")
        }
        var out: [String] = []
        for (k, v) in m {
            guard let key = k.scalar?.string else {
                throw ConfigError("\(file): line \(k.mark?.line ?? 0): a key must be a config key")
            }
            if case .mapping = v {
                out += try overrides(v, what, file, &budget).map { key + "." + $0 }
            } else {
                out.append("\(key)=\(try text(v, key, file, &budget))")
            }
        }
        return out
    }

    /// Every run, cell by cell and seed by seed.
    public var runs: [Run] {
        cells.flatMap { c in
            seeds.map { s in
                let dir = (((out as NSString).appendingPathComponent(c.name)) as NSString).appendingPathComponent(
                    "seed-\(s)")
                return Run(
                    cell: c, seed: s, runDir: dir,
                    overrides: common + c.overrides + ["train.seed=\(s)", "train.run_dir=\(dir)"])
            }
        }
    }

    /// Each run's configuration, checked before anything runs: an unknown key or a bad value names
    /// the study file and the cell.
    public func configs() throws -> [Config] {
        try runs.map { r in
            var c = try Config(file: base)
            do {
                for o in r.overrides { try c.apply(override: o) }
                try c.validate()
            } catch let e as ConfigError {
                throw ConfigError("\(file): cell \(r.cell.name), seed \(r.seed): \(e.description)")
            }
            return c
        }
    }
}

/// Where a study's run stands, from its folder.
public enum StudyRunState: Equatable {
    case new, partial, finished
    case failed(String)

    /// Finished: an evaluation of the last epoch is recorded; failed: the runner left the reason
    /// beside the run folder (`failureFile`, removed when the run is tried again).
    public init(runDir: String, epochs: Int) {
        if let last = StudyResults.finalEval(runDir), last.epoch == epochs {
            self = .finished
            return
        }
        if let why = try? String(contentsOfFile: Self.failureFile(runDir), encoding: .utf8) {
            self = .failed(why.trimmingCharacters(in: .whitespacesAndNewlines))
            return
        }
        self = FileManager.default.fileExists(atPath: runDir) ? .partial : .new
    }

    /// Beside the run folder, not in it (the trainer owns the folder): <cell>/seed-1.failed and .log.
    public static func failureFile(_ runDir: String) -> String { runDir + ".failed" }
    public static func logFile(_ runDir: String) -> String { runDir + ".log" }
}

/// A study's table, from its run folders: per cell the mean and standard deviation over finished
/// seeds of rank-1, mAP and mINP (%), images/s (each run's median over its logged windows) and wall
/// time; runs that failed or did not finish are counted and named, never dropped.
public struct StudyResults {
    public struct Seed {
        public var seed: Int, runDir: String, state: StudyRunState
        public var rank1 = 0.0, mAP = 0.0, mINP = 0.0, imagesPerSecond = 0.0, wallSeconds = 0.0
    }
    public struct Row {
        public var cell: Study.Cell, seeds: [Seed]
        public var finished: [Seed] { seeds.filter { $0.state == .finished } }
        public func mean(_ k: KeyPath<Seed, Double>) -> Double? {
            let v = finished.map { $0[keyPath: k] }
            return v.isEmpty ? nil : v.reduce(0, +) / Double(v.count)
        }
        /// Sample standard deviation (0 with one seed).
        public func sd(_ k: KeyPath<Seed, Double>) -> Double? {
            let v = finished.map { $0[keyPath: k] }
            guard let m = mean(k) else { return nil }
            return v.count < 2 ? 0 : (v.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(v.count - 1)).squareRoot()
        }
        /// "ok", "3 of 3 seeds"-style status: finished, or what is missing and why.
        public var status: String {
            let failed = seeds.compactMap { s -> String? in
                if case .failed(let why) = s.state { return "seed \(s.seed): \(why)" }
                return nil
            }
            if !failed.isEmpty { return "failed: " + failed.joined(separator: "; ") }
            return finished.count == seeds.count ? "ok" : "\(finished.count) of \(seeds.count) seeds finished"
        }
    }
    public let study: Study
    public let rows: [Row]

    /// The last "eval" record of a run folder's metrics.jsonl.
    public static func finalEval(_ runDir: String) -> EvalRecord? { MetricsFile.records(runDir: runDir).evals.last }

    public init(_ study: Study, configs: [Config]) {
        self.study = study
        var rows: [Row] = []
        for (i, run) in study.runs.enumerated() {
            var s = Seed(
                seed: run.seed, runDir: run.runDir,
                state: StudyRunState(runDir: run.runDir, epochs: configs[i].schedule.epochs))
            if s.state == .finished, let e = Self.finalEval(run.runDir) {
                s.rank1 = 100 * e.rank1
                s.mAP = 100 * e.mAP
                s.mINP = 100 * e.mINP
                let ips = MetricsFile.records(runDir: run.runDir).train.compactMap(\.imagesPerSecond).sorted()
                s.imagesPerSecond = ips.isEmpty ? 0 : ips[ips.count / 2]
                let info =
                    (try? Data(
                        contentsOf: URL(fileURLWithPath: (run.runDir as NSString).appendingPathComponent("run.json"))))
                    .flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
                s.wallSeconds = info?["wall_s"] as? Double ?? 0
            }
            if let last = rows.last, last.cell == run.cell {
                rows[rows.count - 1].seeds.append(s)
            } else {
                rows.append(Row(cell: run.cell, seeds: [s]))
            }
        }
        self.rows = rows
    }

    static let metrics: [(String, KeyPath<Seed, Double>)] = [
        ("rank1", \.rank1), ("mAP", \.mAP), ("mINP", \.mINP),
        ("images_per_second", \.imagesPerSecond), ("wall_s", \.wallSeconds)
    ]

    public var json: [String: Any] {
        [
            "study": study.file, "base": study.base, "seeds": study.seeds,
            "cells": rows.map { r -> [String: Any] in
                var cell: [String: Any] = [
                    "name": r.cell.name, "overrides": r.cell.overrides, "status": r.status,
                    "finished_seeds": r.finished.count
                ]
                for (name, k) in Self.metrics {
                    if let m = r.mean(k) {
                        cell[name + "_mean"] = m
                        cell[name + "_sd"] = r.sd(k)!
                    }
                }
                cell["runs"] = r.seeds.map { s -> [String: Any] in
                    var d: [String: Any] = ["seed": s.seed, "run_dir": s.runDir, "state": s.stateName]
                    if s.state == .finished { for (name, k) in Self.metrics { d[name] = s[keyPath: k] } }
                    return d
                }
                return cell
            }
        ]
    }

    public var csv: String {
        func q(_ s: String) -> String {
            s.contains(where: { ",\"\n".contains($0) })
                ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
        }
        var lines = [
            "cell,overrides,finished_seeds,seeds,"
                + Self.metrics.map { "\($0.0)_mean,\($0.0)_sd" }.joined(separator: ",") + ",status"
        ]
        for r in rows {
            let values = Self.metrics.map { m in r.mean(m.1).map { String(format: "%.4f,%.4f", $0, r.sd(m.1)!) } ?? ","
            }
            lines.append(
                [q(r.cell.name), q(r.cell.overrides.joined(separator: " ")), "\(r.finished.count)", "\(r.seeds.count)"]
                    .joined(separator: ",")
                    + "," + values.joined(separator: ",") + "," + q(r.status))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// study.html: the table (each seed's report linked), and rank-1 and mAP per cell as a chart.
    public func html(relativeTo dir: String) -> String {
        func esc(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
                .replacingOccurrences(of: ">", with: "&gt;")
                .replacingOccurrences(of: "\"", with: "&quot;")
        }
        func cell(_ r: Row, _ k: KeyPath<Seed, Double>, _ f: String) -> String {
            r.mean(k).map { String(format: f + " ± " + f, $0, r.sd(k)!) } ?? "-"
        }
        var body =
            "<table><tr><th>#</th><th>cell</th><th>overrides</th><th>rank-1 %</th><th>mAP %</th><th>mINP %</th><th>img/s</th><th>wall s</th><th>runs</th><th>status</th></tr>\n"
        for (i, r) in rows.enumerated() {
            let links = r.seeds.map { s -> String in
                let rel = s.runDir.hasPrefix(dir + "/") ? String(s.runDir.dropFirst(dir.count + 1)) : s.runDir
                return s.state == .finished
                    ? "<a href=\"\(esc(rel))/report.html\">\(s.seed)</a>" : "\(s.seed) (\(esc(s.stateName)))"
            }.joined(separator: " ")
            body +=
                "<tr><td>\(i + 1)</td><td>\(esc(r.cell.name))</td><td><code>\(esc(r.cell.overrides.joined(separator: " ")))</code></td>"
                + "<td>\(cell(r, \.rank1, "%.2f"))</td><td>\(cell(r, \.mAP, "%.2f"))</td><td>\(cell(r, \.mINP, "%.2f"))</td>"
                + "<td>\(cell(r, \.imagesPerSecond, "%.1f"))</td><td>\(cell(r, \.wallSeconds, "%.0f"))</td><td>\(links)</td>"
                + "<td class=\"\(r.status == "ok" ? "ok" : "bad")\">\(esc(r.status))</td></tr>\n"
        }
        body += "</table>\n"
        let points: (KeyPath<Seed, Double>) -> [(x: Double, y: Double)] = { k in
            rows.enumerated().compactMap { i, r in r.mean(k).map { (x: Double(i + 1), y: $0) } }
        }
        var chart = SVGChart(
            title: "mean over seeds, per cell (the table's #)", xLabel: "cell", yLabel: "%",
            series: [
                .init("rank-1", points(\.rank1), color: "#1f77b4", dots: true),
                .init("mAP", points(\.mAP), color: "#d62728", dots: true)
            ])
        chart.yRange = 0...100
        return """
            <!doctype html><html><head><meta charset="utf-8"><title>study \(esc(study.file))</title>
            <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
            .ok{color:#2a2}.bad{color:#c22}code{font-size:90%}</style></head><body>
            <h1>Study \(esc(study.file))</h1>
            <p>Base configuration <code>\(esc(study.base))</code>; seeds \(study.seeds.map(String.init).joined(separator: ", "));
            every run: <code>\(esc(study.common.joined(separator: " ")))</code>. Mean ± standard deviation over the seeds that finished.</p>
            \(body)
            \(chart.svg())
            </body></html>
            """
    }
}

extension StudyResults.Seed {
    var stateName: String {
        switch state {
        case .new: return "not started"
        case .partial: return "unfinished"
        case .finished: return "finished"
        case .failed: return "failed"
        }
    }
}
