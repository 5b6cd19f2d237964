// Batch-hard triplet loss (Hermans, Beyer and Leibe, "In Defense of the Triplet Loss for Person
// Re-Identification", 2017), as reid-strong-baseline and fast-reid train with it:
//   for each anchor a, d_ap = the largest distance to an image of its identity (not itself),
//                      d_an = the smallest distance to an image of another identity,
//   l_a = max(0, margin + d_ap - d_an)      or, soft margin, log(1 + exp(d_ap - d_an))
//   loss = mean of l_a over the anchors that have both a positive and a negative.
// Distances: Euclidean, sqrt(max(|a|^2 + |b|^2 - 2 a.b, 1e-12)), or cosine, 1 - a.b / (|a| |b|).
// In double from float features. The PyTorch module (Cluster/python/reid_dist_torch.py,
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
        let d = Distances(features, n: n, dim: dim, distance)
        let (anchors, triplets) = mine(d, labels)
        if let grad { gradient(d, triplets, scale: scale, grad) }
        return anchors
    }

    /// Each anchor's hardest triplet (anchor, positive, negative) and the slope of its loss with
    /// respect to d_ap (minus that for d_an).
    typealias Triplet = (a: Int, p: Int, n: Int, slope: Double)

    /// Per anchor: the farthest positive and the nearest negative, its loss and its slope.
    private func mine(_ d: Distances, _ labels: [Int]) -> (Anchors, [Triplet]) {
        let n = d.n
        var out = Anchors(
            loss: .init(repeating: 0, count: n), dap: .init(repeating: 0, count: n),
            dan: .init(repeating: 0, count: n), valid: .init(repeating: false, count: n))
        var triplets: [Triplet] = []
        for a in 0..<n {
            var p = -1, q = -1, dap = -Double.infinity, dan = Double.infinity
            for j in 0..<n where j != a {
                let x = d.distance(a, j)
                if labels[j] == labels[a] {
                    if x > dap { (dap, p) = (x, j) }
                } else if x < dan {
                    (dan, q) = (x, j)
                }
            }
            guard p >= 0, q >= 0 else { continue }
            let x = dap - dan
            let (l, slope) =
                soft
                ? (x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)), 1 / (1 + exp(-x)))
                : (Swift.max(0, margin + x), margin + x > 0 ? 1.0 : 0.0)
            out.loss[a] = l
            out.dap[a] = dap
            out.dan[a] = dan
            out.valid[a] = true
            triplets.append((a, p, q, slope))
        }
        return (out, triplets)
    }

    /// scale x d(mean loss)/d(features) into grad: each triplet moves its anchor and positive
    /// apart by its slope and its anchor and negative together.
    private func gradient(_ d: Distances, _ triplets: [Triplet], scale: Double, _ grad: UnsafeMutablePointer<Float>) {
        let w = scale / Double(Swift.max(triplets.count, 1))
        var g = [Double](repeating: 0, count: d.n * d.dim)
        for t in triplets where t.slope != 0 {
            d.addGradient(t.a, t.p, w * t.slope, &g)
            d.addGradient(t.a, t.n, -w * t.slope, &g)
        }
        for i in 0..<g.count { grad[i] = Float(g[i]) }
    }

    /// The features in double, their Gram matrix (one dgemm), squared norms and norms.
    struct Distances {
        let n: Int, dim: Int, kind: Distance
        let f: [Double], gram: [Double], sq: [Double], norm: [Double]

        init(_ features: UnsafePointer<Float>, n: Int, dim: Int, _ kind: Distance) {
            self.n = n
            self.dim = dim
            self.kind = kind
            f = (0..<(n * dim)).map { Double(features[$0]) }
            var gram = [Double](repeating: 0, count: n * n)
            if n > 0 && dim > 0 {
                cblas_dgemm(
                    CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(n), Int32(dim), 1, f, Int32(dim), f,
                    Int32(dim), 0, &gram, Int32(n))
            }
            self.gram = gram
            sq = (0..<n).map { gram[$0 * n + $0] }
            norm = sq.map { Swift.max($0.squareRoot(), 1e-12) }
        }

        func distance(_ i: Int, _ j: Int) -> Double {
            switch kind {
            case .euclidean: return Swift.max(sq[i] + sq[j] - 2 * gram[i * n + j], 1e-12).squareRoot()
            case .cosine: return 1 - gram[i * n + j] / (norm[i] * norm[j])
            }
        }

        /// Adds c x d(distance(i, j))/d(f_i) to row i of g and c x d(distance(i, j))/d(f_j) to row j.
        func addGradient(_ i: Int, _ j: Int, _ c: Double, _ g: inout [Double]) {
            switch kind {
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
    }
}
