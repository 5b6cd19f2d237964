// Communicators: the one interface through which ranks talk. The MPI one
// wraps CMPIShim; the single-process one makes every collective a no-op, so
// the same trainer runs with no launcher. Open MPI's launcher is detected
// through its environment (OMPI_COMM_WORLD_SIZE).
import CMPIShim
import Foundation

public struct CommError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

public protocol Communicator: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    var localRank: Int { get }
    /// In-place sum over ranks.
    func allreduceSum(_ data: UnsafeMutablePointer<Float>, _ count: Int) throws
    func allreduceSum(_ data: UnsafeMutablePointer<Double>, _ count: Int) throws
    /// Rank `root`'s bytes into every rank's buffer.
    func broadcast(_ data: UnsafeMutableRawPointer, bytes: Int, root: Int) throws
    /// Every rank's `bytes` bytes, in rank order.
    func allgather(_ data: UnsafeRawPointer, bytes: Int) throws -> [UInt8]
    func barrier() throws
    /// Non-blocking in-place sum; finish it with `test` or `wait`.
    func startAllreduce(_ data: UnsafeMutablePointer<Float>, _ count: Int) throws -> Int64
    /// True once the request completed (it is then released).
    func test(_ request: inout Int64) throws -> Bool
    func wait(_ request: inout Int64) throws
    /// Ends the whole job with a non-zero status (never returns).
    func abort(_ code: Int32) -> Never
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
}

public final class SingleProcess: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public var localRank: Int { 0 }
    public func allreduceSum(_ data: UnsafeMutablePointer<Float>, _ count: Int) {}
    public func allreduceSum(_ data: UnsafeMutablePointer<Double>, _ count: Int) {}
    public func broadcast(_ data: UnsafeMutableRawPointer, bytes: Int, root: Int) {}
    public func allgather(_ data: UnsafeRawPointer, bytes: Int) -> [UInt8] { Array(UnsafeRawBufferPointer(start: data, count: bytes)) }
    public func barrier() {}
    public func startAllreduce(_ data: UnsafeMutablePointer<Float>, _ count: Int) -> Int64 { 0 }
    public func test(_ request: inout Int64) -> Bool { true }
    public func wait(_ request: inout Int64) {}
    public func abort(_ code: Int32) -> Never { exit(code) }
}

public final class MPICommunicator: Communicator {
    public let rank: Int, size: Int, localRank: Int

    /// True when this process was started by Open MPI's launcher.
    public static var launched: Bool { ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"] != nil }

    public init() throws {
        var provided: Int32 = 0
        try MPICommunicator.check(rd_mpi_init(&provided), "MPI_Init_thread")
        var r: Int32 = 0, s: Int32 = 0, l: Int32 = 0
        try MPICommunicator.check(rd_mpi_rank(&r), "MPI_Comm_rank")
        try MPICommunicator.check(rd_mpi_size(&s), "MPI_Comm_size")
        try MPICommunicator.check(rd_mpi_local_rank(&l), "MPI_Comm_split_type")
        rank = Int(r); size = Int(s); localRank = Int(l)
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
        try out.withUnsafeMutableBytes { try Self.check(rd_mpi_allgather(data, bytes, $0.baseAddress!), "MPI_Allgather") }
        return out
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
    public func test(_ req: inout Int64) throws -> Bool {
        var done: Int32 = 0
        try Self.check(rd_mpi_test(&req, &done), "MPI_Test")
        return done != 0
    }
    public func wait(_ req: inout Int64) throws { try Self.check(rd_mpi_wait(&req), "MPI_Wait") }

    public func finalize() { _ = rd_mpi_finalize() }
}
