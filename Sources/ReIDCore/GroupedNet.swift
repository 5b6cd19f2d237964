// The grouped multi-branch network of "In Defense of the Classification Loss
// for Person Re-Identification" (Zhai et al., CVPRW 2019), exactly as its PyTorch
// module Cluster/python/reid_dist_torch.py:
//   ResNet -> global average pool -> C channels split into G contiguous groups
//   -> per group BatchNorm1d -> B bias-free classifiers per group
//   loss = mean over the G*B label-smoothed cross-entropies (the default; a triplet loss on the
//          pooled feature may be added or used alone: ReIDDist's LossSpec)
//   inference feature = L2-normalise(concat of the G batch-normalised groups)
// Names: backbone.<torchvision>, head.groups.{g}.bn.*, head.groups.{g}.classifiers.{b}.weight

public struct ModelSpec: Equatable, Codable {
    public var depth = 50, width = 64, lastStride = 1, groups = 4, branches = 2, classes = 751
    public init(
        depth: Int = 50, width: Int = 64, lastStride: Int = 1, groups: Int = 4, branches: Int = 2, classes: Int = 751
    ) {
        self.depth = depth
        self.width = width
        self.lastStride = lastStride
        self.groups = groups
        self.branches = branches
        self.classes = classes
    }
    /// Channels of the pooled feature: width*8, times 4 for bottleneck depths.
    public var featureChannels: Int { width * 8 * (depth >= 50 ? 4 : 1) }
}

public final class GroupedMultiBranchNet {
    public let spec: ModelSpec
    public let arena = Arena()
    /// The backbone (`Backbone`; `spec.depth` chooses ResNet-18/34/50).
    public let backbone: any Backbone
    /// The backbone as a ResNet, for what only ResNet offers (per-stage timing and outputs).
    public var resnet: ResNet? { backbone as? ResNet }
    let bn: BatchNorm // all G groups' BatchNorm1d as one (C) layer
    let classifiers: [[Linear]] // [group][branch]
    let pool = GlobalAvgPool() // output (C, N)
    let dPooled = Tensor([0]) // (C, N)
    let dHidden = Tensor([0]) // (C, N)
    let dLogits: [[Tensor]]

    /// The model's engine options, scratch memory and profile, shared by the backbone and the head.
    public var ws: Workspace { backbone.ws }

    /// Channels of the pooled feature: the backbone's output channels.
    public var featureChannels: Int { backbone.outChannels }

    /// The network for `spec`: its ResNet, or the backbone `make` builds in the model's arena
    /// (registering its parameters there under `backbone.`) with the model's engine options.
    public init(
        _ spec: ModelSpec, seed: UInt64 = 0, options: EngineOptions = EngineOptions(),
        backbone make: ((Arena, EngineOptions) -> any Backbone)? = nil
    ) {
        let arena = self.arena
        backbone =
            make?(arena, options)
            ?? ResNet(
                arena, prefix: "backbone.", depth: spec.depth, width: spec.width, lastStride: spec.lastStride,
                options: options)
        let c = backbone.outChannels
        precondition(
            spec.groups >= 1 && c % spec.groups == 0,
            "model.groups=\(spec.groups) must divide the \(c) feature channels")
        precondition(spec.branches >= 1 && spec.classes >= 1)
        self.spec = spec
        let d = c / spec.groups
        bn = BatchNorm(arena, (0..<spec.groups).map { "head.groups.\($0).bn" }, channels: c)
        classifiers = (0..<spec.groups).map { g in
            (0..<spec.branches).map { b in
                Linear(arena, "head.groups.\(g).classifiers.\(b)", inFeatures: d, outFeatures: spec.classes, std: 0.001)
            }
        }
        dLogits = classifiers.map { $0.map { _ in Tensor([0]) } }
        arena.allocate(seed: seed)
    }

    var groupDim: Int { featureChannels / spec.groups }

    /// Training forward and loss for an NCHW batch; keeps what backward needs.
    /// Returns the mean loss over the G*B heads and the per-head correct counts summed. The
    /// gradient backward propagates is `weight` times this loss's (0: the classifiers are run for
    /// their accuracy only, as when a triplet loss alone trains the network).
    public func forwardLoss(_ x: Tensor, labels: [Int], labelSmoothing eps: Float, weight: Float = 1) -> (
        loss: Double, correct: Int
    ) {
        let n = x.shape[0]
        precondition(labels.count == n, "labels: \(labels.count) for a batch of \(n)")
        let fmap = backbone.forward(nchw: x, training: true)
        let h = bn.forward(pool.forward(fmap, ws), training: true, ws)
        let heads = spec.groups * spec.branches
        var loss = 0.0, correct = 0
        for g in 0..<spec.groups {
            for b in 0..<spec.branches {
                let z = classifiers[g][b].forward(h, rows: (g * groupDim)..<((g + 1) * groupDim))
                dLogits[g][b].resizeForOverwrite(z.shape)
                let r = CrossEntropy.forward(
                    logits: z.ptr, labels: labels, classes: spec.classes, eps: eps,
                    dLogits: dLogits[g][b].ptr, scale: weight / Float(heads))
                loss += r.loss
                correct += r.correct
            }
        }
        return (loss / Double(heads), correct)
    }

    /// The pooled feature of the last training forward, (C, N): before the group batch norms, what
    /// a metric loss sees (BNNeck: cross-entropy after the batch norms, triplet before them).
    public var pooledFeatures: Tensor { pool.output }

    /// Adds the gradient of the last `forwardLoss` into `arena.grad`, plus, given `featureGrad`
    /// ((C, N), another loss's gradient with respect to `pooledFeatures`), that one's; `ready`
    /// is told each arena offset from which on all gradients are final.
    public func backward(featureGrad: UnsafePointer<Float>? = nil, ready: ((Int) -> Void)? = nil) {
        let c = pool.output.shape[0], n = pool.output.shape[1], d = groupDim
        dHidden.resizeForOverwrite([c, n])
        for g in 0..<spec.groups {
            for b in 0..<spec.branches {
                classifiers[g][b].backward(dLogits[g][b].ptr, dX: dHidden.ptr + g * d * n, accumulate: b > 0)
            }
        }
        dPooled.resizeForOverwrite([c, n])
        bn.backward(dHidden.ptr, dX: dPooled.ptr, ws)
        if let featureGrad { for i in 0..<(c * n) { dPooled.ptr[i] += featureGrad[i] } }
        ready?(bn.weight) // the head's parameters follow the backbone's
        let dMap = backbone.featureGradBuffer(pool.inputShape)
        pool.backward(dPooled.ptr, dX: dMap.ptr, ws)
        backbone.backward(dMap, ready: ready)
    }

    /// Inference features (N, C): running-statistics BN, concatenated, L2-normalised.
    public func features(_ x: Tensor) -> Tensor {
        let n = x.shape[0]
        let fmap = backbone.forward(nchw: x, training: false)
        let c = fmap.shape[0]
        let h = bn.forward(pool.forward(fmap, ws), training: false, ws)
        let out = Tensor([n, c])
        swapLeadingAxes(out.ptr, h.ptr, c, n, 1)
        for i in 0..<n {
            let row = out.ptr + i * c
            let norm = Swift.max(vdot(row, row, c).squareRoot(), 1e-12)
            for j in 0..<c { row[j] /= norm }
        }
        return out
    }
}
