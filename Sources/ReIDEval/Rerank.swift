// k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification
// with k-reciprocal Encoding", CVPR 2017) with the semantics of the version
// every toolbox ships (torchreid's utils/rerank.py, from the authors' code):
//   D = d^2 over all Q+G images, each row divided by its maximum;
//   R(i) = k1-reciprocal neighbours of i, expanded by each candidate's
//          round(k1/2)-reciprocal set when 2/3 of it lies in R(i);
//   V(i) = exp(-D(i, R)) normalised; with k2 > 1, V(i) = mean of V over i's k2 nearest;
//   Jaccard(i, j) = 1 - sum min(V_i, V_j) / (2 - sum min(V_i, V_j));
//   final = (1 - lambda) * Jaccard + lambda * D, query rows, gallery columns.
// Unlike the reference, nothing here is (Q+G)^2: the rankings are found in
// blocks of rows and kept as top-(k1+1) lists, V is sparse, and the final
// matrix is produced in blocks of queries. Memory is O((Q+G) * k1^2); time
// is one (Q+G)^2 * D sgemm. Ties rank the lower index first.
import Foundation
import ReIDCore

public struct RerankParams: Codable, Equatable {
    public var k1 = 20, k2 = 6, lambda = 0.3
    public init(k1: Int = 20, k2: Int = 6, lambda: Double = 0.3) {
        self.k1 = k1
        self.k2 = k2
        self.lambda = lambda
    }
}

/// Sparse row: column indices ascending, values.
struct SparseRow {
    var cols: [Int32] = []
    var vals: [Float] = []
}

public final class Reranker {
    let q: FeatureSet, g: FeatureSet, metric: Metric, params: RerankParams
    let total: Int, nq: Int
    let qn: [Float], gn: [Float]
    var rowMax: [Float] = []
    var top: [Int32] = [] // (total, k1+1) nearest, self included
    var v: [SparseRow] = []

    /// Worker threads of the distance and neighbour loops.
    let threads: Int

    public init(
        query: FeatureSet, gallery: FeatureSet, metric: Metric, params: RerankParams = RerankParams(), threads: Int = 1
    ) throws {
        try checkComparable(query, gallery)
        guard params.k1 >= 1, params.k2 >= 1, params.k2 <= params.k1 + 1, (0...1).contains(params.lambda) else {
            throw RankingError("re-ranking needs k1 >= 1, 1 <= k2 <= k1+1 and lambda in [0, 1]; got \(params)")
        }
        guard query.count + gallery.count > params.k1 + 1 else {
            throw RankingError("re-ranking needs more than k1+1 = \(params.k1 + 1) images in all")
        }
        q = query
        g = gallery
        self.metric = metric
        self.params = params
        self.threads = threads
        nq = query.count
        total = query.count + gallery.count
        qn = rowNormsSquared(query.features, threads: threads)
        gn = rowNormsSquared(gallery.features, threads: threads)
        nearestNeighbours()
        encode()
    }

    /// Squared distances of rows r0..<r0+rows (over Q then G) to all Q+G images.
    func squaredRows(_ r0: Int, _ rows: Int, _ out: UnsafeMutablePointer<Float>) {
        var r = r0
        while r < r0 + rows {
            let fromQuery = r < nq
            let src = fromQuery ? q : g, srcNorm = fromQuery ? qn : gn
            let start = fromQuery ? r : r - nq
            let n = Swift.min(r0 + rows - r, (fromQuery ? nq : total) - r)
            let o = out + (r - r0) * total
            distanceBlock(
                src, q, q0: start, rows: n, metric: metric, qn: srcNorm, gn: qn, out: o, ldc: total, threads: threads)
            distanceBlock(
                src, g, q0: start, rows: n, metric: metric, qn: srcNorm, gn: gn, out: o + nq, ldc: total,
                threads: threads)
            r += n
        }
        let count = rows * total
        for i in 0..<count { out[i] *= out[i] }
    }

    /// Row maxima and the k1+1 nearest of every image, one block of rows at a time.
    func nearestNeighbours() {
        let k = params.k1 + 1, blockRows = 256
        rowMax = [Float](repeating: 0, count: total)
        top = [Int32](repeating: 0, count: total * k)
        let block = Tensor([blockRows, total], zero: false)
        var r0 = 0
        while r0 < total {
            let rows = Swift.min(blockRows, total - r0)
            squaredRows(r0, rows, block.ptr)
            let t = total, bp = block.ptr
            rowMax.withUnsafeMutableBufferPointer { rm in
                top.withUnsafeMutableBufferPointer { tp in
                    let rmp = rm.baseAddress!, tpp = tp.baseAddress!
                    parallelFor(rows, threads: threads) { r in
                        let row = bp + r * t
                        var mx = -Float.infinity
                        // Sorted (value, index) of the k smallest so far.
                        var bestV = [Float](repeating: .infinity, count: k), bestI = [Int32](repeating: -1, count: k)
                        for j in 0..<t {
                            let x = row[j]
                            if x > mx { mx = x }
                            if x < bestV[k - 1] {
                                var p = k - 1
                                while p > 0 && bestV[p - 1] > x {
                                    bestV[p] = bestV[p - 1]
                                    bestI[p] = bestI[p - 1]
                                    p -= 1
                                }
                                bestV[p] = x
                                bestI[p] = Int32(j)
                            }
                        }
                        rmp[r0 + r] = mx
                        for c in 0..<k { tpp[(r0 + r) * k + c] = bestI[c] }
                    }
                }
            }
            r0 += rows
        }
    }

    /// Normalised squared distance between images i and j (over Q then G).
    func normalised(_ i: Int, _ j: Int) -> Float {
        let (a, ai) = i < nq ? (q, i) : (g, i - nq)
        let (b, bi) = j < nq ? (q, j) : (g, j - nq)
        let an = i < nq ? qn[ai] : gn[ai], bn = j < nq ? qn[bi] : gn[bi]
        let dot = vdot(a.features.ptr + ai * a.dim, b.features.ptr + bi * b.dim, a.dim)
        let d: Float
        switch metric {
        case .cosine: d = 1 - dot / (Swift.max(an.squareRoot(), 1e-12) * Swift.max(bn.squareRoot(), 1e-12))
        case .euclidean: d = an + bn - 2 * dot
        }
        return d * d / rowMax[i]
    }

    func neighbours(_ i: Int, _ n: Int) -> ArraySlice<Int32> {
        let k = params.k1 + 1
        return top[(i * k)..<(i * k + n)]
    }

    /// i's n-reciprocal neighbours, in i's ranking order.
    func reciprocal(_ i: Int, _ n: Int) -> [Int32] {
        neighbours(i, n).filter { neighbours(Int($0), n).contains(Int32(i)) }
    }

    /// V: the k-reciprocal encoding of every image, then its k2 query expansion.
    func encode() {
        let k1 = params.k1
        let half = Int((Double(k1) / 2).rounded(.toNearestOrEven))
        var raw = [SparseRow](repeating: SparseRow(), count: total)
        raw.withUnsafeMutableBufferPointer { rp in
            let rows = rp.baseAddress!
            parallelFor(total, threads: threads, minChunk: 64) { i in
                let r = self.reciprocal(i, k1 + 1)
                var expansion = Set(r)
                let rset = Set(r)
                for c in r {
                    let cr = self.reciprocal(Int(c), half + 1)
                    let inside = Set(cr).intersection(rset).count
                    if Double(inside) > 2.0 / 3.0 * Double(cr.count) { expansion.formUnion(cr) }
                }
                let cols = expansion.sorted()
                let w = cols.map { expf(-self.normalised(i, Int($0))) }
                let s = w.reduce(0, +)
                rows[i] = SparseRow(cols: cols, vals: w.map { $0 / s })
            }
        }
        let k2 = params.k2
        if k2 == 1 {
            v = raw
            return
        }
        var qe = [SparseRow](repeating: SparseRow(), count: total)
        qe.withUnsafeMutableBufferPointer { qp in
            let rows = qp.baseAddress!
            parallelFor(total, threads: threads, minChunk: 64) { i in
                var acc: [Int32: Float] = [:]
                for nb in self.neighbours(i, k2) {
                    let row = raw[Int(nb)]
                    for (c, x) in zip(row.cols, row.vals) { acc[c, default: 0] += x }
                }
                let cols = acc.keys.sorted()
                rows[i] = SparseRow(cols: cols, vals: cols.map { acc[$0]! / Float(k2) })
            }
        }
        v = qe
    }

    /// Re-ranked distances of queries q0..<q0+rows to the gallery, into out (rows x G).
    public func distances(q0: Int, rows: Int, into out: UnsafeMutablePointer<Float>) {
        let gc = g.count, lambda = Float(params.lambda)
        let inverted = self.inverted // built here, not inside the parallel loop
        distanceBlock(q, g, q0: q0, rows: rows, metric: metric, qn: qn, gn: gn, out: out, threads: threads)
        parallelFor(rows, threads: threads) { r in
            let i = q0 + r
            let row = out + r * gc
            var minSum = [Float](repeating: 0, count: gc)
            let vi = self.v[i]
            for (c, x) in zip(vi.cols, vi.vals) {
                for (l, y) in inverted[Int(c)] { minSum[Int(l)] += Swift.min(x, y) }
            }
            let m = self.rowMax[i]
            for j in 0..<gc {
                let d2 = row[j] * row[j] / m
                let jac = 1 - minSum[j] / (2 - minSum[j])
                row[j] = jac * (1 - lambda) + d2 * lambda
            }
        }
    }

    /// Column c of V over gallery rows: (gallery index, value). Built on first use.
    lazy var inverted: [[(Int32, Float)]] = {
        var inv = [[(Int32, Float)]](repeating: [], count: total)
        for l in nq..<total {
            let row = v[l]
            for (c, x) in zip(row.cols, row.vals) { inv[Int(c)].append((Int32(l - nq), x)) }
        }
        return inv
    }()
}

/// The protocol on re-ranked distances, in blocks of queries.
public func rankReranked(
    query q: FeatureSet, gallery g: FeatureSet, metric: Metric = .cosine,
    params: RerankParams = RerankParams(), maxRank: Int = 50, blockRows: Int = 256, threads: Int = 1
) throws -> RankingResult {
    // Junk never takes part, not even as a neighbour (torchreid's loaders drop it).
    let g = g.droppingJunk()
    let rr = try Reranker(query: q, gallery: g, metric: metric, params: params, threads: threads)
    var acc = ProtocolAccumulator(
        queries: q.count, maxRank: Swift.max(1, Swift.min(maxRank, g.count)), threads: threads)
    let rows = Swift.max(1, Swift.min(blockRows, q.count))
    let block = Tensor([rows, g.count], zero: false)
    var q0 = 0
    while q0 < q.count {
        let n = Swift.min(rows, q.count - q0)
        rr.distances(q0: q0, rows: n, into: block.ptr)
        acc.add(rows: n, firstQuery: q0, distances: block.ptr, query: (q.pids, q.camids), gallery: (g.pids, g.camids))
        q0 += n
    }
    return acc.result
}
