// The Market-1501 / DukeMTMC-reID evaluation protocol, as torchreid's
// eval_market1501 and fast-reid compute it:
//   per query, the gallery ranked by ascending distance (ties: lower gallery
//   index first, as a stable sort); gallery images of the same person seen by
//   the same camera are removed; gallery id -1 (junk) never takes part; id 0
//   (distractors) stays and counts as wrong for every query whose id is not 0.
//   A query with no correct image left is not counted.
//   CMC@k: share of valid queries with a correct image in the first k.
//   AP: mean over the correct images of precision at each one's position.
//   mINP: mean over queries of (number correct) / (position of the last correct).
// Only the positions of the correct images are needed: one pass over the
// gallery per query, no sort of the row.
import ReIDCore

public struct RankingResult: Codable, Equatable {
    public var cmc: [Double] // cmc[k-1] = CMC@k, k = 1...maxRank
    public var mAP: Double, mINP: Double
    public var validQueries: Int, totalQueries: Int
    /// Each query's AP, in query order; nil for a query with no correct image left.
    public var queryAP: [Double?] = []
    public func rank(_ k: Int) -> Double { k <= cmc.count ? cmc[k - 1] : (cmc.last ?? 0) }

    /// Query indices by AP: the `n` worst (lowest AP first) or best (highest first), or the
    /// first `n` valid ones in file order. Ties keep file order.
    public func queries(_ order: QueryOrder, _ n: Int) -> [Int] {
        let valid = queryAP.indices.filter { queryAP[$0] != nil }
        switch order {
        case .file: return Array(valid.prefix(n))
        case .worst: return Array(valid.sorted { (queryAP[$0]!, $0) < (queryAP[$1]!, $1) }.prefix(n))
        case .best:
            return Array(
                valid.sorted { queryAP[$0]! > queryAP[$1]! || (queryAP[$0]! == queryAP[$1]! && $0 < $1) }.prefix(n))
        }
    }
}

/// Which queries to show: lowest AP first, highest first, or file order.
public enum QueryOrder: String, CaseIterable, Codable { case worst, best, file }

/// Per-query outcome: 1-based positions of the correct images among the kept gallery.
struct QueryOutcome {
    var firstRank = 0 // 0: no correct image (invalid query)
    var ap = 0.0, inp = 0.0
}

/// Positions (1-based, ascending) of the correct gallery images for one query.
/// `d` is the query's distance row over the gallery.
func queryOutcome(
    _ d: UnsafePointer<Float>, qpid: Int64, qcam: Int64,
    gpids: UnsafePointer<Int64>, gcams: UnsafePointer<Int64>, count g: Int
) -> QueryOutcome {
    // Correct images, sorted by (distance, index).
    var pos: [(Float, Int)] = []
    for j in 0..<g where gpids[j] == qpid && gcams[j] != qcam && gpids[j] != -1 {
        pos.append((d[j], j))
    }
    if pos.isEmpty { return QueryOutcome() }
    pos.sort { $0.0 < $1.0 || ($0.0 == $1.0 && $0.1 < $1.1) }
    let p = pos.count
    let last = pos[p - 1]
    // before[i]: kept wrong images ranked ahead of correct image i, by bucket.
    var hist = [Int](repeating: 0, count: p + 1)
    for j in 0..<g {
        let dj = d[j]
        if dj > last.0 { continue }
        let pj = gpids[j]
        if pj == -1 || pj == qpid { continue } // junk; correct or same-camera same-id (removed)
        if dj == last.0 && j > last.1 { continue }
        // Number of correct images whose (distance, index) is below (dj, j).
        var lo = 0, hi = p
        while lo < hi {
            let mid = (lo + hi) >> 1
            let m = pos[mid]
            if m.0 < dj || (m.0 == dj && m.1 < j) { lo = mid + 1 } else { hi = mid }
        }
        hist[lo] += 1
    }
    var out = QueryOutcome()
    var wrongAhead = 0, apSum = 0.0
    for i in 0..<p {
        wrongAhead += hist[i]
        let rank = i + 1 + wrongAhead
        if i == 0 { out.firstRank = rank }
        apSum += Double(i + 1) / Double(rank)
        if i == p - 1 { out.inp = Double(p) / Double(rank) }
    }
    out.ap = apSum / Double(p)
    return out
}

/// Accumulates query outcomes in query order, so the result never depends on
/// how queries were split into blocks or threads.
public struct ProtocolAccumulator {
    public let maxRank: Int
    var outcomes: [QueryOutcome]
    /// Worker threads scoring the queries of a block.
    let threads: Int
    public init(queries: Int, maxRank: Int, threads: Int = 1) {
        self.maxRank = maxRank
        self.threads = threads
        outcomes = [QueryOutcome](repeating: QueryOutcome(), count: queries)
    }

    /// Scores queries q0..<q0+rows from their distance rows (rows x G, row-major).
    public mutating func add(
        rows: Int, firstQuery q0: Int, distances: UnsafePointer<Float>,
        query: (pids: [Int64], camids: [Int64]), gallery: (pids: [Int64], camids: [Int64])
    ) {
        let g = gallery.pids.count
        outcomes.withUnsafeMutableBufferPointer { out in
            gallery.pids.withUnsafeBufferPointer { gp in
                gallery.camids.withUnsafeBufferPointer { gc in
                    let o = out.baseAddress!, gpp = gp.baseAddress!, gcp = gc.baseAddress!
                    parallelFor(rows, threads: threads) { r in
                        let q = q0 + r
                        o[q] = queryOutcome(
                            distances + r * g, qpid: query.pids[q], qcam: query.camids[q],
                            gpids: gpp, gcams: gcp, count: g)
                    }
                }
            }
        }
    }

    public var result: RankingResult {
        var cmc = [Double](repeating: 0, count: maxRank)
        var ap = 0.0, inp = 0.0, valid = 0
        for o in outcomes where o.firstRank > 0 {
            valid += 1
            ap += o.ap
            inp += o.inp
            if o.firstRank <= maxRank { for k in (o.firstRank - 1)..<maxRank { cmc[k] += 1 } }
        }
        let v = Double(Swift.max(valid, 1))
        return RankingResult(
            cmc: cmc.map { $0 / v }, mAP: ap / v, mINP: inp / v,
            validQueries: valid, totalQueries: outcomes.count,
            queryAP: outcomes.map { $0.firstRank > 0 ? $0.ap : nil })
    }
}

/// The protocol on a full distance matrix (Q x G, row-major).
public func evaluateDistances(
    _ dist: [Float], queryPids: [Int64], queryCams: [Int64],
    galleryPids: [Int64], galleryCams: [Int64], maxRank: Int = 50, threads: Int = 1
) -> RankingResult {
    precondition(dist.count == queryPids.count * galleryPids.count)
    var acc = ProtocolAccumulator(
        queries: queryPids.count, maxRank: Swift.max(1, Swift.min(maxRank, galleryPids.count)), threads: threads)
    dist.withUnsafeBufferPointer {
        acc.add(
            rows: queryPids.count, firstQuery: 0, distances: $0.baseAddress!,
            query: (queryPids, queryCams), gallery: (galleryPids, galleryCams))
    }
    return acc.result
}
