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
    init(_ arena: Arena, _ prefix: String, cin: Int, cout: Int, stride: Int) {
        conv = Conv2d(arena, prefix + ".0", cin: cin, cout: cout, kernel: 1, stride: stride)
        bn = BatchNorm(arena, prefix + ".1", channels: cout)
    }
}

/// The residual path of a block: x itself, or x through the downsample.
func identityForward(_ down: Downsample?, _ x: Tensor, training: Bool, _ ws: Workspace) -> Tensor {
    guard let down else { return x }
    return down.bn.forward(down.conv.forward(x, ws, training: training), training: training)
}

/// Adds the residual path's input gradient into dX; g is d(identity); s is scratch.
func identityBackward(_ down: Downsample?, _ g: Tensor, dX: Tensor?, _ s: Tensor, _ ws: Workspace) {
    if let down {
        s.resizeForOverwrite(down.conv.output.shape)
        down.bn.backward(g.ptr, dX: s.ptr)
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

    init(_ arena: Arena, _ p: String, cin: Int, planes: Int, stride: Int) {
        conv1 = Conv2d(arena, p + ".conv1", cin: cin, cout: planes, kernel: 3, stride: stride, pad: 1)
        bn1 = BatchNorm(arena, p + ".bn1", channels: planes)
        conv2 = Conv2d(arena, p + ".conv2", cin: planes, cout: planes, kernel: 3, stride: 1, pad: 1)
        bn2 = BatchNorm(arena, p + ".bn2", channels: planes)
        down =
            (stride != 1 || cin != planes)
            ? Downsample(arena, p + ".downsample", cin: cin, cout: planes, stride: stride) : nil
    }

    func forward(_ x: Tensor, training: Bool, _ ws: Workspace) -> Tensor {
        input = x
        let a1 = bn1.forward(conv1.forward(x, ws, training: training), training: training, relu: true)
        let o2 = conv2.forward(a1, ws, training: training)
        let idt = identityForward(down, x, training: training, ws)
        return bn2.forward(o2, training: training, relu: true, residual: idt)
    }

    func backward(_ dOut: Tensor, dX: Tensor?, _ s1: Tensor, _ s2: Tensor, _ ws: Workspace) {
        s1.resizeForOverwrite(conv2.output.shape)
        bn2.backward(dOut.ptr, dX: s1.ptr) // dOut now: d(identity)
        s2.resizeForOverwrite(bn1.output.shape)
        conv2.backward(s1.ptr, dX: s2.ptr, ws)
        s1.resizeForOverwrite(conv1.output.shape)
        bn1.backward(s2.ptr, dX: s1.ptr)
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

    init(_ arena: Arena, _ p: String, cin: Int, planes: Int, stride: Int) {
        conv1 = Conv2d(arena, p + ".conv1", cin: cin, cout: planes, kernel: 1)
        bn1 = BatchNorm(arena, p + ".bn1", channels: planes)
        conv2 = Conv2d(arena, p + ".conv2", cin: planes, cout: planes, kernel: 3, stride: stride, pad: 1)
        bn2 = BatchNorm(arena, p + ".bn2", channels: planes)
        conv3 = Conv2d(arena, p + ".conv3", cin: planes, cout: planes * 4, kernel: 1)
        bn3 = BatchNorm(arena, p + ".bn3", channels: planes * 4)
        down =
            (stride != 1 || cin != planes * 4)
            ? Downsample(arena, p + ".downsample", cin: cin, cout: planes * 4, stride: stride) : nil
    }

    func forward(_ x: Tensor, training: Bool, _ ws: Workspace) -> Tensor {
        input = x
        let a1 = bn1.forward(conv1.forward(x, ws, training: training), training: training, relu: true)
        let a2 = bn2.forward(conv2.forward(a1, ws, training: training), training: training, relu: true)
        let o3 = conv3.forward(a2, ws, training: training)
        let idt = identityForward(down, x, training: training, ws)
        return bn3.forward(o3, training: training, relu: true, residual: idt)
    }

    func backward(_ dOut: Tensor, dX: Tensor?, _ s1: Tensor, _ s2: Tensor, _ ws: Workspace) {
        s1.resizeForOverwrite(conv3.output.shape)
        bn3.backward(dOut.ptr, dX: s1.ptr) // dOut now: d(identity)
        s2.resizeForOverwrite(bn2.output.shape)
        conv3.backward(s1.ptr, dX: s2.ptr, ws)
        s1.resizeForOverwrite(conv2.output.shape)
        bn2.backward(s2.ptr, dX: s1.ptr)
        s2.resizeForOverwrite(bn1.output.shape)
        conv2.backward(s1.ptr, dX: s2.ptr, ws)
        s1.resizeForOverwrite(conv1.output.shape)
        bn1.backward(s2.ptr, dX: s1.ptr)
        if let dX { dX.resizeForOverwrite(input!.shape) }
        conv1.backward(s1.ptr, dX: dX?.ptr, ws)
        identityBackward(down, dOut, dX: dX, s2, ws)
    }
}

public final class ResNet {
    public static let depths: [Int: (bottleneck: Bool, blocks: [Int])] = [
        18: (false, [2, 2, 2, 2]), 34: (false, [3, 4, 6, 3]), 50: (true, [3, 4, 6, 3])
    ]
    public let depth: Int, width: Int, lastStride: Int
    public let outChannels: Int
    let conv1: Conv2d, bn1: BatchNorm, maxpool = MaxPool2d()
    /// Blocks grouped by stage: layer1..layer4.
    let stages: [[ResidualBlock]]
    public let input = Tensor([0]) // (3, N, H, W) channel-major copy of the batch
    let ws = Workspace()
    let gb = GradBuffers()

    /// Registers the backbone's parameters in `arena` under `prefix` ("" or "backbone.").
    public init(_ arena: Arena, prefix: String = "", depth: Int = 50, width: Int = 64, lastStride: Int = 1) {
        guard let spec = ResNet.depths[depth] else { preconditionFailure("ResNet: depth \(depth) is not 18, 34 or 50") }
        precondition(lastStride == 1 || lastStride == 2, "ResNet: last_stride must be 1 or 2")
        self.depth = depth
        self.width = width
        self.lastStride = lastStride
        conv1 = Conv2d(arena, prefix + "conv1", cin: 3, cout: width, kernel: 7, stride: 2, pad: 3)
        bn1 = BatchNorm(arena, prefix + "bn1", channels: width)
        var cin = width
        var stages: [[ResidualBlock]] = []
        let expansion = spec.bottleneck ? 4 : 1
        for (si, n) in spec.blocks.enumerated() {
            let planes = width << si
            let stride = si == 0 ? 1 : (si == 3 ? lastStride : 2)
            var blocks: [ResidualBlock] = []
            for b in 0..<n {
                let name = "\(prefix)layer\(si + 1).\(b)"
                let s = b == 0 ? stride : 1
                blocks.append(
                    spec.bottleneck
                        ? Bottleneck(arena, name, cin: cin, planes: planes, stride: s)
                        : BasicBlock(arena, name, cin: cin, planes: planes, stride: s))
                cin = planes * expansion
            }
            stages.append(blocks)
        }
        self.stages = stages
        outChannels = cin
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
        let a = bn1.forward(conv1.forward(x, ws, training: training), training: training, relu: true)
        return maxpool.forward(a)
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
            maxpool.backward(dOut.ptr, dX: d.ptr)
            gb.s1.resizeForOverwrite(conv1.output.shape)
            bn1.backward(d.ptr, dX: gb.s1.ptr)
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
