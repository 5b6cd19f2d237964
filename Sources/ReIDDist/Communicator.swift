// Communicators: the one interface through which ranks talk. The MPI one
// wraps CMPIShim; the single-process one makes every collective a no-op, so
// the same trainer runs with no launcher. Open MPI's launcher is detected
// through its environment (OMPI_COMM_WORLD_SIZE).
import CMPIShim
import Foundation

/// How gradients travel between ranks (train.grad_dtype): float32, or converted to 16 bits
/// for the all-reduce only (as Horovod's fp16 compression), the sums done in float, the
/// result widened back to float32 for the optimizer.
public enum WireType: String, CaseIterable {
    case float32, bfloat16, float16
    var code: Int32 { self == .bfloat16 ? 1 : 2 }

    /// float32 -> this 16-bit type, rounding to nearest even.
    public func narrow(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<UInt16>, _ n: Int) {
        rd_to_half(src, dst, n, code)
    }
    /// this 16-bit type -> float32, times `scale`.
    public func widen(_ src: UnsafePointer<UInt16>, _ dst: UnsafeMutablePointer<Float>, _ n: Int, scale: Float = 1) {
        rd_from_half(src, dst, n, code, scale)
    }
}

/// How far MPI lets threads call it (MPI_THREAD_SINGLE ... MPI_THREAD_MULTIPLE).
public enum ThreadLevel: Int, Comparable, CustomStringConvertible {
    case single, funneled, serialized, multiple
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "MPI_THREAD_" + ["SINGLE", "FUNNELED", "SERIALIZED", "MULTIPLE"][rawValue] }
}

public protocol Communicator: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// This process's rank among the ranks on its node, and their number.
    var localRank: Int { get }
    var localSize: Int { get }
    /// The thread support MPI granted (a single process supports any).
    var threadLevel: ThreadLevel { get }
    /// In-place sum over ranks.
    func allreduceSum(_ data: UnsafeMutablePointer<Float>, _ count: Int) throws
    func allreduceSum(_ data: UnsafeMutablePointer<Double>, _ count: Int) throws
    /// Rank `root`'s bytes into every rank's buffer.
    func broadcast(_ data: UnsafeMutableRawPointer, bytes: Int, root: Int) throws
    /// Every rank's `bytes` bytes, in rank order.
    func allgather(_ data: UnsafeRawPointer, bytes: Int) throws -> [UInt8]
    /// Every rank's `count` floats, in rank order, at `root` (nil elsewhere).
    func gather(_ data: UnsafePointer<Float>, _ count: Int, root: Int) throws -> [Float]?
    func barrier() throws
    /// Non-blocking in-place sum; finish it with `test` or `wait`.
    func startAllreduce(_ data: UnsafeMutablePointer<Float>, _ count: Int) throws -> Int64
    /// The same for 16-bit values (bfloat16 or float16, `WireType`), summed in float.
    func allreduceSumHalf(_ data: UnsafeMutablePointer<UInt16>, _ count: Int, _ kind: WireType) throws
    func startAllreduceHalf(_ data: UnsafeMutablePointer<UInt16>, _ count: Int, _ kind: WireType) throws -> Int64
    /// True once the request completed (it is then released).
    func test(_ request: inout Int64) throws -> Bool
    func wait(_ request: inout Int64) throws
    /// Ends the whole job with a non-zero status (never returns).
    func abort(_ code: Int32) -> Never
    /// Heartbeats, for naming a rank that stopped answering: answer pending pings (called now
    /// and then from the watchdog's thread), and ping every other rank, returning those that
    /// did not answer within `seconds` (nil when this communicator has no heartbeats).
    func heartbeatServe()
    func unresponsiveRanks(within seconds: Double) -> [Int]?
}

extension Communicator {
    public var isRoot: Bool { rank == 0 }
    /// Mean over ranks: sum, then scale by 1/size (MPI has no mean).
    public func allreduceMean(_ data: UnsafeMutablePointer<Float>, _ count: Int) throws {
        if size == 1 { return }
        try allreduceSum(data, count)
        let s = 1 / Float(size)
        for i in 0..<count { data[i] *= s }
    }

    /// Every rank's `values` (the same count on every rank), indexed [rank][i].
    public func allgather(_ values: [Double]) throws -> [[Double]] {
        let bytes = try values.withUnsafeBytes { try allgather($0.baseAddress!, bytes: $0.count) }
        let flat = bytes.withUnsafeBytes { Array($0.bindMemory(to: Double.self)) }
        return (0..<size).map { Array(flat[($0 * values.count)..<(($0 + 1) * values.count)]) }
    }

    /// Every rank's `values`, whose counts may differ between ranks, indexed [rank][i].
    public func allgatherVariable(_ values: [Double]) throws -> [[Double]] {
        let counts = try allgather([Double(values.count)]).map { Int($0[0]) }
        let longest = Swift.max(1, counts.max() ?? 1)
        let all = try allgather(values + [Double](repeating: 0, count: longest - values.count))
        return zip(all, counts).map { Array($0.prefix($1)) }
    }

    /// `root`'s `value`, on every rank: encoded as JSON, its length broadcast, then its bytes.
    /// Doubles keep every bit (JSON's shortest round-trip digits).
    public func broadcast<T: Codable>(_ value: T, root: Int) throws -> T {
        guard size > 1 else { return value }
        var bytes = rank == root ? [UInt8](try JSONEncoder().encode(value)) : []
        var length = [Int64(bytes.count)]
        try length.withUnsafeMutableBytes { try broadcast($0.baseAddress!, bytes: $0.count, root: root) }
        guard length[0] > 0, length[0] < 1 << 30 else {
            throw CommError("a broadcast value of \(length[0]) bytes from rank \(root)")
        }
        if rank != root { bytes = [UInt8](repeating: 0, count: Int(length[0])) }
        try bytes.withUnsafeMutableBytes { try broadcast($0.baseAddress!, bytes: $0.count, root: root) }
        return try JSONDecoder().decode(T.self, from: Data(bytes))
    }
}

public final class SingleProcess: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public var localRank: Int { 0 }
    public var localSize: Int { 1 }
    public var threadLevel: ThreadLevel { .multiple }
    public func allreduceSum(_ data: UnsafeMutablePointer<Float>, _ count: Int) {}
    public func allreduceSum(_ data: UnsafeMutablePointer<Double>, _ count: Int) {}
    public func broadcast(_ data: UnsafeMutableRawPointer, bytes: Int, root: Int) {}
    public func allgather(_ data: UnsafeRawPointer, bytes: Int) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: data, count: bytes))
    }
    public func gather(_ data: UnsafePointer<Float>, _ count: Int, root: Int) -> [Float]? {
        Array(UnsafeBufferPointer(start: data, count: count))
    }
    public func barrier() {}
    public func startAllreduce(_ data: UnsafeMutablePointer<Float>, _ count: Int) -> Int64 { 0 }
    public func allreduceSumHalf(_ data: UnsafeMutablePointer<UInt16>, _ count: Int, _ kind: WireType) {}
    public func startAllreduceHalf(_ data: UnsafeMutablePointer<UInt16>, _ count: Int, _ kind: WireType) -> Int64 { 0 }
    public func test(_ request: inout Int64) -> Bool { true }
    public func wait(_ request: inout Int64) {}
    public func abort(_ code: Int32) -> Never { exit(code) }
    public func heartbeatServe() {}
    public func unresponsiveRanks(within seconds: Double) -> [Int]? { nil }
}

public final class MPICommunicator: Communicator {
    public let rank: Int, size: Int, localRank: Int, localSize: Int
    public let threadLevel: ThreadLevel
    let heartbeats: Bool

    /// How a process was started, read from its environment.
    public enum Launch: Equatable {
        /// By an MPI launcher: mpirun (OMPI_COMM_WORLD_SIZE) or a PMIx/PMI direct launch such as
        /// `srun --mpi=pmix` (PMIX_RANK, PMI_RANK); `ranks` is how many processes it says it started.
        case mpi(ranks: Int?)
        case alone
        /// One of several tasks of a launcher MPI cannot join: each would train alone.
        case refused(String)
    }

    public static func launch(_ env: [String: String] = ProcessInfo.processInfo.environment) -> Launch {
        if let n = env["OMPI_COMM_WORLD_SIZE"] { return .mpi(ranks: Int(n)) }
        if env["PMIX_RANK"] != nil || env["PMI_RANK"] != nil {
            return .mpi(ranks: env["SLURM_STEP_NUM_TASKS"].flatMap { Int($0) } ?? env["PMI_SIZE"].flatMap { Int($0) })
        }
        if let t = env["SLURM_STEP_NUM_TASKS"].flatMap({ Int($0) }), t > 1 {
            return .refused(
                "this is one of \(t) tasks started by srun without MPI (no PMIx/PMI in the environment): each would train alone into the same run folder. Launch with mpirun inside the allocation (Cluster/slurm/train.sbatch) or with srun --mpi=pmix"
            )
        }
        return .alone
    }

    /// The communicator this process was started for: MPI under a launcher, else a single process.
    /// Fails when the launcher's processes did not join one MPI job (each would train alone).
    public static func forThisProcess() throws -> Communicator {
        switch launch() {
        case .alone: return SingleProcess()
        case .refused(let why): throw CommError(why)
        case .mpi(let ranks):
            let c = try MPICommunicator()
            if let ranks, ranks != c.size {
                throw CommError(
                    "the launcher started \(ranks) processes but MPI_Init made a job of \(c.size): this Open MPI cannot reach the launcher (srun needs --mpi=pmix and a PMIx-enabled Slurm; or use mpirun)"
                )
            }
            return c
        }
    }

    public init() throws {
        var provided: Int32 = 0
        try MPICommunicator.check(rd_mpi_init(&provided), "MPI_Init_thread")
        var r: Int32 = 0, s: Int32 = 0, l: Int32 = 0, ls: Int32 = 0
        try MPICommunicator.check(rd_mpi_rank(&r), "MPI_Comm_rank")
        try MPICommunicator.check(rd_mpi_size(&s), "MPI_Comm_size")
        try MPICommunicator.check(rd_mpi_node(&l, &ls), "MPI_Comm_split_type")
        rank = Int(r)
        size = Int(s)
        localRank = Int(l)
        localSize = Int(ls)
        threadLevel = ThreadLevel(rawValue: Int(provided)) ?? .single
        // Heartbeats come from a third thread: only where MPI allows calls from any thread at once.
        heartbeats = threadLevel == .multiple && size > 1 && rd_mpi_heartbeat_init() == 0
    }

    static func check(_ rc: Int32, _ what: String) throws {
        guard rc != 0 else { return }
        var buf = [CChar](repeating: 0, count: 512)
        rd_mpi_error_string(rc, &buf, buf.count)
        throw CommError("\(what) failed: \(String(cString: buf))")
    }

    public func allreduceSum(_ data: UnsafeMutablePointer<Float>, _ count: Int) throws {
        try Self.check(rd_mpi_allreduce_sum_f32(data, count), "MPI_Allreduce")
    }
    public func allreduceSum(_ data: UnsafeMutablePointer<Double>, _ count: Int) throws {
        try Self.check(rd_mpi_allreduce_sum_f64(data, count), "MPI_Allreduce")
    }
    public func broadcast(_ data: UnsafeMutableRawPointer, bytes: Int, root: Int) throws {
        try Self.check(rd_mpi_bcast(data, bytes, Int32(root)), "MPI_Bcast")
    }
    public func allgather(_ data: UnsafeRawPointer, bytes: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: bytes * size)
        try out.withUnsafeMutableBytes {
            try Self.check(rd_mpi_allgather(data, bytes, $0.baseAddress!), "MPI_Allgather")
        }
        return out
    }
    public func gather(_ data: UnsafePointer<Float>, _ count: Int, root: Int) throws -> [Float]? {
        var out = [Float](repeating: 0, count: rank == root ? count * size : 0)
        try out.withUnsafeMutableBufferPointer {
            try Self.check(rd_mpi_gather_f32(data, count, $0.baseAddress, Int32(root)), "MPI_Gather")
        }
        return rank == root ? out : nil
    }
    public func barrier() throws { try Self.check(rd_mpi_barrier(), "MPI_Barrier") }
    public func abort(_ code: Int32) -> Never {
        _ = rd_mpi_abort(code)
        exit(code)
    }

    /// Non-blocking in-place sum, for overlapping communication with backward.
    public func startAllreduce(_ data: UnsafeMutablePointer<Float>, _ count: Int) throws -> Int64 {
        var req: Int64 = 0
        try Self.check(rd_mpi_iallreduce_sum_f32(data, count, &req), "MPI_Iallreduce")
        return req
    }
    public func allreduceSumHalf(_ data: UnsafeMutablePointer<UInt16>, _ count: Int, _ kind: WireType) throws {
        try Self.check(rd_mpi_allreduce_sum_half(data, count, kind.code), "MPI_Allreduce (\(kind.rawValue))")
    }
    public func startAllreduceHalf(_ data: UnsafeMutablePointer<UInt16>, _ count: Int, _ kind: WireType) throws -> Int64
    {
        var req: Int64 = 0
        try Self.check(rd_mpi_iallreduce_sum_half(data, count, kind.code, &req), "MPI_Iallreduce (\(kind.rawValue))")
        return req
    }
    public func test(_ req: inout Int64) throws -> Bool {
        var done: Int32 = 0
        try Self.check(rd_mpi_test(&req, &done), "MPI_Test")
        return done != 0
    }
    public func wait(_ req: inout Int64) throws { try Self.check(rd_mpi_wait(&req), "MPI_Wait") }

    public func finalize() { _ = rd_mpi_finalize() }

    public func heartbeatServe() { if heartbeats { _ = rd_mpi_heartbeat_serve() } }
    public func unresponsiveRanks(within seconds: Double) -> [Int]? {
        guard heartbeats else { return nil }
        var answered = [Int32](repeating: 0, count: size)
        guard rd_mpi_heartbeat_probe(seconds, &answered) == 0 else { return nil }
        return answered.indices.filter { answered[$0] == 0 }
    }
}
