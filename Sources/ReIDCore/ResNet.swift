// ResNet-18/34/50 as torchvision v1.5 (stride on the 3x3 conv of the
// bottleneck), with a stem `width` and a `last_stride` for layer4.
// Parameter names are torchvision's: conv1.weight, layer1.0.bn1.running_mean, ...
// https://github.com/pytorch/vision/blob/main/torchvision/models/resnet.py

/// Four gradient buffers that the blocks' backward passes rotate through,
/// each grown to the largest activation on first use.
public final class GradBuffers {
    public let a = Tensor([1]), b = Tensor([1]), s1 = Tensor([1]), s2 = Tensor([1])
    public init() {}
}

protocol ResidualBlock: AnyObject {
    var output: Tensor { get }
    /// Arena offset of the block's first parameter (conv1.weight); all its
    /// parameters lie at or after it, before the next block's.
    var firstParam: Int { get }
    func forward(_ x: Tensor, training: Bool, _ ws: Workspace) -> Tensor
    /// dOut is consumed (overwritten); dX is written. s1, s2 are scratch.
    func backward(_ dOut: Tensor, dX: Tensor?, _ s1: Tensor, _ s2: Tensor, _ ws: Workspace)
}

/// conv1x1-strided + BN on the identity path when shapes change.
final class Downsample {
    let conv: Conv2d, bn: BatchNorm
    init(_ arena: Arena, _ c: ConvBN) {
        conv = Conv2d(arena, c)
        bn = BatchNorm(arena, c.bn, channels: c.cout)
    }

    /// The shortcut of a graph's residual node: none (the identity) or one 1x1 conv + BN.
    static func make(_ arena: Arena, _ shortcut: [ConvBN]) -> Downsample? {
        precondition(shortcut.count <= 1, "ResNet: a shortcut of \(shortcut.count) convolutions")
        return shortcut.first.map { Downsample(arena, $0) }
    }
}

extension Conv2d {
    /// The convolution of a graph node, registered under its name.
    convenience init(_ arena: Arena, _ c: ConvBN) {
        self.init(arena, c.conv, cin: c.cin, cout: c.cout, kernel: c.kernel, stride: c.stride, pad: c.pad)
    }
}

/// The residual path of a block: x itself, or x through the downsample.
func identityForward(_ down: Downsample?, _ x: Tensor, training: Bool, _ ws: Workspace) -> Tensor {
    guard let down else { return x }
    return down.bn.forward(down.conv.forward(x, ws, training: training), training: training, ws)
}

/// Adds the residual path's input gradient into dX; g is d(identity); s is scratch.
func identityBackward(_ down: Downsample?, _ g: Tensor, dX: Tensor?, _ s: Tensor, _ ws: Workspace) {
    if let down {
        s.resizeForOverwrite(down.conv.output.shape)
        down.bn.backward(g.ptr, dX: s.ptr, ws)
        down.conv.backward(s.ptr, dX: dX?.ptr, accumulate: true, ws)
    } else if let dX {
        let d = dX.ptr, gp = g.ptr
        for i in 0..<dX.count { d[i] += gp[i] }
    }
}

final class BasicBlock: ResidualBlock {
    let conv1: Conv2d, bn1: BatchNorm, conv2: Conv2d, bn2: BatchNorm
    let down: Downsample?
    var output: Tensor { bn2.output }
    var firstParam: Int { conv1.weight }
    private var input: Tensor?

    /// Registers body[0], its BN, body[1], its BN, then the shortcut's, in the Arena (torchvision's order).
    init(_ arena: Arena, body: [ConvBN], shortcut: [ConvBN]) {
        precondition(body.count == 2 && body[0].relu && !body[1].relu, "BasicBlock: a body of 3x3 + ReLU, 3x3")
        conv1 = Conv2d(arena, body[0])
        bn1 = BatchNorm(arena, body[0].bn, channels: body[0].cout)
        conv2 = Conv2d(arena, body[1])
        bn2 = BatchNorm(arena, body[1].bn, channels: body[1].cout)
        down = Downsample.make(arena, shortcut)
    }

    func forward(_ x: Tensor, training: Bool, _ ws: Workspace) -> Tensor {
        input = x
        let a1 = bn1.forward(conv1.forward(x, ws, training: training), training: training, relu: true, ws)
        let o2 = conv2.forward(a1, ws, training: training)
        let idt = identityForward(down, x, training: training, ws)
        return bn2.forward(o2, training: training, relu: true, residual: idt, ws)
    }

    func backward(_ dOut: Tensor, dX: Tensor?, _ s1: Tensor, _ s2: Tensor, _ ws: Workspace) {
        s1.resizeForOverwrite(conv2.output.shape)
        bn2.backward(dOut.ptr, dX: s1.ptr, ws) // dOut now: d(identity)
        s2.resizeForOverwrite(bn1.output.shape)
        conv2.backward(s1.ptr, dX: s2.ptr, ws)
        s1.resizeForOverwrite(conv1.output.shape)
        bn1.backward(s2.ptr, dX: s1.ptr, ws)
        if let dX { dX.resizeForOverwrite(input!.shape) }
        conv1.backward(s1.ptr, dX: dX?.ptr, ws)
        identityBackward(down, dOut, dX: dX, s2, ws)
    }
}

final class Bottleneck: ResidualBlock {
    let conv1: Conv2d, bn1: BatchNorm, conv2: Conv2d, bn2: BatchNorm, conv3: Conv2d, bn3: BatchNorm
    let down: Downsample?
    var output: Tensor { bn3.output }
    var firstParam: Int { conv1.weight }
    private var input: Tensor?

    /// Registers the three body convolutions with their BNs, then the shortcut's (torchvision's order).
    init(_ arena: Arena, body: [ConvBN], shortcut: [ConvBN]) {
        precondition(body.count == 3 && !body[2].relu, "Bottleneck: a body of 1x1, 3x3, 1x1")
        conv1 = Conv2d(arena, body[0])
        bn1 = BatchNorm(arena, body[0].bn, channels: body[0].cout)
        conv2 = Conv2d(arena, body[1])
        bn2 = BatchNorm(arena, body[1].bn, channels: body[1].cout)
        conv3 = Conv2d(arena, body[2])
        bn3 = BatchNorm(arena, body[2].bn, channels: body[2].cout)
        down = Downsample.make(arena, shortcut)
    }

    func forward(_ x: Tensor, training: Bool, _ ws: Workspace) -> Tensor {
        input = x
        let a1 = bn1.forward(conv1.forward(x, ws, training: training), training: training, relu: true, ws)
        let a2 = bn2.forward(conv2.forward(a1, ws, training: training), training: training, relu: true, ws)
        let o3 = conv3.forward(a2, ws, training: training)
        let idt = identityForward(down, x, training: training, ws)
        return bn3.forward(o3, training: training, relu: true, residual: idt, ws)
    }

    func backward(_ dOut: Tensor, dX: Tensor?, _ s1: Tensor, _ s2: Tensor, _ ws: Workspace) {
        s1.resizeForOverwrite(conv3.output.shape)
        bn3.backward(dOut.ptr, dX: s1.ptr, ws) // dOut now: d(identity)
        s2.resizeForOverwrite(bn2.output.shape)
        conv3.backward(s1.ptr, dX: s2.ptr, ws)
        s1.resizeForOverwrite(conv2.output.shape)
        bn2.backward(s2.ptr, dX: s1.ptr, ws)
        s2.resizeForOverwrite(bn1.output.shape)
        conv2.backward(s1.ptr, dX: s2.ptr, ws)
        s1.resizeForOverwrite(conv1.output.shape)
        bn1.backward(s2.ptr, dX: s1.ptr, ws)
        if let dX { dX.resizeForOverwrite(input!.shape) }
        conv1.backward(s1.ptr, dX: dX?.ptr, ws)
        identityBackward(down, dOut, dX: dX, s2, ws)
    }
}

public final class ResNet: Backbone {
    public static let depths: [Int: (bottleneck: Bool, blocks: [Int])] = [
        18: (false, [2, 2, 2, 2]), 34: (false, [3, 4, 6, 3]), 50: (true, [3, 4, 6, 3])
    ]
    public let depth: Int, width: Int, lastStride: Int
    public let outChannels: Int
    /// The graph the layers are built from (`ResNet.graph`).
    public let graph: [GraphNode]
    let conv1: Conv2d, bn1: BatchNorm, maxpool = MaxPool2d()
    /// Blocks grouped by stage: layer1..layer4.
    let stages: [[ResidualBlock]]
    public let input = Tensor([0]) // (3, N, H, W) channel-major copy of the batch
    /// What the backbone's layers share: engine options, scratch, profile (EngineOptions.swift).
    public let ws: Workspace
    let gb = GradBuffers()

    /// torchvision's ResNet (v1.5: the stride on the bottleneck's 3x3) as a graph, names under
    /// `prefix`: the 7x7 stem, max pooling, then the residual blocks of layer1-4 (layer4's stride is
    /// `lastStride`). The one place the structure is written down: the layers, the ONNX export
    /// and `bench convs` all come from it.
    public static func graph(prefix: String = "", depth: Int, width: Int, lastStride: Int) -> [GraphNode] {
        guard let spec = depths[depth] else { preconditionFailure("ResNet: depth \(depth) is not 18, 34 or 50") }
        precondition(lastStride == 1 || lastStride == 2, "ResNet: last_stride must be 1 or 2")
        var nodes: [GraphNode] = [
            .convBN(
                ConvBN(
                    conv: prefix + "conv1", bn: prefix + "bn1", cin: 3, cout: width, kernel: 7, stride: 2, relu: true)),
            .maxPool(name: prefix + "maxpool", kernel: 3, stride: 2, pad: 1)
        ]
        var cin = width
        for (si, n) in spec.blocks.enumerated() {
            let planes = width << si, cout = planes * (spec.bottleneck ? 4 : 1)
            for b in 0..<n {
                let p = "\(prefix)layer\(si + 1).\(b)"
                let s = b > 0 ? 1 : si == 0 ? 1 : si == 3 ? lastStride : 2
                func conv(_ i: Int, _ ci: Int, _ co: Int, _ k: Int, stride: Int = 1, relu: Bool) -> ConvBN {
                    ConvBN(
                        conv: "\(p).conv\(i)", bn: "\(p).bn\(i)", cin: ci, cout: co, kernel: k, stride: stride,
                        relu: relu)
                }
                let body =
                    spec.bottleneck
                    ? [
                        conv(1, cin, planes, 1, relu: true), conv(2, planes, planes, 3, stride: s, relu: true),
                        conv(3, planes, cout, 1, relu: false)
                    ]
                    : [conv(1, cin, planes, 3, stride: s, relu: true), conv(2, planes, planes, 3, relu: false)]
                let shortcut =
                    s != 1 || cin != cout
                    ? [
                        ConvBN(
                            conv: p + ".downsample.0", bn: p + ".downsample.1", cin: cin, cout: cout, kernel: 1,
                            stride: s,
                            relu: false)
                    ] : []
                nodes.append(.residual(name: p, stage: si + 1, body: body, shortcut: shortcut))
                cin = cout
            }
        }
        return nodes
    }

    /// Registers the backbone's parameters in `arena` under `prefix` ("" or "backbone."), layer
    /// by layer as its graph lists them.
    public init(
        _ arena: Arena, prefix: String = "", depth: Int = 50, width: Int = 64, lastStride: Int = 1,
        options: EngineOptions = EngineOptions()
    ) {
        self.depth = depth
        self.width = width
        self.lastStride = lastStride
        ws = Workspace(options)
        graph = Self.graph(prefix: prefix, depth: depth, width: width, lastStride: lastStride)
        guard case .convBN(let stem) = graph[0], case .maxPool = graph[1] else {
            preconditionFailure("ResNet: a graph that does not start with a stem and max pooling")
        }
        conv1 = Conv2d(arena, stem)
        bn1 = BatchNorm(arena, stem.bn, channels: stem.cout)
        var stages = [[ResidualBlock]](repeating: [], count: 4)
        for case .residual(_, let stage, let body, let shortcut) in graph.dropFirst(2) {
            stages[stage - 1].append(
                body.count == 3
                    ? Bottleneck(arena, body: body, shortcut: shortcut)
                    : BasicBlock(arena, body: body, shortcut: shortcut))
        }
        self.stages = stages
        outChannels = graph.outChannels
    }

    /// x: NCHW (N, 3, H, W) as PyTorch -> feature map (C, N, h, w), channel-major.
    public func forward(nchw x: Tensor, training: Bool) -> Tensor {
        let n = x.shape[0], h = x.shape[2], w = x.shape[3]
        precondition(x.shape[1] == 3, "ResNet: input must have 3 channels, got \(x.shape)")
        input.resizeForOverwrite([3, n, h, w])
        swapLeadingAxes(input.ptr, x.ptr, n, 3, h * w)
        return forward(cnhw: input, training: training)
    }

    public func forward(cnhw x: Tensor, training: Bool) -> Tensor {
        var t = forwardStem(x, training: training)
        for stage in stages { for b in stage { t = b.forward(t, training: training, ws) } }
        return t
    }

    func forwardStem(_ x: Tensor, training: Bool) -> Tensor {
        let a = bn1.forward(conv1.forward(x, ws, training: training), training: training, relu: true, ws)
        return maxpool.forward(a, ws)
    }

    /// Runs the forward of one stage only (for per-stage timing). Stage 0 is the stem.
    public func forwardStage(_ i: Int, _ x: Tensor, training: Bool) -> Tensor {
        if i == 0 { return forwardStem(x, training: training) }
        var t = x
        for b in stages[i - 1] { t = b.forward(t, training: training, ws) }
        return t
    }

    /// dOut: gradient of the feature map (C, N, h, w); it is consumed.
    /// Adds every parameter gradient into the arena. After each block,
    /// `ready(offset)` says that every gradient from that arena offset on is
    /// final (backward runs in reverse registration order), so a gradient
    /// all-reduce can start on those while the earlier layers compute.
    public func backward(_ dOut: Tensor, ready: ((Int) -> Void)? = nil) {
        var g = dOut
        for i in stride(from: 4, through: 1, by: -1) { g = backwardStage(i, g, ready: ready) }
        _ = backwardStage(0, g, ready: ready)
    }

    /// Backward of one stage; returns the gradient of its input (a buffer of `gb`).
    @discardableResult
    public func backwardStage(_ i: Int, _ dOut: Tensor, ready: ((Int) -> Void)? = nil) -> Tensor {
        if i == 0 {
            let d = dOut === gb.a ? gb.b : gb.a
            d.resizeForOverwrite(bn1.output.shape)
            maxpool.backward(dOut.ptr, dX: d.ptr, ws)
            gb.s1.resizeForOverwrite(conv1.output.shape)
            bn1.backward(d.ptr, dX: gb.s1.ptr, ws)
            conv1.backward(gb.s1.ptr, dX: nil, ws)
            ready?(0)
            return d
        }
        var g = dOut
        for b in stages[i - 1].reversed() {
            let d = g === gb.a ? gb.b : gb.a
            b.backward(g, dX: d, gb.s1, gb.s2, ws)
            ready?(b.firstParam)
            g = d
        }
        return g
    }

    /// The gradient buffer to write the feature-map gradient into before `backward`.
    public func featureGradBuffer(_ shape: [Int]) -> Tensor {
        gb.a.resizeForOverwrite(shape)
        return gb.a
    }

    /// The feature map of each stage (stem, layer1..4) from the last forward.
    public func stageOutput(_ i: Int) -> Tensor { i == 0 ? maxpool.output : stages[i - 1].last!.output }
}
