// BatchNorm2d / BatchNorm1d on channel-major (C, M) data, M = N*H*W (or N).
// PyTorch: https://pytorch.org/docs/stable/generated/torch.nn.BatchNorm2d.html
//   training: normalise with the biased batch variance; running stats updated
//             with momentum 0.1 from the unbiased variance; num_batches_tracked += 1
//   inference: normalise with the running statistics.
// Optional fused epilogue used by ResNet: out = relu(bn(x) [+ residual]).
import Foundation

public final class BatchNorm {
    public let channels: Int
    public let eps: Float = 1e-5, momentum: Float = 0.1
    public let weight: Int, bias: Int // parameter offsets, (C) each
    public let runningMean: Int, runningVar: Int // buffer offsets, (C) each
    public let counters: [Int]
    unowned let arena: Arena
    public let output = Tensor([0]) // same shape as the input
    // cache for backward: the input (not a copy) and the statistics it was normalised with
    private var input: Tensor?
    private let mean: Tensor, invstd: Tensor // (C)
    private var relu = false, trainedLast = false

    /// `prefixes` name consecutive equal channel groups (one per PyTorch module);
    /// their weights are registered back to back so the layer sees one (C) vector.
    public init(_ arena: Arena, _ prefixes: [String], channels: Int) {
        precondition(channels % prefixes.count == 0)
        self.arena = arena
        self.channels = channels
        let part = channels / prefixes.count
        weight = prefixes.map { arena.param($0 + ".weight", [part], .ones) }[0]
        bias = prefixes.map { arena.param($0 + ".bias", [part], .zeros) }[0]
        runningMean = prefixes.map { arena.buffer($0 + ".running_mean", [part], fill: 0) }[0]
        runningVar = prefixes.map { arena.buffer($0 + ".running_var", [part], fill: 1) }[0]
        counters = prefixes.map { arena.counter($0 + ".num_batches_tracked") }
        mean = Tensor([channels])
        invstd = Tensor([channels])
    }

    public convenience init(_ arena: Arena, _ name: String, channels: Int) {
        self.init(arena, [name], channels: channels)
    }

    /// x: (C, ...) -> output of the same shape.
    @discardableResult
    public func forward(_ x: Tensor, training: Bool, relu: Bool = false, residual: Tensor? = nil, _ ws: Workspace)
        -> Tensor
    {
        let c = channels, m = x.count / c
        precondition(x.shape[0] == c, "BatchNorm: input \(x.shape), expected C=\(c)")
        precondition(!training || m > 1, "BatchNorm: training needs more than one value per channel")
        if let residual { precondition(residual.count == x.count) }
        input = x
        self.relu = relu
        trainedLast = training
        output.resizeForOverwrite(x.shape)
        let gamma = arena.value + weight, beta = arena.value + bias
        let rm = arena.buffer + runningMean, rv = arena.buffer + runningVar
        let xp = x.ptr, yp = output.ptr, mp = mean.ptr, sp = invstd.ptr
        let rp = residual?.ptr
        let eps = self.eps, mom = self.momentum
        ws.measure(.batchnorm) {
            parallelFor(c, threads: ws.threads) { ch in
                let xc = xp + ch * m, yc = yp + ch * m
                var mu: Float, rs: Float
                if training {
                    mu = vsum(xc, m) / Float(m)
                    let ss = vsumSqCentered(xc, m, mu)
                    let v = ss / Float(m)
                    rs = 1 / (v + eps).squareRoot()
                    rm[ch] = (1 - mom) * rm[ch] + mom * mu
                    rv[ch] = (1 - mom) * rv[ch] + mom * (ss / Float(m - 1))
                } else {
                    mu = rm[ch]
                    rs = 1 / (rv[ch] + eps).squareRoot()
                }
                mp[ch] = mu
                sp[ch] = rs
                let a = gamma[ch] * rs, b = beta[ch] - mu * a
                if let rp {
                    let rc = rp + ch * m
                    if relu {
                        for i in 0..<m { yc[i] = Swift.max(xc[i] * a + b + rc[i], 0) }
                    } else {
                        for i in 0..<m { yc[i] = xc[i] * a + b + rc[i] }
                    }
                } else if relu {
                    for i in 0..<m { yc[i] = Swift.max(xc[i] * a + b, 0) }
                } else {
                    for i in 0..<m { yc[i] = xc[i] * a + b }
                }
            }
        }
        if training { for k in counters { arena.counters[k] += 1 } }
        return output
    }

    /// dOut: (C, M), consumed (Layer.swift): with the fused ReLU it is masked in place,
    /// so on return it holds the gradient of (bn(x) + residual), the residual's gradient.
    /// Writes dX (adds when `accumulate`); adds into weight and bias gradients.
    public func backward(
        _ dOut: UnsafeMutablePointer<Float>, dX: UnsafeMutablePointer<Float>,
        accumulate: Bool = false, _ ws: Workspace
    ) {
        guard let x = input else { preconditionFailure("BatchNorm.backward before forward") }
        let c = channels, m = x.count / c
        let gamma = arena.value + weight
        let dgamma = arena.grad + weight, dbeta = arena.grad + bias
        let xp = x.ptr, yp = output.ptr, mp = mean.ptr, sp = invstd.ptr
        let relu = self.relu, training = trainedLast
        ws.measure(.batchnorm) {
            parallelFor(c, threads: ws.threads) { ch in
                let g = dOut + ch * m, xc = xp + ch * m, dx = dX + ch * m
                let mu = mp[ch], rs = sp[ch]
                // sum g, sum g*(x-mu); with the ReLU, g masked where the output was 0, in the same pass
                let (sg, sgx) = relu ? vmaskSumDotCentered(g, yp + ch * m, xc, m, mu) : vsumDotCentered(g, xc, m, mu)
                dgamma[ch] += sgx * rs
                dbeta[ch] += sg
                let gr = gamma[ch] * rs
                if training {
                    // dx = gamma*rs/M * (M*g - sum g - xhat * sum(g*xhat))
                    let k1 = sg / Float(m), k2 = sgx * rs * rs / Float(m)
                    if accumulate {
                        for i in 0..<m { dx[i] += gr * (g[i] - k1 - (xc[i] - mu) * k2) }
                    } else {
                        for i in 0..<m { dx[i] = gr * (g[i] - k1 - (xc[i] - mu) * k2) }
                    }
                } else {
                    if accumulate {
                        for i in 0..<m { dx[i] += gr * g[i] }
                    } else {
                        for i in 0..<m { dx[i] = gr * g[i] }
                    }
                }
            }
        }
    }
}
