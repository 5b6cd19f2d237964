// The run report: one self-contained HTML page for a run folder (inline SVG
// charts and CSS, thumbnails as data URIs, no script, nothing fetched), and
// the same charts as SVG files beside it for papers and slides. It reads what
// the run leaves: metrics.jsonl, run.json, config.yaml, checkpoints/ and
// report/ranked.json (the last evaluation's best and worst queries).
import Foundation
import ReIDCore
import ReIDEval
import ReIDImage

public struct ReportError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// The last evaluation's ranked lists, as the trainer or `evaluate` saves them.
public struct RankedListsFile: Codable {
    public var title: String
    public var worst: [RankedList], best: [RankedList]
    public init(title: String, worst: [RankedList], best: [RankedList]) {
        self.title = title
        self.worst = worst
        self.best = best
    }
}

public enum RunReport {
    public static let folder = "report"

    /// Writes `out` (default <run>/report.html) and <dir of out>/report/*.svg; returns the HTML path.
    @discardableResult
    public static func write(runDir: String, out: String? = nil) throws -> String {
        let html = out ?? (runDir as NSString).appendingPathComponent("report.html")
        let run = try RunRecords(runDir: runDir)
        let charts = run.charts()
        let svgDir = ((html as NSString).deletingLastPathComponent as NSString).appendingPathComponent(folder)
        try createFolder(svgDir, what: "the report's chart folder")
        for (name, chart) in charts {
            try writeAtomically(
                Data(chart.svg(standalone: true).utf8), to: (svgDir as NSString).appendingPathComponent(name + ".svg"))
        }
        try writeAtomically(Data(page(run, charts).utf8), to: html)
        return html
    }

    static func esc(_ s: String) -> String { SVGChart.esc(s) }

    static func page(_ run: RunRecords, _ charts: [(String, SVGChart)]) -> String {
        let title = run.kind == "evaluation" ? "reid-dist evaluation" : "reid-dist run " + run.name
        var h = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/><title>\(esc(title))</title><style>"
        h += """
            body{font-family:sans-serif;margin:20px;color:#222;max-width:1240px}h1{font-size:20px}h2{font-size:16px;margin-top:28px;border-bottom:1px solid #ddd}
            .charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #ddd}table{border-collapse:collapse;font-size:13px}
            td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}pre{background:#f6f6f6;padding:8px;font-size:12px;max-height:320px;overflow:auto}
            .row{display:flex;align-items:flex-start;gap:3px;margin:6px 0}.q{margin-right:14px}.cell{text-align:center;font-size:10px}
            .cell img,.cell .missing{display:block;width:48px;height:96px;border:3px solid #000}.missing{background:#ccc}
            .correct img{border-color:#1a9e1a}.wrong img{border-color:#d62020}.junk img{border-color:#999;opacity:.5}.same-camera img{border-color:#e69500;border-style:dashed}
            .note{color:#666;font-size:12px}
            """
        h += "</style></head><body>"
        if run.kind == "evaluation" { return h + evaluationBody(run, charts) }
        h += "<h1>\(esc("reid-dist run " + run.name))</h1><p class=\"note\">\(esc(run.summaryLine))</p>"
        h += "<h2>Training</h2><div class=\"charts\">"
        for (name, c) in charts where !name.hasPrefix("eval") && name != "cmc" { h += c.svg() }
        h += "</div><h2>Evaluation</h2>"
        if run.evals.isEmpty { h += "<p class=\"note\">No evaluation yet.</p>" }
        h += "<div class=\"charts\">"
        for (name, c) in charts where name.hasPrefix("eval") || name == "cmc" { h += c.svg() }
        h += "</div>"
        if let last = run.evals.last {
            h += "<table><tr><th>epoch</th><th>rank-1</th><th>rank-5</th><th>rank-10</th><th>mAP</th><th>mINP</th></tr>"
            for e in run.evals {
                h +=
                    "<tr\(e.globalStep == last.globalStep ? " style=\"font-weight:bold\"" : "")><td>\(e.epoch.map(String.init) ?? "?")</td>"
                for v in [e.rank1, e.rank5, e.rank10, e.mAP, e.mINP] { h += String(format: "<td>%.2f%%</td>", v * 100) }
                h += "</tr>"
            }
            h += "</table>"
        }
        h += rankedLists(run)
        h += "<h2>The run</h2><table>"
        for (k, v) in run.info { h += "<tr><th>\(esc(k))</th><td>\(esc(v))</td></tr>" }
        h += "</table><h3>Checkpoints</h3>"
        h +=
            run.checkpoints.isEmpty
            ? "<p class=\"note\">none yet</p>"
            : "<table><tr><th>checkpoint</th><th>epoch</th><th>mAP</th><th></th></tr>"
                + run.checkpoints.map {
                    "<tr><td>\(esc($0.name))</td><td>\($0.epoch)</td><td>\($0.mAP.map { String(format: "%.2f%%", $0 * 100) } ?? "")</td><td>\($0.name == run.best ? "best" : "")\($0.name == run.latest ? " latest" : "")</td></tr>"
                }.joined() + "</table>"
        h += "<h3>Configuration</h3><pre>\(esc(run.config))</pre>"
        h +=
            "<p class=\"note\">Written by reid-dist report from \(esc(run.runDir)); the charts are also in report/*.svg.</p></body></html>\n"
        return h
    }

    /// The page of one evaluation (`evaluate --report`): what was evaluated on what, the metrics,
    /// the CMC curve and the ranked lists; nothing about training, which did not happen here.
    static func evaluationBody(_ run: RunRecords, _ charts: [(String, SVGChart)]) -> String {
        var h = "<h1>reid-dist evaluation</h1>"
        h += "<table>"
        for (k, v) in run.info { h += "<tr><th>\(esc(k))</th><td>\(esc(v))</td></tr>" }
        h += "</table>"
        if let e = run.evals.last {
            h +=
                "<h2>Metrics</h2><table><tr><th>rank-1</th><th>rank-5</th><th>rank-10</th><th>rank-20</th><th>mAP</th><th>mINP</th></tr><tr>"
            let cmc = e.cmc ?? [], r20 = cmc.count >= 20 ? cmc[19] : Double.nan
            for v in [e.rank1, e.rank5, e.rank10, r20, e.mAP, e.mINP] {
                h += v.isNaN ? "<td>-</td>" : String(format: "<td>%.2f%%</td>", v * 100)
            }
            h += "</tr></table>"
        }
        h += "<div class=\"charts\">"
        for (name, c) in charts where name == "cmc" { h += c.svg() }
        h += "</div>"
        h += rankedLists(run)
        h +=
            "<p class=\"note\">Written by reid-dist evaluate; the CMC chart is also in report/cmc.svg.</p></body></html>\n"
        return h
    }

    /// The best and worst queries' ranked lists, when the folder has them.
    static func rankedLists(_ run: RunRecords) -> String {
        var h = ""
        if let ranked = run.ranked {
            h +=
                "<h2>Ranked lists: \(esc(ranked.title))</h2><p class=\"note\">Each query (black) beside its 10 nearest gallery images: "
            h +=
                "green the same person, red another, orange dashed the same person seen by the same camera (removed by the protocol), faded grey junk (never scored).</p>"
            for (label, lists) in [("Worst queries by AP", ranked.worst), ("Best queries by AP", ranked.best)]
            where !lists.isEmpty {
                h += "<h3>\(label)</h3>"
                for l in lists {
                    h +=
                        "<div class=\"row\"><div class=\"cell q\">\(thumb(l.query.path, run))<span>AP \(String(format: "%.3f", l.ap))<br/>id \(l.query.pid) c\(l.query.camera)</span></div>"
                    for e in l.top {
                        h +=
                            "<div class=\"cell \(e.mark?.rawValue ?? "wrong")\">\(thumb(e.path, run))<span>\(String(format: "%.3f", e.distance))</span></div>"
                    }
                    h += "</div>"
                }
            }
        }
        return h
    }

    /// An image as a small inline JPEG (48x96), or a grey box when it cannot be read.
    static func thumb(_ path: String, _ run: RunRecords) -> String {
        if let cached = run.thumbs[path] { return cached }
        var html = "<span class=\"missing\" title=\"\(esc(path)) (not readable)\"></span>"
        if let img = try? RGBImage(file: path), let jpeg = try? img.resized(width: 48, height: 96).jpegData(quality: 80)
        {
            html =
                "<img alt=\"\(esc((path as NSString).lastPathComponent))\" src=\"data:image/jpeg;base64,\(jpeg.base64EncodedString())\"/>"
        }
        run.thumbs[path] = html
        return html
    }
}
