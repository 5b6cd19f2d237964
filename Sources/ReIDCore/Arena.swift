// Arena: every parameter and its gradient in one flat allocation each, plus
// the non-trainable buffers (batch-norm running statistics) in a third.
//
// Layers register named slices while the model is built; `allocate(seed:)`
// then makes the three blocks and initialises each parameter. An optimizer
// step, a gradient zeroing and (later) a gradient all-reduce are single
// passes over contiguous memory. Names and shapes follow PyTorch's.

/// How a parameter is initialised (torchvision's choices).
public enum ParamInit {
    case zeros, ones
    case normal(std: Double)
    /// Kaiming normal, mode fan_out, ReLU gain: std = sqrt(2 / fan_out).
    case kaimingFanOut(fanOut: Int)
}

/// A named slice of the parameter, gradient or buffer block.
public struct Slot {
    public let name: String
    public let shape: [Int]
    public let offset: Int
    public var count: Int { shape.reduce(1, *) }
}

public final class Arena {
    public private(set) var params: [Slot] = []
    public private(set) var buffers: [Slot] = []
    /// `num_batches_tracked` of each batch norm, saved as I64 scalars.
    public private(set) var counterNames: [String] = []
    public var counters: [Int64] = []
    private var inits: [ParamInit] = []
    private var bufferInits: [Float] = []

    public private(set) var paramCount = 0
    public private(set) var bufferCount = 0
    public private(set) var value: UnsafeMutablePointer<Float> = .allocate(capacity: 1)
    public private(set) var grad: UnsafeMutablePointer<Float> = .allocate(capacity: 1)
    public private(set) var buffer: UnsafeMutablePointer<Float> = .allocate(capacity: 1)
    public private(set) var allocated = false

    public init() {}
    deinit {
        value.deallocate()
        grad.deallocate()
        buffer.deallocate()
    }

    /// Registers a trainable parameter; returns its offset in `value`/`grad`.
    @discardableResult
    public func param(_ name: String, _ shape: [Int], _ initial: ParamInit) -> Int {
        precondition(!allocated, "Arena: parameters must be registered before allocate()")
        let s = Slot(name: name, shape: shape, offset: paramCount)
        params.append(s)
        inits.append(initial)
        paramCount += s.count
        return s.offset
    }

    /// Registers a non-trainable float buffer filled with `fill`.
    @discardableResult
    public func buffer(_ name: String, _ shape: [Int], fill: Float) -> Int {
        precondition(!allocated, "Arena: buffers must be registered before allocate()")
        let s = Slot(name: name, shape: shape, offset: bufferCount)
        buffers.append(s)
        bufferInits.append(fill)
        bufferCount += s.count
        return s.offset
    }

    /// Registers an integer counter (num_batches_tracked); returns its index.
    public func counter(_ name: String) -> Int {
        counterNames.append(name)
        counters.append(0)
        return counters.count - 1
    }

    /// Allocates the blocks and initialises every parameter from `seed`,
    /// each slot from its own stream so adding a layer never shifts others.
    public func allocate(seed: UInt64) {
        precondition(!allocated)
        value.deallocate()
        grad.deallocate()
        buffer.deallocate()
        value = .allocate(capacity: Swift.max(paramCount, 1))
        grad = .allocate(capacity: Swift.max(paramCount, 1))
        buffer = .allocate(capacity: Swift.max(bufferCount, 1))
        value.initialize(repeating: 0, count: Swift.max(paramCount, 1))
        grad.initialize(repeating: 0, count: Swift.max(paramCount, 1))
        buffer.initialize(repeating: 0, count: Swift.max(bufferCount, 1))
        for (i, s) in params.enumerated() {
            var rng = RNG(key: seed, UInt64(i))
            let p = value + s.offset
            switch inits[i] {
            case .zeros: p.update(repeating: 0, count: s.count)
            case .ones: p.update(repeating: 1, count: s.count)
            case .normal(let std):
                for j in 0..<s.count { p[j] = Float(rng.normal() * std) }
            case .kaimingFanOut(let fanOut):
                let std = (2.0 / Double(fanOut)).squareRoot()
                for j in 0..<s.count { p[j] = Float(rng.normal() * std) }
            }
        }
        for (i, s) in buffers.enumerated() {
            (buffer + s.offset).update(repeating: bufferInits[i], count: s.count)
        }
        allocated = true
    }

    public func zeroGrad() { grad.update(repeating: 0, count: paramCount) }

    /// The first parameter or buffer that holds a NaN or an infinity, or a batch-norm running
    /// variance below zero, described by name ("backbone.conv1.weight[17] is nan"); nil if none.
    public func firstNonFinite() -> String? {
        for s in params {
            let p = value + s.offset
            for i in 0..<s.count where !p[i].isFinite { return "\(s.name)[\(i)] is \(p[i])" }
        }
        for s in buffers {
            let p = buffer + s.offset
            let isVar = s.name.hasSuffix("running_var")
            for i in 0..<s.count where !p[i].isFinite || (isVar && p[i] < 0) { return "\(s.name)[\(i)] is \(p[i])" }
        }
        return nil
    }
}
