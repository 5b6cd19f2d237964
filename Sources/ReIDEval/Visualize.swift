// Ranked-list pictures (as torchreid's visualize_ranked_results): for each of
// the first queries, the query image and its top gallery images in one row,
// each framed green when it is the same person and red when not. Gallery
// images that the protocol removes (same person, same camera; junk) are
// skipped, so the row shows exactly what the metrics scored.
import Foundation
import ReIDCore
import ReIDImage

public struct RankedListPictures {
    public var topK = 10, cellWidth = 64, cellHeight = 128, border = 4, gap = 12, quality = 90
    public var imageRoot: String?
    public init() {}

    func resolve(_ p: String) -> String {
        if p.hasPrefix("/") { return p }
        if let root = imageRoot { return (root as NSString).appendingPathComponent(p) }
        return p
    }

    func cell(_ path: String, frame: (UInt8, UInt8, UInt8)) throws -> RGBImage {
        let img = try RGBImage(file: resolve(path)).resized(width: cellWidth, height: cellHeight)
        var framed = RGBImage(width: cellWidth + 2 * border, height: cellHeight + 2 * border, fill: frame)
        framed.paste(img, x: border, y: border)
        return framed
    }

    /// Writes `<dir>/<index>_<query file name>.jpg` for queries 0..<count using the
    /// distance rows `dist` (count x G). Returns the files written.
    public func write(
        query q: FeatureSet, gallery g: FeatureSet, distances dist: UnsafePointer<Float>,
        count: Int, to dir: String
    ) throws -> [String] {
        guard !q.paths.isEmpty, !g.paths.isEmpty else {
            throw RankingError(
                "pictures need image paths: \(q.paths.isEmpty ? q.path : g.path) has no __metadata__ 'paths'")
        }
        try createFolder(dir, what: "the pictures folder")
        let w = cellWidth + 2 * border, h = cellHeight + 2 * border
        var written: [String] = []
        for qi in 0..<min(count, q.count) {
            let row = dist + qi * g.count
            let order = (0..<g.count).filter { j in
                g.pids[j] != -1 && !(g.pids[j] == q.pids[qi] && g.camids[j] == q.camids[qi])
            }.sorted { row[$0] < row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(topK)
            var canvas = RGBImage(width: w * (topK + 1) + gap, height: h, fill: (255, 255, 255))
            canvas.paste(try cell(q.paths[qi], frame: (0, 0, 0)), x: 0, y: 0)
            for (r, j) in order.enumerated() {
                let ok = g.pids[j] == q.pids[qi]
                canvas.paste(try cell(g.paths[j], frame: ok ? (0, 200, 0) : (220, 0, 0)), x: w + gap + r * w, y: 0)
            }
            let name = ((q.paths[qi] as NSString).lastPathComponent as NSString).deletingPathExtension
            let out = (dir as NSString).appendingPathComponent(String(format: "%04d_%@.jpg", qi, name))
            try writeAtomically(try canvas.jpegData(quality: quality), to: out)
            written.append(out)
        }
        return written
    }

    /// Search results: each query beside its hits in order, framed grey (no identities to
    /// judge by). Returns the files written.
    public func writeSearch(query q: FeatureSet, gallery g: FeatureSet, hits: [[Int]], to dir: String) throws
        -> [String]
    {
        guard !q.paths.isEmpty, !g.paths.isEmpty else {
            throw RankingError(
                "pictures need image paths: \(q.paths.isEmpty ? q.path : g.path) has no __metadata__ 'paths'")
        }
        try createFolder(dir, what: "the pictures folder")
        let w = cellWidth + 2 * border, h = cellHeight + 2 * border
        var written: [String] = []
        for (qi, row) in hits.enumerated() {
            var canvas = RGBImage(width: w * (topK + 1) + gap, height: h, fill: (255, 255, 255))
            canvas.paste(try cell(q.paths[qi], frame: (0, 0, 0)), x: 0, y: 0)
            for (r, j) in row.prefix(topK).enumerated() {
                canvas.paste(try cell(g.paths[j], frame: (150, 150, 150)), x: w + gap + r * w, y: 0)
            }
            let name = ((q.paths[qi] as NSString).lastPathComponent as NSString).deletingPathExtension
            let out = (dir as NSString).appendingPathComponent(String(format: "%04d_%@.jpg", qi, name))
            try writeAtomically(try canvas.jpegData(quality: quality), to: out)
            written.append(out)
        }
        return written
    }
}
