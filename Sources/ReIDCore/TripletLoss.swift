// Batch-hard triplet loss (Hermans, Beyer and Leibe, "In Defense of the Triplet Loss for Person
// Re-Identification", 2017), as reid-strong-baseline and fast-reid train with it:
//   for each anchor a, d_ap = the largest distance to an image of its identity (not itself),
//                      d_an = the smallest distance to an image of another identity,
//   l_a = max(0, margin + d_ap - d_an)      or, soft margin, log(1 + exp(d_ap - d_an))
//   loss = mean of l_a over the anchors that have both a positive and a negative.
// Distances: Euclidean, sqrt(max(|a|^2 + |b|^2 - 2 a.b, 1e-12)), or cosine, 1 - a.b / (|a| |b|).
// In double from float features. The PyTorch module (Cluster/tools/reid_dist_torch.py,
// `triplet_loss`) computes the same definition; unlike reid-strong-baseline, an anchor is never its
// own positive (with one image of an identity in the batch it has none and is left out).
import CBLAS
import Foundation

public struct TripletLoss: Equatable, Sendable {
    public enum Distance: String, CaseIterable, Sendable { case euclidean, cosine }

    /// The margin of the hinge (ignored with `soft`).
    public var margin: Double
    /// log(1 + exp(d_ap - d_an)) instead of the hinge.
    public var soft: Bool
    public var distance: Distance

    public init(margin: Double = 0.3, soft: Bool = false, distance: Distance = .euclidean) {
        self.margin = margin
        self.soft = soft
        self.distance = distance
    }

    /// Per anchor: its loss, hardest-positive and hardest-negative distances, whether it counts.
    public struct Anchors {
        public var loss: [Double], dap: [Double], dan: [Double], valid: [Bool]
        /// The mean loss over valid anchors (0 when none is).
        public var mean: Double {
            let n = valid.filter { $0 }.count
            return n == 0 ? 0 : zip(loss, valid).filter(\.1).reduce(0) { $0 + $1.0 } / Double(n)
        }
        public var count: Int { valid.filter { $0 }.count }
    }

    /// The loss of `n` features of `dim` floats each (row-major) with their labels; with `grad`,
    /// writes scale x d(mean loss)/d(features) there (n x dim, overwritten).
    public func callAsFunction(
        _ features: UnsafePointer<Float>, n: Int, dim: Int, labels: [Int],
        grad: UnsafeMutablePointer<Float>? = nil, scale: Double = 1
    ) -> Anchors {
        precondition(labels.count == n, "TripletLoss: \(labels.count) labels for \(n) features")
        var f = [Double](repeating: 0, count: n * dim)
        for i in 0..<(n * dim) { f[i] = Double(features[i]) }
        var gram = [Double](repeating: 0, count: n * n)
        if n > 0 && dim > 0 {
            cblas_dgemm(
                CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(n), Int32(dim), 1, f, Int32(dim), f,
                Int32(dim),
                0, &gram, Int32(n))
        }
        let sq = (0..<n).map { gram[$0 * n + $0] }
        let norm = sq.map { Swift.max($0.squareRoot(), 1e-12) }
        func dist(_ i: Int, _ j: Int) -> Double {
            switch distance {
            case .euclidean: return Swift.max(sq[i] + sq[j] - 2 * gram[i * n + j], 1e-12).squareRoot()
            case .cosine: return 1 - gram[i * n + j] / (norm[i] * norm[j])
            }
        }
        var out = Anchors(
            loss: .init(repeating: 0, count: n), dap: .init(repeating: 0, count: n),
            dan: .init(repeating: 0, count: n), valid: .init(repeating: false, count: n))
        var pairs: [(a: Int, p: Int, neg: Int, slope: Double)] = []
        for a in 0..<n {
            var p = -1, q = -1, dap = -Double.infinity, dan = Double.infinity
            for j in 0..<n where j != a {
                let d = dist(a, j)
                if labels[j] == labels[a] {
                    if d > dap {
                        dap = d
                        p = j
                    }
                } else if d < dan {
                    dan = d
                    q = j
                }
            }
            guard p >= 0, q >= 0 else { continue }
            let x = dap - dan
            // slope: d l / d(d_ap) (and minus it for d_an)
            let (l, slope) =
                soft
                ? (x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)), 1 / (1 + exp(-x)))
                : (Swift.max(0, margin + x), margin + x > 0 ? 1.0 : 0.0)
            out.loss[a] = l
            out.dap[a] = dap
            out.dan[a] = dan
            out.valid[a] = true
            pairs.append((a, p, q, slope))
        }
        guard let grad else { return out }
        grad.update(repeating: 0, count: n * dim)
        let w = scale / Double(Swift.max(pairs.count, 1))
        var g = [Double](repeating: 0, count: n * dim)
        /// Adds c x d(dist(i, j))/d(f_i) to row i and c x d(dist(i, j))/d(f_j) to row j.
        func addDistGrad(_ i: Int, _ j: Int, _ c: Double) {
            switch distance {
            case .euclidean:
                let s = sq[i] + sq[j] - 2 * gram[i * n + j]
                guard s > 1e-12 else { return } // clamped: no slope
                let k = c / s.squareRoot()
                for t in 0..<dim {
                    let diff = f[i * dim + t] - f[j * dim + t]
                    g[i * dim + t] += k * diff
                    g[j * dim + t] -= k * diff
                }
            case .cosine:
                let ni = norm[i], nj = norm[j], cos = gram[i * n + j] / (ni * nj)
                for t in 0..<dim {
                    g[i * dim + t] -= c * (f[j * dim + t] / (ni * nj) - cos * f[i * dim + t] / (ni * ni))
                    g[j * dim + t] -= c * (f[i * dim + t] / (ni * nj) - cos * f[j * dim + t] / (nj * nj))
                }
            }
        }
        for (a, p, q, slope) in pairs where slope != 0 {
            addDistGrad(a, p, w * slope)
            addDistGrad(a, q, -w * slope)
        }
        for i in 0..<(n * dim) { grad[i] = Float(g[i]) }
        return out
    }
}
