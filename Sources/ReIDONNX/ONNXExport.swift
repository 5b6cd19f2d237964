// The inference graph of a GroupedMultiBranchNet as an ONNX model.
//
// Input  "images":   float32 (N, 3, H, W), RGB pixel values 0-255, already
//                    resized to the model's H x W; N is dynamic. The
//                    normalisation (x/255 - mean)/std is inside the graph.
// Output "features": float32 (N, D), L2-normalised: what `reid-dist extract`
//                    computes for the same pixels.
//
// The backbone's batch norms are folded into the convolutions (w' = w * s,
// b = beta - mean * s, s = gamma / sqrt(var + eps), in double precision);
// global average pooling; the G group features each through their own
// BatchNormalization; concatenation; L2 normalisation as x / max(|x|, 1e-12),
// as F.normalize. With `flip`, the mirrored images go through the network in
// the same batch and each image's two unit features are summed and normalised
// again, as extract --flip does.
import Foundation
import ReIDCore
import SwiftProtobuf

public struct ONNXExportError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}

public struct ONNXExportOptions {
    /// Opset of the default domain; every operator used is unchanged from 13 to 21.
    public var opset = 17
    public var flip = false
    public var height: Int, width: Int
    public var mean: [Float], std: [Float]
    /// Copied into the model's metadata_props (the checkpoint's model card, say).
    public var metadata: [String: String] = [:]
    public var producerVersion = ""

    public init(height: Int, width: Int, mean: [Float], std: [Float]) {
        self.height = height
        self.width = width
        self.mean = mean
        self.std = std
    }
}

public enum ONNXExport {
    public static let opsets = 13...21
    public static let inputName = "images", outputName = "features"

    /// The ONNX IR version that goes with an opset (onnx/helper.py's table).
    static func irVersion(opset: Int) -> Int64 {
        switch opset {
        case ...14: return 7
        case 15...18: return 8
        case 19...20: return 9
        default: return 10
        }
    }

    /// The serialised model (protobuf bytes).
    public static func serialize(_ net: GroupedMultiBranchNet, _ options: ONNXExportOptions) throws -> Data {
        try model(net, options).serializedBytes()
    }

    public static func model(_ net: GroupedMultiBranchNet, _ o: ONNXExportOptions) throws -> Onnx_ModelProto {
        guard opsets.contains(o.opset) else {
            throw ONNXExportError(
                "--opset \(o.opset) is not supported: choose \(opsets.lowerBound) to \(opsets.upperBound)")
        }
        guard o.mean.count == 3, o.std.count == 3, o.std.allSatisfy({ $0 > 0 }) else {
            throw ONNXExportError("the model's mean/std must be 3 values each, std positive (got \(o.mean), \(o.std))")
        }
        var g = GraphBuilder(weights: WeightReader(net.arena))
        // (x - 255 mean) * 1/(255 std), per channel
        let shift = g.constant("input.shift", [1, 3, 1, 1], o.mean.map { Float(Double($0) * 255) })
        let scale = g.constant("input.scale", [1, 3, 1, 1], o.std.map { Float(1 / (Double($0) * 255)) })
        var x = g.node("Mul", [g.node("Sub", [inputName, shift], name: "normalize.sub"), scale], name: "normalize.mul")
        if o.flip {
            let starts = g.int64s("flip.starts", [-1]), ends = g.int64s("flip.ends", [Int64.min])
            let axes = g.int64s("flip.axes", [3]), steps = g.int64s("flip.steps", [-1])
            let mirrored = g.node("Slice", [x, starts, ends, axes, steps], name: "flip.mirror")
            x = g.node("Concat", [x, mirrored], name: "flip.concat", attrs: [.int("axis", 0)])
        }
        x = try g.backbone(x, graph: net.backbone.graph)
        var f = g.node(
            "Flatten", [g.node("GlobalAveragePool", [x], name: "pool")], name: "pool.flatten", attrs: [.int("axis", 1)])
        f = try g.groupBatchNorms(f, spec: net.spec, channels: net.featureChannels)
        f = g.l2Normalize(f, name: "normalize")
        if o.flip {
            let shape = g.int64s("flip.shape", [2, -1, Int64(net.featureChannels)])
            let pairs = g.node("Reshape", [f, shape], name: "flip.pairs")
            let sum = g.node(
                "ReduceSum", [pairs, g.int64s("flip.sum.axes", [0])], name: "flip.sum", attrs: [.int("keepdims", 0)])
            f = g.l2Normalize(sum, name: "flip.normalize")
        }
        g.nodes[g.nodes.count - 1].output = [outputName]

        var graph = Onnx_GraphProto()
        graph.name = "grouped_multibranch_resnet\(net.spec.depth)"
        graph.node = g.nodes
        graph.initializer = g.initializers
        graph.input = [
            valueInfo(
                inputName, dims: [.param("N"), .value(3), .value(o.height), .value(o.width)],
                doc:
                    "float32 RGB pixel values 0-255, resized to \(o.height)x\(o.width) (bilinear); normalised inside the graph"
            )
        ]
        graph.output = [
            valueInfo(
                outputName, dims: [.param("N"), .value(net.featureChannels)],
                doc:
                    "L2-normalised features (\(net.spec.groups) groups of \(net.featureChannels / net.spec.groups))"
                    + (o.flip ? ", averaged with the mirror image's" : ""))
        ]
        var m = Onnx_ModelProto()
        m.irVersion = irVersion(opset: o.opset)
        m.producerName = "reid-dist"
        m.producerVersion = o.producerVersion
        m.docString =
            "Person re-identification features (grouped multi-branch ResNet-\(net.spec.depth)). Input: "
            + graph.input[0].docString + ". Output: " + graph.output[0].docString + "."
        var opset = Onnx_OperatorSetIdProto()
        opset.domain = ""
        opset.version = Int64(o.opset)
        m.opsetImport = [opset]
        m.metadataProps = o.metadata.sorted { $0.key < $1.key }.map { k, v in
            var e = Onnx_StringStringEntryProto()
            e.key = k
            e.value = v
            return e
        }
        m.graph = graph
        return m
    }

    enum Dim {
        case param(String)
        case value(Int)
    }

    static func valueInfo(_ name: String, dims: [Dim], doc: String) -> Onnx_ValueInfoProto {
        var shape = Onnx_TensorShapeProto()
        shape.dim = dims.map { d in
            var x = Onnx_TensorShapeProto.Dimension()
            switch d {
            case .param(let p): x.dimParam = p
            case .value(let v): x.dimValue = Int64(v)
            }
            return x
        }
        var t = Onnx_TypeProto.Tensor()
        t.elemType = Int32(Onnx_TensorProto.DataType.float.rawValue)
        t.shape = shape
        var v = Onnx_ValueInfoProto()
        v.name = name
        v.docString = doc
        v.type.tensorType = t
        return v
    }
}

/// Reads a model's tensors by their PyTorch names.
struct WeightReader {
    let arena: Arena
    init(_ arena: Arena) { self.arena = arena }

    func has(_ name: String) -> Bool { arena.params.contains { $0.name == name } }

    func tensor(_ name: String) throws -> (shape: [Int], values: [Float]) {
        if let s = arena.params.first(where: { $0.name == name }) {
            return (s.shape, Array(UnsafeBufferPointer(start: arena.value + s.offset, count: s.count)))
        }
        if let s = arena.buffers.first(where: { $0.name == name }) {
            return (s.shape, Array(UnsafeBufferPointer(start: arena.buffer + s.offset, count: s.count)))
        }
        throw ONNXExportError("the model has no tensor '\(name)'")
    }
}

enum Attribute {
    case int(String, Int)
    case ints(String, [Int])
    case float(String, Float)

    var proto: Onnx_AttributeProto {
        var a = Onnx_AttributeProto()
        switch self {
        case .int(let n, let v):
            a.name = n
            a.type = .int
            a.i = Int64(v)
        case .ints(let n, let v):
            a.name = n
            a.type = .ints
            a.ints = v.map(Int64.init)
        case .float(let n, let v):
            a.name = n
            a.type = .float
            a.f = v
        }
        return a
    }
}

/// Accumulates nodes and initializers; value names are the nodes' names.
struct GraphBuilder {
    let weights: WeightReader
    var nodes: [Onnx_NodeProto] = []
    var initializers: [Onnx_TensorProto] = []
    static let eps = 1e-5 // every batch norm's, as PyTorch's default

    init(weights: WeightReader) { self.weights = weights }

    @discardableResult
    mutating func node(_ op: String, _ inputs: [String], name: String, attrs: [Attribute] = []) -> String {
        var n = Onnx_NodeProto()
        n.opType = op
        n.name = name
        n.input = inputs
        n.output = [name]
        n.attribute = attrs.map(\.proto)
        nodes.append(n)
        return name
    }

    mutating func constant(_ name: String, _ shape: [Int], _ values: [Float]) -> String {
        precondition(shape.reduce(1, *) == values.count)
        var t = Onnx_TensorProto()
        t.name = name
        t.dims = shape.map(Int64.init)
        t.dataType = Int32(Onnx_TensorProto.DataType.float.rawValue)
        t.rawData = values.withUnsafeBufferPointer { Data(buffer: $0) } // little-endian, as ONNX requires
        initializers.append(t)
        return name
    }

    mutating func int64s(_ name: String, _ values: [Int64]) -> String {
        var t = Onnx_TensorProto()
        t.name = name
        t.dims = [Int64(values.count)]
        t.dataType = Int32(Onnx_TensorProto.DataType.int64.rawValue)
        t.rawData = values.withUnsafeBufferPointer { Data(buffer: $0) }
        initializers.append(t)
        return name
    }

    /// Conv with its batch norm folded in: weight * s, bias = beta - mean * s.
    mutating func convBN(_ x: String, conv: String, bn: String, stride: Int, relu: Bool) throws -> String {
        let (shape, w) = try weights.tensor(conv + ".weight")
        let gamma = try weights.tensor(bn + ".weight").values, beta = try weights.tensor(bn + ".bias").values
        let mean = try weights.tensor(bn + ".running_mean").values,
            vars = try weights.tensor(bn + ".running_var").values
        let cout = shape[0], per = w.count / cout, k = shape[2]
        var folded = [Float](repeating: 0, count: w.count), bias = [Float](repeating: 0, count: cout)
        for o in 0..<cout {
            let s = Double(gamma[o]) / (Double(vars[o]) + Self.eps).squareRoot()
            for i in 0..<per { folded[o * per + i] = Float(Double(w[o * per + i]) * s) }
            bias[o] = Float(Double(beta[o]) - Double(mean[o]) * s)
        }
        let wName = constant(conv + ".weight", shape, folded), bName = constant(conv + ".bias", [cout], bias)
        let y = node(
            "Conv", [x, wName, bName], name: conv,
            attrs: [
                .ints("kernel_shape", [k, k]), .ints("strides", [stride, stride]),
                .ints("pads", Array(repeating: k / 2, count: 4))
            ])
        return relu ? node("Relu", [y], name: conv + ".relu") : y
    }

    /// The backbone's graph (`Backbone.graph`: for ResNet, torchvision's v1.5) with every batch
    /// norm folded into its convolution; names follow the state dict.
    mutating func backbone(_ input: String, graph: [GraphNode]) throws -> String {
        var x = input
        func chain(_ convs: [ConvBN], _ from: String) throws -> String {
            var y = from
            for c in convs { y = try convBN(y, conv: c.conv, bn: c.bn, stride: c.stride, relu: c.relu) }
            return y
        }
        for n in graph {
            switch n {
            case .convBN(let c):
                x = try chain([c], x)
            case .maxPool(let name, let k, let s, let p):
                x = node(
                    "MaxPool", [x], name: name,
                    attrs: [.ints("kernel_shape", [k, k]), .ints("strides", [s, s]), .ints("pads", [p, p, p, p])])
            case .residual(let name, _, let body, let shortcut):
                let identity = try chain(shortcut, x), y = try chain(body, x)
                x = node("Relu", [node("Add", [y, identity], name: name + ".add")], name: name + ".relu")
            }
        }
        return x
    }

    /// Split into the G groups, each group's BatchNorm1d, concatenation.
    mutating func groupBatchNorms(_ f: String, spec: ModelSpec, channels: Int) throws -> String {
        let d = channels / spec.groups
        let sizes = int64s("head.split.sizes", Array(repeating: Int64(d), count: spec.groups))
        var split = Onnx_NodeProto()
        split.opType = "Split"
        split.name = "head.split"
        split.input = [f, sizes]
        split.output = (0..<spec.groups).map { "head.groups.\($0).features" }
        split.attribute = [Attribute.int("axis", 1).proto]
        nodes.append(split)
        var outs: [String] = []
        for gi in 0..<spec.groups {
            let bn = "head.groups.\(gi).bn"
            let inputs = try ["weight", "bias", "running_mean", "running_var"].map { part -> String in
                let t = try weights.tensor(bn + "." + part)
                return constant(bn + "." + part, t.shape, t.values)
            }
            outs.append(
                node(
                    "BatchNormalization", [split.output[gi]] + inputs, name: bn,
                    attrs: [.float("epsilon", Float(Self.eps))]))
        }
        return node("Concat", outs, name: "head.concat", attrs: [.int("axis", 1)])
    }

    /// x / max(||x||_2, 1e-12) along axis 1, as torch.nn.functional.normalize.
    mutating func l2Normalize(_ x: String, name: String) -> String {
        let sq = node("Mul", [x, x], name: name + ".square")
        let sum = node(
            "ReduceSum", [sq, int64s(name + ".axes", [1])], name: name + ".sum", attrs: [.int("keepdims", 1)])
        let norm = node(
            "Max", [node("Sqrt", [sum], name: name + ".sqrt"), constant(name + ".eps", [], [1e-12])],
            name: name + ".norm")
        return node("Div", [x, norm], name: name)
    }
}
