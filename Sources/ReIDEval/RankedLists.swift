// Ranked lists as data, for the run report: a query and its top gallery
// images with what each is to the protocol (the same person, another person,
// junk, or the same person seen by the same camera, which the protocol
// removes). Unlike the pictures (Visualize.swift), junk and same-camera
// images are shown, marked, where they fall in the distance order.
import Foundation
import ReIDCore

public struct RankedList: Codable, Equatable {
    public enum Mark: String, Codable {
        case correct, wrong, junk
        case sameCamera = "same-camera"
    }
    public struct Entry: Codable, Equatable {
        public var path: String, pid: Int64, camera: Int64, distance: Float
        public var mark: Mark?
    }
    public var query: Entry
    public var ap: Double
    public var top: [Entry]
}

/// The top `k` gallery images of each query in `indices`.
public func rankedLists(
    query q: FeatureSet, gallery g: FeatureSet, metric: Metric, result: RankingResult,
    indices: [Int], k: Int = 10
) -> [RankedList] {
    guard !indices.isEmpty, !q.paths.isEmpty, !g.paths.isEmpty else { return [] }
    let rows = Tensor([indices.count, q.dim], zero: false)
    for (r, i) in indices.enumerated() { (rows.ptr + r * q.dim).update(from: q.features.ptr + i * q.dim, count: q.dim) }
    let head = FeatureSet(features: rows, pids: indices.map { q.pids[$0] }, camids: indices.map { q.camids[$0] })
    let dist = distanceMatrix(head, g, metric: metric)
    return indices.enumerated().map { r, i in
        let row = dist.ptr + r * g.count
        let order = (0..<g.count).sorted { row[$0] < row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(k)
        let top = order.map { j -> RankedList.Entry in
            let mark: RankedList.Mark =
                g.pids[j] == -1
                ? .junk
                : g.pids[j] == q.pids[i] ? (g.camids[j] == q.camids[i] ? .sameCamera : .correct) : .wrong
            return .init(path: g.paths[j], pid: g.pids[j], camera: g.camids[j], distance: row[j], mark: mark)
        }
        return RankedList(
            query: .init(path: q.paths[i], pid: q.pids[i], camera: q.camids[i], distance: 0, mark: nil),
            ap: result.queryAP[i] ?? 0, top: Array(top))
    }
}
