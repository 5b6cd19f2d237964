// Tensor: a contiguous Float32 buffer with a shape, owned by the object.
//
// Activations in this engine are channel-major, (C, N, H, W) ("CNHW"): every
// convolution then becomes one GEMM over the whole batch, batch norm reads
// each channel as one contiguous run, and a channel group of the pooled
// feature (C, N) is a contiguous block of rows. Inputs and outputs at the
// model's edges use PyTorch's NCHW / (N, C) and are converted there.

/// A contiguous, owned Float32 buffer. Hot loops use `ptr` directly.
public final class Tensor {
    public private(set) var shape: [Int]
    public private(set) var count: Int
    public private(set) var ptr: UnsafeMutablePointer<Float>
    private var capacity: Int

    public init(_ shape: [Int], zero: Bool = true) {
        self.shape = shape
        self.count = shape.reduce(1, *)
        self.capacity = Swift.max(count, 1)
        self.ptr = .allocate(capacity: capacity)
        if zero { ptr.initialize(repeating: 0, count: capacity) }
    }

    public convenience init(_ shape: [Int], _ values: [Float]) {
        precondition(values.count == shape.reduce(1, *), "Tensor: \(values.count) values for shape \(shape)")
        self.init(shape, zero: false)
        values.withUnsafeBufferPointer { ptr.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit { ptr.deallocate() }

    /// Gives the tensor a new shape (any element count) for the caller to overwrite:
    /// the buffer is reallocated only when it must grow, and the contents are
    /// unspecified afterwards (not a view or a reinterpretation of the old data).
    public func resizeForOverwrite(_ newShape: [Int]) {
        let n = newShape.reduce(1, *)
        if n > capacity {
            ptr.deallocate()
            capacity = n
            ptr = .allocate(capacity: n)
            ptr.initialize(repeating: 0, count: n)
        }
        shape = newShape
        count = n
    }

    public var buffer: UnsafeMutableBufferPointer<Float> { .init(start: ptr, count: count) }
    public var array: [Float] { Array(buffer) }
    public func zero() { ptr.update(repeating: 0, count: count) }
    public func copy(from other: Tensor) {
        precondition(other.count == count)
        ptr.update(from: other.ptr, count: count)
    }
}

/// Reorders (A, B, inner) to (B, A, inner): NCHW <-> CNHW with inner = H*W.
public func swapLeadingAxes(
    _ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>,
    _ a: Int, _ b: Int, _ inner: Int
) {
    for i in 0..<a {
        for j in 0..<b {
            (dst + (j * a + i) * inner).update(from: src + (i * b + j) * inner, count: inner)
        }
    }
}
