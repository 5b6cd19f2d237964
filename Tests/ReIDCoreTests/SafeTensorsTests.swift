// safetensors: round trip, byte layout, and every kind of malformed file.
import XCTest

@testable import ReIDCore

final class SafeTensorsTests: XCTestCase {
    func header(_ json: String, data: [UInt8]) -> Data {
        var d = Data()
        var n = UInt64(json.utf8.count).littleEndian
        withUnsafeBytes(of: &n) { d.append(contentsOf: $0) }
        d.append(contentsOf: Array(json.utf8))
        d.append(contentsOf: data)
        return d
    }

    func testRoundTripAndLayout() throws {
        let recs = [
            TensorRecord("b.weight", floats: [1, -2.5, 3, 4], shape: [2, 2]),
            TensorRecord("a.count", int64s: [7], shape: []),
            TensorRecord("empty", floats: [], shape: [0, 3])
        ]
        let bytes = SafeTensors.encode(recs, metadata: ["format": "pt", "paths": "[\"x\\\"y.jpg\"]"])
        let n = bytes.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        XCTAssertEqual(Int(n) % 8, 0, "data buffer aligned to 8 bytes")
        XCTAssertEqual(bytes.count, 8 + Int(n) + 16 + 8)
        let f = try SafeTensorsFile(data: bytes)
        XCTAssertEqual(try f.floats("b.weight"), [1, -2.5, 3, 4])
        XCTAssertEqual(try f.int64s("a.count"), [7])
        XCTAssertEqual(try f.info("b.weight").shape, [2, 2])
        XCTAssertEqual(try f.info("empty").count, 0)
        XCTAssertEqual(f.metadata["paths"], "[\"x\\\"y.jpg\"]")
        // Name order: a.count first in the buffer.
        XCTAssertEqual(try f.info("a.count").begin, 0)
    }

    func testAtomicWriteAndRead() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("st-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("m.safetensors").path
        try SafeTensors.write([TensorRecord("w", floats: [1, 2, 3], shape: [3])], to: path)
        XCTAssertEqual(try SafeTensorsFile(path: path).floats("w"), [1, 2, 3])
        XCTAssertEqual(
            try FileManager.default.contentsOfDirectory(atPath: dir.path), ["m.safetensors"], "no temporary left")
        XCTAssertThrowsError(try SafeTensorsFile(path: dir.appendingPathComponent("missing").path)) {
            XCTAssert("\($0)".contains("missing"), "\($0)")
        }
    }

    func expectFault(_ data: Data, _ fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try SafeTensorsFile(data: data, path: "bad.safetensors"), file: file, line: line) { e in
            let s = "\(e)"
            XCTAssert(s.hasPrefix("bad.safetensors: ") && s.contains(fragment), "got: \(s)", file: file, line: line)
        }
    }

    func testMalformedFilesAreRejectedWithTheirFault() {
        let four = [UInt8](repeating: 0, count: 4)
        expectFault(Data([1, 2, 3]), "shorter than the 8-byte")
        var huge = Data()
        var n = UInt64(1 << 40).littleEndian
        withUnsafeBytes(of: &n) { huge.append(contentsOf: $0) }
        expectFault(huge, "exceeds")
        expectFault(header("{\"a\":{}}", data: []).prefix(12), "runs past the end")
        expectFault(header("[1,2]   ", data: []), "does not start with '{'")
        expectFault(header("{\"a\":", data: []), "not valid JSON")
        expectFault(
            header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data: []),
            "past the 0-byte data buffer")
        expectFault(
            header("{\"a\":{\"dtype\":\"Q8\",\"shape\":[1],\"data_offsets\":[0,4]}}", data: four),
            "unsupported dtype Q8")
        expectFault(header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", data: four), "needs 8")
        expectFault(header("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", data: four), "negative")
        expectFault(header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", data: four), "reversed")
        expectFault(
            header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", data: four), "two non-negative")
        expectFault(
            header(
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                data: four), "overlaps")
        expectFault(
            header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", data: four + four), "hole")
        expectFault(
            header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data: four + four),
            "trailing bytes")
        expectFault(header("{\"__metadata__\":{\"k\":1}}", data: []), "not a string")
        expectFault(
            header("{\"a\":{\"dtype\":\"F32\",\"shape\":[true],\"data_offsets\":[0,4]}}", data: four), "non-integer")
        expectFault(
            header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,4]}}", data: four),
            "a dimension of 4611686018427387904, too large for any tensor")
        // Other kinds of file where a safetensors file was expected are named.
        expectFault(
            Data([0xFF, 0xD8, 0xFF, 0xE0, 0, 16, 0x4A, 0x46, 0x49, 0x46]),
            "not a safetensors file: it starts like a JPEG image")
        expectFault(Data([0x50, 0x4B, 0x03, 0x04, 20, 0, 0, 0, 8, 0]), "it starts like a zip archive")
        expectFault(Data("path,pid,camid\nx.jpg,1,1\n".utf8), "it starts like a text file")
        // A tensor of the wrong dtype is refused by name.
        let ok = header("{\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", data: four + four)
        XCTAssertThrowsError(try SafeTensorsFile(data: ok, path: "f").floats("a")) {
            XCTAssert("\($0)".contains("expected F32"))
        }
        XCTAssertThrowsError(try SafeTensorsFile(data: ok, path: "f").floats("nope")) {
            XCTAssert("\($0)".contains("no tensor named 'nope'"))
        }
    }
}
