// Query-gallery ranking in blocks of queries: each block's distances come
// from one sgemm against the whole gallery, are scored, and are dropped, so
// memory stays at (block x gallery) floats whatever the query count.
//   cosine:    1 - q.g / (|q| |g|)       (features need not be normalised)
//   euclidean: |q|^2 + |g|^2 - 2 q.g     (squared, as torchreid and fast-reid)
import Foundation
import ReIDCore

public enum Metric: String, CaseIterable, Codable { case cosine, euclidean }

public struct RankingError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// Checks that two sets can be compared; the error names both files.
public func checkComparable(_ q: FeatureSet, _ g: FeatureSet) throws {
    guard q.dim == g.dim else {
        throw RankingError("\(q.path) has \(q.dim)-dimensional features but \(g.path) has \(g.dim)")
    }
}

/// Squared L2 norm of each row of x (n, d).
func rowNormsSquared(_ x: Tensor, threads: Int) -> [Float] {
    let n = x.shape[0], d = x.shape[1]
    var out = [Float](repeating: 0, count: n)
    out.withUnsafeMutableBufferPointer { o in
        let op = o.baseAddress!
        parallelFor(n, threads: threads, minChunk: 256) { i in op[i] = vdot(x.ptr + i * d, x.ptr + i * d, d) }
    }
    return out
}

/// Distances of rows a0..<a0+rows of `a` to every row of `b`, into `out`
/// (rows x b.count, leading dimension `ldc`).
func distanceBlock(
    _ a: FeatureSet, _ b: FeatureSet, q0 a0: Int, rows: Int, metric: Metric,
    qn an: [Float], gn bn: [Float], out: UnsafeMutablePointer<Float>, ldc: Int? = nil, threads: Int
) {
    let d = a.dim, bc = b.count, ld = ldc ?? bc
    sgemm(transB: true, m: rows, n: bc, k: d, alpha: 1, a: a.features.ptr + a0 * d, b: b.features.ptr, c: out, ldc: ld)
    switch metric {
    case .cosine:
        let binv = bn.map { 1 / Swift.max($0.squareRoot(), 1e-12) }
        binv.withUnsafeBufferPointer { bi in
            let bip = bi.baseAddress!
            parallelFor(rows, threads: threads) { r in
                let row = out + r * ld, ix = 1 / Swift.max(an[a0 + r].squareRoot(), 1e-12)
                for j in 0..<bc { row[j] = 1 - row[j] * ix * bip[j] }
            }
        }
    case .euclidean:
        bn.withUnsafeBufferPointer { bb in
            let bp = bb.baseAddress!
            parallelFor(rows, threads: threads) { r in
                let row = out + r * ld, x = an[a0 + r]
                for j in 0..<bc { row[j] = x + bp[j] - 2 * row[j] }
            }
        }
    }
}

/// Cosine distance is undefined for an all-zero feature: every gallery image would tie and
/// the ranking would silently fall back to file order. Such rows (a broken model, a
/// damaged feature file) are an error naming the set and the first row; NaN rows as well.
func checkNonZero(_ norms: [Float], _ set: FeatureSet, _ what: String) throws {
    guard let i = norms.firstIndex(where: { !($0 > 0) || !$0.isFinite }) else { return }
    let n = norms.filter { !($0 > 0) || !$0.isFinite }.count
    let name = i < set.paths.count ? " (\(set.paths[i]))" : ""
    throw RankingError(
        "\(set.path == "<memory>" ? what : set.path): \(n) \(what) feature(s) are all zero or not finite, first row \(i)\(name); cosine distances are undefined for them"
    )
}

/// The full distance matrix (Q x G); for re-ranking and tests. Memory Q*G floats.
public func distanceMatrix(_ q: FeatureSet, _ g: FeatureSet, metric: Metric, threads: Int = 1) -> Tensor {
    let out = Tensor([q.count, g.count], zero: false)
    distanceBlock(
        q, g, q0: 0, rows: q.count, metric: metric, qn: rowNormsSquared(q.features, threads: threads),
        gn: rowNormsSquared(g.features, threads: threads), out: out.ptr, threads: threads)
    return out
}

/// Ranks every query against the gallery in blocks of `blockRows` queries.
/// The result is identical for any block size.
public func rank(
    query q: FeatureSet, gallery g: FeatureSet, metric: Metric = .cosine,
    maxRank: Int = 50, blockRows: Int = 512, threads: Int = 1
) throws -> RankingResult {
    try checkComparable(q, g)
    let qn = rowNormsSquared(q.features, threads: threads), gn = rowNormsSquared(g.features, threads: threads)
    if metric == .cosine {
        try checkNonZero(qn, q, "query")
        try checkNonZero(gn, g, "gallery")
    }
    // At most the gallery's size, as torchreid (a CMC past it is flat, and a huge --max-rank would only take memory).
    var acc = ProtocolAccumulator(
        queries: q.count, maxRank: Swift.max(1, Swift.min(maxRank, g.count)), threads: threads)
    let rowsPerBlock = Swift.max(1, Swift.min(blockRows, q.count))
    let block = Tensor([rowsPerBlock, g.count], zero: false)
    var q0 = 0
    var tDist = 0.0, tScore = 0.0
    while q0 < q.count {
        let rows = Swift.min(rowsPerBlock, q.count - q0)
        let t0 = Profile.now()
        distanceBlock(q, g, q0: q0, rows: rows, metric: metric, qn: qn, gn: gn, out: block.ptr, threads: threads)
        let t1 = Profile.now()
        acc.add(
            rows: rows, firstQuery: q0, distances: block.ptr,
            query: (q.pids, q.camids), gallery: (g.pids, g.camids))
        tDist += t1 - t0
        tScore += Profile.now() - t1
        q0 += rows
    }
    if ProcessInfo.processInfo.environment["REID_PROFILE"] != nil {
        print(String(format: "rank: distances %.2f s, scoring %.2f s", tDist, tScore))
    }
    return acc.result
}
