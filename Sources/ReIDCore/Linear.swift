// Linear without bias and the label-smoothed cross-entropy.
// PyTorch: nn.Linear(bias=False); F.cross_entropy(label_smoothing=eps).

import Foundation

/// y (N, K) = x^T W^T for channel-major features x (D, N) and weight (K, D).
/// The input may be a block of rows of a larger channel-major tensor (a channel
/// group of the pooled feature): `forward(x, rows:)` reads rows `rows` of x.
public final class Linear {
    public let inFeatures: Int, outFeatures: Int
    public let weight: Int
    unowned let arena: Arena
    public let output = Tensor([0]) // (N, K), row-major as PyTorch's logits
    // cache for backward: the tensor read by forward (not a copy) and which of its rows
    private var input: Tensor?
    private var firstRow = 0

    public init(_ arena: Arena, _ name: String, inFeatures: Int, outFeatures: Int, std: Double = 0.001) {
        self.arena = arena
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        weight = arena.param(name + ".weight", [outFeatures, inFeatures], .normal(std: std))
    }

    /// x: (C, N) channel-major; rows `rows` (D of them) are the layer's input.
    @discardableResult
    public func forward(_ x: Tensor, rows: Range<Int>) -> Tensor {
        precondition(
            x.shape.count == 2 && rows.count == inFeatures && rows.upperBound <= x.shape[0],
            "Linear: rows \(rows) of \(x.shape), expected \(inFeatures) rows")
        let n = x.shape[1]
        input = x
        firstRow = rows.lowerBound
        output.resizeForOverwrite([n, outFeatures])
        sgemm(
            transA: true, transB: true, m: n, n: outFeatures, k: inFeatures,
            a: x.ptr + firstRow * n, b: arena.value + weight, c: output.ptr)
        return output
    }

    /// dOut (N, K); dW += dOut^T x^T; dX (D, N) written, or added when `accumulate`.
    public func backward(_ dOut: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>?, accumulate: Bool = false) {
        guard let input else { preconditionFailure("Linear.backward before forward") }
        let n = input.shape[1], k = outFeatures, d = inFeatures
        sgemm(
            transA: true, transB: true, m: k, n: d, k: n, a: dOut, b: input.ptr + firstRow * n, beta: 1,
            c: arena.grad + weight)
        if let dX {
            sgemm(
                transA: true, transB: true, m: d, n: n, k: k, a: arena.value + weight, b: dOut,
                beta: accumulate ? 1 : 0, c: dX)
        }
    }
}

/// Cross-entropy with label smoothing, exactly PyTorch's: target
/// q = (1 - eps) * onehot + eps / K, loss_i = -sum_k q_k log softmax(z_i)_k,
/// mean over the batch. Returns the loss and writes dlogits * `scale`.
public enum CrossEntropy {
    public static func forward(
        logits: UnsafePointer<Float>, labels: [Int], classes k: Int, eps: Float,
        dLogits: UnsafeMutablePointer<Float>?, scale: Float = 1
    ) -> (loss: Double, correct: Int) {
        let n = labels.count
        var total = 0.0, correct = 0
        for i in 0..<n {
            let z = logits + i * k, y = labels[i]
            precondition(y >= 0 && y < k, "CrossEntropy: label \(y) outside [0, \(k))")
            var mx = z[0], arg = 0
            for j in 1..<k where z[j] > mx {
                mx = z[j]
                arg = j
            }
            if arg == y { correct += 1 }
            var se: Double = 0, sz: Double = 0
            for j in 0..<k {
                se += Double(expf(z[j] - mx))
                sz += Double(z[j] - mx)
            }
            let lse = log(se)
            // -sum_k q_k (z_k - mx - lse) = (1-eps)*(lse - (z_y - mx)) + eps/K * (K*lse - sum(z - mx))
            let nll = lse - Double(z[y] - mx)
            let smooth = lse - sz / Double(k)
            total += Double(1 - eps) * nll + Double(eps) * smooth
            if let d = dLogits {
                let row = d + i * k
                let inv = Float(1 / se), s = scale / Float(n), u = eps / Float(k)
                for j in 0..<k { row[j] = (expf(z[j] - mx) * inv - u) * s }
                row[y] -= (1 - eps) * s
            }
        }
        return (total / Double(n), correct)
    }
}
