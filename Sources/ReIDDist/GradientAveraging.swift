// Gradient averaging: how a step's gradients become the mean over the
// data-parallel world, behind one interface so that the training step never
// asks how many ranks there are. Four ways:
//   LocalGradients     one process, one replica: nothing to do
//   SimulatedRanks     N replicas computed in turn by one process
//                      (--simulate-ranks N): each owns its batch-norm
//                      statistics; whole replica gradients summed in rank order
//                      (as the all-reduce sums them), then x 1/N
//   BlockingAllreduce  MPI: one all-reduce of the whole arena after backward
//   BucketedAllreduce  MPI: buckets all-reduced on a communication thread
//                      while backward still runs (GradientSync.swift)
// The step calls, in order: beginStep; per local replica enter, forward,
// backward (reporting gradientsFinal), leave; then finish.
import Foundation
import ReIDCore

/// One bucket's all-reduce in a step: seconds from `beginStep`.
public struct BucketEvent {
    public let bucket: Int, start: Double, end: Double
}

public protocol GradientAveraging: AnyObject {
    /// Ranks in the data-parallel world.
    var worldSize: Int { get }
    /// The ranks whose batches this process computes each step, in order.
    var localRanks: [Int] { get }
    /// How gradients are averaged, for the log.
    var description: String { get }
    /// A step begins; the arena's gradients have just been zeroed.
    func beginStep()
    /// Replica `rank`'s state into the model before its forward, and back out after its backward.
    func enter(rank: Int)
    func leave(rank: Int)
    /// Backward's report: every gradient at arena offsets >= `offset` is final.
    func gradientsFinal(from offset: Int) throws
    /// On return the arena's gradients are the mean over the world.
    func finish() throws
    /// The last step's bucket all-reduces (empty when there are no buckets).
    var bucketEvents: [BucketEvent] { get }
    /// Batch-norm running statistics averaged over the world (before evaluation and checkpoints).
    func averageBatchNorm() throws
    /// The model's batch-norm statistics become every replica's (after loading a checkpoint).
    func adoptModelState()
    /// Every replica's batch-norm buffers, [rank][bufferCount] flattened, at rank 0 (nil
    /// elsewhere): what a mid-epoch checkpoint keeps, as they differ until the epoch ends.
    func replicaBuffers() throws -> [Float]?
    /// The inverse: each replica takes its row of `all` (given at rank 0; nil elsewhere).
    func restoreReplicaBuffers(_ all: [Float]?) throws
    /// Ends any helper thread; the next step starts it again.
    func close()
}

extension GradientAveraging {
    public var bucketEvents: [BucketEvent] { [] }

    public func enter(rank: Int) {}
    public func leave(rank: Int) {}
    public func gradientsFinal(from offset: Int) throws {}
    public func adoptModelState() {}
    public func close() {}
}

/// The averaging a run needs: MPI's when launched under MPI (bucketed unless
/// `bucketBytes` is 0), simulated replicas for `simulatedRanks` > 1, else none.
/// `wire`: the gradients' type in the all-reduce (train.grad_dtype); it matters only under MPI.
public func makeGradientAveraging(
    comm: Communicator, simulatedRanks: Int, arena: Arena, bucketBytes: Int,
    wire: WireType = .float32
) throws -> GradientAveraging {
    precondition(simulatedRanks >= 1)
    if comm.size > 1 {
        guard simulatedRanks == 1 else {
            throw ConfigError("--simulate-ranks is for runs without a launcher (this one has \(comm.size) MPI ranks)")
        }
        return bucketBytes > 0
            ? try BucketedAllreduce(comm: comm, arena: arena, bucketBytes: bucketBytes, wire: wire)
            : BlockingAllreduce(comm: comm, arena: arena, wire: wire)
    }
    return simulatedRanks > 1 ? SimulatedRanks(simulatedRanks, arena: arena) : LocalGradients(arena: arena)
}

/// The model's own batch-norm buffers as one row.
func buffersOf(_ arena: Arena) -> [Float] { Array(UnsafeBufferPointer(start: arena.buffer, count: arena.bufferCount)) }

public final class LocalGradients: GradientAveraging {
    let arena: Arena
    public init(arena: Arena) { self.arena = arena }
    public var worldSize: Int { 1 }
    public var localRanks: [Int] { [0] }
    public var description: String { "one process" }
    public func beginStep() {}
    public func finish() {}
    public func averageBatchNorm() {}
    public func replicaBuffers() -> [Float]? { buffersOf(arena) }
    public func restoreReplicaBuffers(_ all: [Float]?) { arena.buffer.update(from: all!, count: arena.bufferCount) }
}

/// MPI ranks' buffers gathered at rank 0, and scattered back (by a broadcast: they are small).
func gatherBuffers(_ comm: Communicator, _ arena: Arena) throws -> [Float]? {
    try comm.gather(arena.buffer, arena.bufferCount, root: 0)
}
func scatterBuffers(_ comm: Communicator, _ arena: Arena, _ all: [Float]?) throws {
    let n = arena.bufferCount
    var rows = all ?? [Float](repeating: 0, count: n * comm.size)
    try rows.withUnsafeMutableBytes { try comm.broadcast($0.baseAddress!, bytes: $0.count, root: 0) }
    rows.withUnsafeBufferPointer { arena.buffer.update(from: $0.baseAddress! + comm.rank * n, count: n) }
}

/// N data-parallel ranks computed in turn by one process, exactly as N MPI
/// ranks would compute them: each replica keeps its own batch-norm running
/// statistics and counters, swapped into the model around its forward and
/// backward; each replica's gradient is summed in rank order (`leave`) and
/// the sum scaled by 1/N.
public final class SimulatedRanks: GradientAveraging {
    let arena: Arena
    public let worldSize: Int
    var buffers: [[Float]], counters: [[Int64]]

    public init(_ n: Int, arena: Arena) {
        self.arena = arena
        worldSize = n
        buffers = Array(repeating: Array(UnsafeBufferPointer(start: arena.buffer, count: arena.bufferCount)), count: n)
        counters = Array(repeating: arena.counters, count: n)
    }

    public var localRanks: [Int] { Array(0..<worldSize) }
    public var description: String { "\(worldSize) simulated ranks in one process" }
    public func beginStep() {}

    public func enter(rank r: Int) {
        arena.buffer.update(from: buffers[r], count: arena.bufferCount)
        arena.counters = counters[r]
    }

    /// The replicas' gradients so far, summed in rank order.
    var sum: [Float] = []

    /// Keeps the replica's batch-norm state, and moves its gradient into the sum: each replica's
    /// backward then starts from zero gradients as an MPI rank's does, and the sum adds whole
    /// replica gradients in rank order, as the all-reduce does, so that simulated and MPI ranks
    /// compute the same bits (a batch-hard triplet loss makes training chaotic enough that
    /// different rounding in the sum grew from 1e-8 to 1e-3 of the loss in three steps).
    public func leave(rank r: Int) {
        saveState(rank: r)
        let g = arena.grad, n = arena.paramCount
        if r == 0 { sum = Array(UnsafeBufferPointer(start: g, count: n)) } else { for i in 0..<n { sum[i] += g[i] } }
        g.update(repeating: 0, count: n)
    }

    func saveState(rank r: Int) {
        let src = arena.buffer, n = arena.bufferCount
        buffers[r].withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: src, count: n) }
        counters[r] = arena.counters
    }

    public func finish() {
        let g = arena.grad, k = 1 / Float(worldSize)
        for i in 0..<arena.paramCount { g[i] = sum[i] * k }
    }

    public func averageBatchNorm() {
        let n = arena.bufferCount
        var mean = [Float](repeating: 0, count: n)
        for r in buffers { for i in 0..<n { mean[i] += r[i] } }
        for i in 0..<n { mean[i] /= Float(worldSize) }
        for r in 0..<worldSize { buffers[r] = mean }
        arena.buffer.update(from: mean, count: n)
    }

    public func adoptModelState() {
        for r in 0..<worldSize { saveState(rank: r) }
    }

    public func replicaBuffers() -> [Float]? { buffers.flatMap { $0 } }
    public func restoreReplicaBuffers(_ all: [Float]?) {
        let n = arena.bufferCount
        for r in 0..<worldSize { buffers[r] = Array(all![(r * n)..<((r + 1) * n)]) }
        arena.buffer.update(from: buffers[0], count: n)
    }
}

/// MPI: the whole gradient arena summed over ranks after backward, then x 1/N.
public final class BlockingAllreduce: GradientAveraging {
    let comm: Communicator, arena: Arena, wire: WireType
    private var stage: [UInt16] = []
    public init(comm: Communicator, arena: Arena, wire: WireType = .float32) {
        self.comm = comm
        self.arena = arena
        self.wire = wire
    }
    public var worldSize: Int { comm.size }
    public var localRanks: [Int] { [comm.rank] }
    public var description: String {
        "\(comm.size) MPI ranks, one blocking all-reduce after backward (train.bucket_mb 0)\(wire == .float32 ? "" : ", gradients sent as \(wire)")"
    }
    public func beginStep() {}
    public func finish() throws {
        guard wire != .float32 else {
            try comm.allreduceMean(arena.grad, arena.paramCount)
            return
        }
        let n = arena.paramCount
        if stage.count != n { stage = [UInt16](repeating: 0, count: n) }
        try stage.withUnsafeMutableBufferPointer { s in
            wire.narrow(arena.grad, s.baseAddress!, n)
            try comm.allreduceSumHalf(s.baseAddress!, n, wire)
            wire.widen(s.baseAddress!, arena.grad, n, scale: 1 / Float(comm.size))
        }
    }
    public func averageBatchNorm() throws { try comm.allreduceMean(arena.buffer, arena.bufferCount) }
    public func replicaBuffers() throws -> [Float]? { try gatherBuffers(comm, arena) }
    public func restoreReplicaBuffers(_ all: [Float]?) throws { try scatterBuffers(comm, arena, all) }
}

/// MPI: buckets of the gradient arena all-reduced on a communication thread as
/// backward finishes them (GradientSync). That thread makes MPI calls while the
/// main thread computes, never at the same time as it: MPI must grant at least
/// MPI_THREAD_SERIALIZED.
public final class BucketedAllreduce: GradientAveraging {
    let comm: Communicator, arena: Arena, bucketBytes: Int, wire: WireType
    private var sync: GradientSync?

    public init(comm: Communicator, arena: Arena, bucketBytes: Int, wire: WireType = .float32) throws {
        guard comm.threadLevel >= .serialized else {
            throw CommError(
                "the overlapped gradient all-reduce (train.bucket_mb = \(Double(bucketBytes) / 1_048_576)) calls MPI from a second thread, "
                    + "which needs MPI_THREAD_SERIALIZED or MPI_THREAD_MULTIPLE; this MPI granted \(comm.threadLevel). "
                    + "Use an MPI built with thread support, or set train.bucket_mb=0 (one blocking all-reduce after backward)"
            )
        }
        self.comm = comm
        self.arena = arena
        self.bucketBytes = bucketBytes
        self.wire = wire
    }

    public var worldSize: Int { comm.size }
    public var localRanks: [Int] { [comm.rank] }
    public var description: String {
        "\(comm.size) MPI ranks, gradient all-reduce in buckets of at most \(String(format: "%.1f", Double(bucketBytes) / 1_048_576)) MB overlapped with backward (\(comm.threadLevel))\(wire == .float32 ? "" : ", gradients sent as \(wire)")"
    }

    public func beginStep() {
        if sync == nil {
            sync = GradientSync(
                comm: comm, grad: arena.grad, count: arena.paramCount, bucketBytes: bucketBytes, wire: wire)
        }
        sync!.beginStep()
    }
    public func gradientsFinal(from offset: Int) throws { try sync?.ready(offset) }
    public func finish() throws { try sync?.finish() }
    public var bucketEvents: [BucketEvent] {
        sync?.events.map { BucketEvent(bucket: $0.bucket, start: $0.start, end: $0.end) } ?? []
    }
    public func averageBatchNorm() throws { try comm.allreduceMean(arena.buffer, arena.bufferCount) }
    public func replicaBuffers() throws -> [Float]? { try gatherBuffers(comm, arena) }
    public func restoreReplicaBuffers(_ all: [Float]?) throws { try scatterBuffers(comm, arena, all) }
    public func close() {
        sync?.close()
        sync = nil
    }
    deinit { close() }
}
