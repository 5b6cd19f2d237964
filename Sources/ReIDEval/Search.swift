// Top-k search: for each query, the k nearest gallery entries, computed in
// blocks of queries so that memory stays at (block x gallery) floats whatever
// the sizes (MSMT17's 11,659 x 82,161 included). No protocol filtering: for
// unlabelled images there is no identity or camera to filter by.
import Foundation
import ReIDCore

public struct SearchHit: Equatable {
    public let index: Int
    public let distance: Float
}

/// The `k` nearest gallery entries of every query (ties: lower gallery index first).
/// `rows(q0, n, out)` may supply the distance rows instead (re-ranked ones, say).
public func searchTopK(
    query q: FeatureSet, gallery g: FeatureSet, metric: Metric, k: Int, blockRows: Int = 512, threads: Int = 1,
    rows supplied: ((Int, Int, UnsafeMutablePointer<Float>) -> Void)? = nil
) throws -> [[SearchHit]] {
    try checkComparable(q, g)
    let k = Swift.max(1, Swift.min(k, g.count))
    let qn = rowNormsSquared(q.features, threads: threads), gn = rowNormsSquared(g.features, threads: threads)
    if metric == .cosine && supplied == nil {
        try checkNonZero(qn, q, "query")
        try checkNonZero(gn, g, "gallery")
    }
    let per = Swift.max(1, Swift.min(blockRows, q.count))
    let block = Tensor([per, g.count], zero: false)
    var out = [[SearchHit]](repeating: [], count: q.count)
    var q0 = 0
    while q0 < q.count {
        let n = Swift.min(per, q.count - q0)
        if let supplied {
            supplied(q0, n, block.ptr)
        } else {
            distanceBlock(q, g, q0: q0, rows: n, metric: metric, qn: qn, gn: gn, out: block.ptr, threads: threads)
        }
        let gc = g.count, bp = block.ptr
        out.withUnsafeMutableBufferPointer { o in
            let op = o.baseAddress!
            parallelFor(n, threads: threads) { r in
                // Keep the k best in a sorted array: k is small next to the gallery.
                let row = bp + r * gc
                var best: [SearchHit] = []
                best.reserveCapacity(k + 1)
                for j in 0..<gc {
                    let d = row[j]
                    if best.count == k, let last = best.last, !(d < last.distance) { continue }
                    var lo = 0, hi = best.count
                    while lo < hi {
                        let mid = (lo + hi) / 2
                        if best[mid].distance <= d { lo = mid + 1 } else { hi = mid }
                    }
                    best.insert(SearchHit(index: j, distance: d), at: lo)
                    if best.count > k { best.removeLast() }
                }
                op[q0 + r] = best
            }
        }
        q0 += n
    }
    return out
}
