// The backbone seam: what the grouped head needs of a backbone (`Backbone`), and one description
// of a backbone's graph (`GraphNode`) from which the rest is derived. ResNet builds its layers
// from its description; the ONNX export writes the same description as ONNX nodes; `bench
// convs` walks it for the convolution shapes. So ResNet's structure is spelled out once, in
// `ResNet.graph(...)`.
//
// A new backbone: a final class conforming to `Backbone` whose layers follow Layer.swift, built
// from its own `graph` (parameter names are the state dict's: `<conv>.weight`, `<bn>.weight`,
// `.bias`, `.running_mean`, `.running_var`, `.num_batches_tracked`), a case in `ModelSpec` /
// `model.*` that chooses it, and the finite-difference and PyTorch tests ResNet has (ResNetTests,
// ReferenceTests). The export needs nothing more as long as its graph uses these nodes.

/// A convolution without bias, then batch norm, then optionally ReLU.
public struct ConvBN: Equatable, Sendable {
    /// The state dict names of the convolution and of the batch norm.
    public var conv: String, bn: String
    public var cin: Int, cout: Int, kernel: Int, stride: Int, pad: Int
    public var relu: Bool

    public init(
        conv: String, bn: String, cin: Int, cout: Int, kernel: Int, stride: Int = 1, pad: Int? = nil, relu: Bool
    ) {
        self.conv = conv
        self.bn = bn
        self.cin = cin
        self.cout = cout
        self.kernel = kernel
        self.stride = stride
        self.pad = pad ?? kernel / 2
        self.relu = relu
    }

    /// The output size of an H x W input.
    public func outputSize(_ h: Int, _ w: Int) -> (Int, Int) {
        ((h + 2 * pad - kernel) / stride + 1, (w + 2 * pad - kernel) / stride + 1)
    }
}

/// One node of a backbone's inference graph.
public enum GraphNode: Equatable, Sendable {
    case convBN(ConvBN)
    case maxPool(name: String, kernel: Int, stride: Int, pad: Int)
    /// relu(body(x) + shortcut(x)), where an empty shortcut is x itself; `stage` groups blocks for
    /// per-stage timing (layer1 is stage 1).
    case residual(name: String, stage: Int, body: [ConvBN], shortcut: [ConvBN])
}

extension Array where Element == GraphNode {
    /// Every convolution of the graph in order, with its input's (H, W), for an H x W image.
    public func convolutions(height: Int, width: Int) -> [(conv: ConvBN, h: Int, w: Int)] {
        var out: [(ConvBN, Int, Int)] = []
        var (h, w) = (height, width)
        func chain(_ convs: [ConvBN], _ h0: Int, _ w0: Int) -> (Int, Int) {
            var (h, w) = (h0, w0)
            for c in convs {
                out.append((c, h, w))
                (h, w) = c.outputSize(h, w)
            }
            return (h, w)
        }
        for node in self {
            switch node {
            case .convBN(let c): (h, w) = chain([c], h, w)
            case .maxPool(_, let k, let s, let p): (h, w) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1)
            case .residual(_, _, let body, let shortcut):
                _ = chain(shortcut, h, w)
                (h, w) = chain(body, h, w)
            }
        }
        return out
    }

    /// Channels of the graph's output.
    public var outChannels: Int {
        for node in reversed() {
            switch node {
            case .convBN(let c): return c.cout
            case .residual(_, _, let body, _): return body.last!.cout
            case .maxPool: continue
            }
        }
        return 0
    }
}

/// What the grouped multi-branch head needs of a backbone. Activations are channel-major
/// (C, N, H, W); parameters live in the model's Arena under the graph's names.
public protocol Backbone: AnyObject {
    /// The inference graph the layers were built from.
    var graph: [GraphNode] { get }
    /// Channels of the feature map.
    var outChannels: Int { get }
    /// Engine options, scratch and profile shared by the model's layers.
    var ws: Workspace { get }
    /// x: NCHW (N, 3, H, W) as PyTorch -> feature map (C, N, h, w).
    func forward(nchw x: Tensor, training: Bool) -> Tensor
    /// Adds every parameter gradient into the arena, from the feature map's gradient (consumed);
    /// `ready(offset)` says every gradient from that arena offset on is final.
    func backward(_ dOut: Tensor, ready: ((Int) -> Void)?)
    /// The buffer to write the feature map's gradient into before `backward`.
    func featureGradBuffer(_ shape: [Int]) -> Tensor
}
