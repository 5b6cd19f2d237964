// Line charts as SVG text: one or more series over a shared x axis, "nice"
// ticks, optional vertical markers (epoch boundaries), a legend. Every data
// point is a vertex of the series' polyline, and the polyline carries the
// series name and point count (data-series, data-points) so tests can check
// that nothing was dropped or thinned.
import Foundation

public struct SVGChart {
    public struct Series {
        public var name: String, points: [(x: Double, y: Double)], color: String
        public var dots = false
        public init(_ name: String, _ points: [(x: Double, y: Double)], color: String, dots: Bool = false) {
            self.name = name
            self.points = points
            self.color = color
            self.dots = dots
        }
    }
    public var title: String, xLabel: String, yLabel: String
    public var series: [Series]
    public var markers: [Double] = [] // vertical lines at these x (epoch boundaries)
    public var yRange: ClosedRange<Double>? // fixed range (e.g. 0...100 for percentages)
    public var width = 560.0, height = 240.0
    public init(title: String, xLabel: String, yLabel: String, series: [Series]) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.series = series
    }

    static func esc(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    /// About `n` round tick values covering lo...hi.
    static func ticks(_ lo: Double, _ hi: Double, _ n: Int = 5) -> [Double] {
        guard hi > lo, lo.isFinite, hi.isFinite else { return [lo] }
        let raw = (hi - lo) / Double(n), mag = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 2.5, 5, 10].map { $0 * mag }.first { $0 >= raw } ?? raw
        var t: [Double] = [], v = (lo / step).rounded(.up) * step
        while v <= hi + step * 1e-9 {
            t.append(v)
            v += step
        }
        return t
    }

    static func label(_ v: Double) -> String {
        let a = abs(v)
        if a < 1e-12 { return "0" }
        if a != 0 && (a < 1e-3 || a >= 1e5) { return String(format: "%.1e", v) }
        if a >= 100 || v == v.rounded() { return String(format: "%.0f", v) }
        return a >= 10 ? String(format: "%.1f", v) : String(format: "%.3g", v)
    }

    /// The plot area inside the margins and the data ranges it maps.
    struct Frame {
        static let left = 58.0, right = 14.0, top = 28.0, bottom = 40.0
        let pw: Double, ph: Double, x0: Double, x1: Double, y0: Double, y1: Double
        var left: Double { Self.left }
        var top: Double { Self.top }
        func px(_ x: Double) -> Double { left + (x - x0) / (x1 - x0) * pw }
        func py(_ y: Double) -> Double { top + (1 - (y - y0) / (y1 - y0)) * ph }
    }

    /// The chart; `standalone` adds the XML namespace a .svg file needs (inline SVG in HTML does not).
    public func svg(standalone: Bool = false) -> String {
        let pw = width - Frame.left - Frame.right, ph = height - Frame.top - Frame.bottom
        let all = series.flatMap(\.points).filter { $0.x.isFinite && $0.y.isFinite }
        var out =
            "<svg \(standalone ? "xmlns=\"http://www.w3.org/2000/svg\" " : "")width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" class=\"chart\" font-family=\"sans-serif\" font-size=\"11\">"
        out += "<rect x=\"0\" y=\"0\" width=\"\(Int(width))\" height=\"\(Int(height))\" fill=\"#fff\"/>"
        out += "<text x=\"\(Int(Frame.left))\" y=\"16\" font-size=\"13\" font-weight=\"bold\">\(Self.esc(title))</text>"
        guard !all.isEmpty else {
            return out
                + "<text x=\"\(Int(Frame.left + pw / 2))\" y=\"\(Int(Frame.top + ph / 2))\" text-anchor=\"middle\" fill=\"#888\">no data yet</text></svg>"
        }
        let f = frame(all, pw: pw, ph: ph)
        return out + grid(f) + axes(f) + lines(f) + "</svg>"
    }

    /// The ranges the points span (a flat range widened; without `yRange`, 5% of room above and below).
    func frame(_ all: [(x: Double, y: Double)], pw: Double, ph: Double) -> Frame {
        var x0 = all.map(\.x).min()!, x1 = all.map(\.x).max()!
        if x1 == x0 {
            x0 -= 1
            x1 += 1
        }
        var y0 = yRange?.lowerBound ?? all.map(\.y).min()!, y1 = yRange?.upperBound ?? all.map(\.y).max()!
        if y1 == y0 {
            y0 -= abs(y0) * 0.1 + 1e-9
            y1 += abs(y1) * 0.1 + 1e-9
        }
        if yRange == nil {
            let pad = (y1 - y0) * 0.05
            y0 -= pad
            y1 += pad
        }
        return Frame(pw: pw, ph: ph, x0: x0, x1: x1, y0: y0, y1: y1)
    }

    /// Horizontal grid lines at the y ticks, dashed lines at the markers, the plot's frame.
    func grid(_ f: Frame) -> String {
        var out = "<g stroke=\"#e5e5e5\">"
        for t in Self.ticks(f.y0, f.y1) {
            out += String(
                format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", f.left, f.py(t), f.left + f.pw,
                f.py(t))
        }
        out += "</g><g stroke=\"#bbb\" stroke-dasharray=\"3,3\">"
        for m in markers where m > f.x0 && m < f.x1 {
            out += String(
                format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", f.px(m), f.top, f.px(m),
                f.top + f.ph)
        }
        out += "</g>"
        out += String(
            format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#888\"/>",
            f.left, f.top, f.pw, f.ph)
        return out
    }

    /// The ticks' labels on both axes and the axes' titles.
    func axes(_ f: Frame) -> String {
        var out = ""
        for t in Self.ticks(f.y0, f.y1) {
            out += String(
                format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#444\">%@</text>", f.left - 4,
                f.py(t) + 4, Self.label(t))
        }
        for t in Self.ticks(f.x0, f.x1, 6) {
            out += String(
                format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#444\">%@</text>", f.px(t),
                f.top + f.ph + 14, Self.label(t))
        }
        out += String(
            format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#444\">%@</text>", f.left + f.pw / 2,
            height - 6, Self.esc(xLabel))
        out += String(
            format:
                "<text x=\"12\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#444\" transform=\"rotate(-90 12 %.1f)\">%@</text>",
            f.top + f.ph / 2, f.top + f.ph / 2, Self.esc(yLabel))
        return out
    }

    /// Each series as a polyline (and dots), with a legend when there are several.
    func lines(_ f: Frame) -> String {
        var out = "", legendX = f.left + 8
        for s in series {
            let pts = s.points.filter { $0.x.isFinite && $0.y.isFinite }
            let coords = pts.map { String(format: "%.1f,%.1f", f.px($0.x), f.py($0.y)) }.joined(separator: " ")
            out +=
                "<polyline data-series=\"\(Self.esc(s.name))\" data-points=\"\(pts.count)\" points=\"\(coords)\" fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"1.5\"/>"
            if s.dots {
                for p in pts {
                    out += String(
                        format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%@\"/>", f.px(p.x), f.py(p.y),
                        s.color)
                }
            }
            if series.count > 1 {
                out += String(
                    format:
                        "<rect x=\"%.1f\" y=\"%.1f\" width=\"10\" height=\"3\" fill=\"%@\"/><text x=\"%.1f\" y=\"%.1f\">%@</text>",
                    legendX, f.top + 8, s.color, legendX + 14, f.top + 12, Self.esc(s.name))
                legendX += 24 + 6.2 * Double(s.name.count)
            }
        }
        return out
    }
}
