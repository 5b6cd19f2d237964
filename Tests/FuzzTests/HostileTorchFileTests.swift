// Hostile torch.save files: crafted views, nesting, memo sharing and sizes are refused before
// anything is allocated for them, with a bounded message, in bounded time.
import Foundation
import XCTest

@testable import ReIDCore
@testable import ReIDTorch

/// A minimal pickle writer for the legacy torch.save format (tests and fuzzing).
struct PickleWriter {
    var b: [UInt8]
    init(protocol p: UInt8 = 2) { b = [0x80, p] }
    mutating func int(_ v: Int) {
        var x = UInt64(bitPattern: Int64(v))
        b += [0x8A, 8]
        for _ in 0..<8 {
            b.append(UInt8(x & 0xFF))
            x >>= 8
        }
    }
    mutating func str(_ s: String) { b += [0x8C, UInt8(s.utf8.count)] + Array(s.utf8) }
    mutating func global(_ m: String, _ n: String) { b += [0x63] + Array("\(m)\n\(n)\n".utf8) }
    mutating func ints(_ v: [Int]) {
        b.append(0x28)
        for x in v { int(x) }
        b.append(0x74)
    }
    /// key: _rebuild_tensor_v2(storage '0' of `numel` floats, offset, shape, stride)
    mutating func tensor(_ key: String, numel: Int, offset: Int, shape: [Int], stride: [Int]) {
        str(key)
        global("torch._utils", "_rebuild_tensor_v2")
        b.append(0x28) // MARK (args)
        b.append(0x28)
        str("storage")
        global("torch", "FloatStorage")
        str("0")
        str("cpu")
        int(numel)
        b.append(0x74)
        b.append(0x51) // BINPERSID
        int(offset)
        ints(shape)
        ints(stride)
        b.append(0x74) // TUPLE
        b.append(0x52) // REDUCE
        b.append(0x73) // SETITEM
    }
    mutating func stop() { b.append(0x2E) }
}

/// The bytes of a legacy torch.save file: magic, protocol, system info, the state dict's pickle
/// (`dict` writes its items after EMPTY_DICT), the storage keys ('0'), then storage '0' of
/// `stored` floats 0, 1, 2, ...
func legacyTorchFile(protocol p: UInt8 = 2, stored: Int, dict body: (inout PickleWriter) -> Void) -> [UInt8] {
    var magic = PickleWriter(protocol: p)
    magic.b += [0x8A, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]
    magic.stop()
    var version = PickleWriter(protocol: p)
    version.b += [0x4D, 0xE9, 0x03]
    version.stop()
    var info = PickleWriter(protocol: p)
    info.b.append(0x7D)
    info.stop()
    var dict = PickleWriter(protocol: p)
    dict.b.append(0x7D)
    body(&dict)
    dict.stop()
    var keys = PickleWriter(protocol: p)
    keys.b += [0x5D, 0x28]
    keys.str("0")
    keys.b.append(0x65)
    keys.stop()
    var out = magic.b + version.b + info.b + dict.b + keys.b
    var n = UInt64(stored)
    for _ in 0..<8 {
        out.append(UInt8(n & 0xFF))
        n >>= 8
    }
    for i in 0..<stored { withUnsafeBytes(of: Float(i).bitPattern.littleEndian) { out += $0 } }
    return out
}

final class HostileTorchFileTests: XCTestCase {
    /// A legacy torch.save file with one tensor viewing storage '0' (`stored` floats, 0, 1, 2, ...).
    func legacyFile(
        _ name: String, protocol p: UInt8 = 2, offset: Int = 0, shape: [Int], stride: [Int], stored: Int,
        dictBody: ((inout PickleWriter) -> Void)? = nil
    ) throws -> String {
        let out = legacyTorchFile(protocol: p, stored: stored) { d in
            if let dictBody {
                dictBody(&d)
            } else {
                d.tensor("w", numel: stored, offset: offset, shape: shape, stride: stride)
            }
        }
        let path = scratchDir + "/" + name
        try Data(out).write(to: URL(fileURLWithPath: path))
        return path
    }
    let scratchDir: String = {
        let p = FileManager.default.temporaryDirectory.appendingPathComponent("reid-hostile-pth-\(getpid())").path
        try? FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        return p
    }()

    func refused(
        _ path: String, _ fragment: String, budget: Int = TorchFile.defaultElementBudget,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        let t0 = Date()
        XCTAssertThrowsError(try TorchFile.read(path, elementBudget: budget), file: file, line: line) { e in
            XCTAssert("\(e)".contains(fragment), "got: \(e)", file: file, line: line)
            XCTAssertLessThan("\(e)".utf8.count, 600, "a bounded message", file: file, line: line)
        }
        XCTAssertLessThan(Date().timeIntervalSince(t0), 5, "refused in bounded time", file: file, line: line)
    }

    func testAWellFormedCraftedFileReadsInEveryPickleProtocol() throws {
        for p: UInt8 in [2, 3, 4, 5] {
            // a transposed 2x3 view of 6 floats: elements 0 3 1 4 2 5
            let path = try legacyFile("ok-\(p).pth", protocol: p, shape: [3, 2], stride: [1, 3], stored: 6)
            XCTAssertTrue(TorchFile.looks(path), "protocol \(p)")
            let r = try TorchFile.read(path)
            XCTAssertEqual(r.count, 1)
            XCTAssertEqual(r[0].shape, [3, 2])
            XCTAssertEqual(
                try SafeTensorsFile(data: SafeTensors.encode(r)).floats("w"), [0, 3, 1, 4, 2, 5], "protocol \(p)")
        }
    }

    func testViewsOutsideTheirStorageAreRefusedWithoutOverflow() throws {
        refused(
            try legacyFile("offset.pth", offset: 1 << 62, shape: [10], stride: [1], stored: 16),
            "past its storage of 16")
        refused(
            try legacyFile("offset-neg.pth", offset: -5, shape: [4], stride: [1], stored: 16),
            "negative size, stride or offset")
        refused(try legacyFile("stride.pth", shape: [2], stride: [(1 << 62) + 147], stored: 16), "past its storage")
        refused(
            try legacyFile("stride-overflow.pth", shape: [3], stride: [(1 << 62) + 147], stored: 16),
            "overflows a 64-bit index")
        refused(
            try legacyFile("size-overflow.pth", shape: [1 << 40, 1 << 40], stride: [0, 0], stored: 16),
            "more elements than a 64-bit count holds")
        refused(
            try legacyFile("far.pth", offset: 10, shape: [4, 4], stride: [4, 1], stored: 16),
            "reaches element 25, past its storage of 16")
    }

    func testAZeroStrideViewCannotStandForMoreThanItsStorage() throws {
        refused(
            try legacyFile("zero-stride.pth", shape: [100_000_000], stride: [0], stored: 16),
            "100000000 elements, more than the 16 of its storage")
        refused(
            try legacyFile("trillion.pth", shape: [1_000_000, 1_000_000], stride: [0, 0], stored: 16),
            "more than the 16 of its storage")
    }

    func testTheModelsSizeBoundsWhatAFileMayHold() throws {
        let path = try legacyFile("budget.pth", shape: [64], stride: [1], stored: 64)
        XCTAssertEqual(try TorchFile.read(path, elementBudget: 64).count, 1)
        refused(path, "more than the 10 left of what this model's weights may hold", budget: 10)
    }

    /// Items added one SETITEM at a time make a dict wider, not deeper: 300 tensors, each its own SETITEM, read.
    func testManySetitemsAreNotNesting() throws {
        let path = try legacyFile("wide.pth", shape: [1], stride: [1], stored: 4) { d in
            for i in 0..<300 { d.tensor("t\(i)", numel: 4, offset: i % 4, shape: [1], stride: [1]) }
        }
        let records = try TorchFile.read(path)
        XCTAssertEqual(records.count, 300)
    }

    func testDeepNestingIsRefusedNotAStackOverflow() throws {
        // 200,000 nested one-tuples as a dict key, then the same with lists
        let deep = try legacyFile("deep.pth", shape: [1], stride: [1], stored: 1) { d in
            d.str("x")
            for _ in 0..<200_000 { d.b.append(0x85) } // TUPLE1 of TUPLE1 of ...
            d.b.append(0x73)
        }
        refused(deep, "nested more than 64 deep")
        let lists = try legacyFile("deep-lists.pth", shape: [1], stride: [1], stored: 1) { d in
            for _ in 0..<200_000 { d.b.append(0x5D) } // 200,000 empty lists,
            for _ in 0..<199_999 { d.b.append(0x61) } // each APPENDed into the one below it
            d.b += [0x4E, 0x73]
        }
        refused(lists, "nested more than 64 deep")
    }

    func testMemoSharingCannotDescribeAnExponentialValue() throws {
        // t = (t, t) sixty times through the memo: 2^60 leaves in 600 bytes
        let bomb = try legacyFile("memo-bomb.pth", shape: [1], stride: [1], stored: 1) { d in
            d.str("x")
            d.b += [0x71, 0] // BINPUT 0 (the string "x")
            for _ in 0..<60 { d.b += [0x68, 0, 0x68, 0, 0x86, 0x71, 0] } // BINGET 0 twice, TUPLE2, BINPUT 0
            d.b += [0x68, 0, 0x4E, 0x73] // key = t, value None, SETITEM
        }
        refused(bomb, "standing for more than")
    }

    /// A zip entry that inflates to 64 MiB for 16 floats (Tests/Fixtures/make_inflating_pth.py) is
    /// refused from its declared size; with room for it, its tensor reads and the rest is never kept.
    func testAnArchiveCannotInflatePastTheModelsBudget() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/inflating.pth").path
        refused(path, "declares 67108864 bytes, more than this model's weights may take", budget: 1000)
        XCTAssertEqual(try TorchFile.read(path, elementBudget: 1 << 23).first?.shape, [16])
    }
}
