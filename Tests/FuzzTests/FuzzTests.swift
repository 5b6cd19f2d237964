// Seeded fuzzing of every parser that reads a user's bytes: safetensors
// headers, YAML configurations, dataset file names and JPEG headers. Each
// mutated input must give an error or a result: never a crash, a hang (each
// input is timed) or memory beyond a bound (the peak resident size is read
// before and after). Thousands of inputs in a few seconds; the seed is printed.
import Foundation
import ReIDImage
import XCTest

@testable import ReIDCore
@testable import ReIDData
@testable import ReIDDist
@testable import ReIDTorch

final class FuzzTests: XCTestCase {
    static let seed: UInt64 = 20261128

    func peakMB() -> Double {
        let s = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = s.split(separator: "\n").first { $0.hasPrefix("VmHWM:") } ?? ""
        return (line.split(separator: " ").compactMap { Double($0) }.first ?? 0) / 1024
    }

    /// Runs `body` on `count` mutations of `base`; each within `perInput` seconds, and the peak
    /// memory at most `memoryMB` above where it started.
    func fuzz(
        _ what: String, base: [UInt8], count: Int, perInput: Double = 1, memoryMB: Double = 300,
        mutate: (inout [UInt8], inout RNG) -> Void = FuzzTests.mutate, _ body: ([UInt8]) -> Void
    ) {
        var rng = RNG(key: Self.seed, UInt64(what.utf8.reduce(0) { $0 &* 31 &+ UInt64($1) }))
        let before = peakMB()
        var slowest = 0.0
        for _ in 0..<count {
            var b = base
            mutate(&b, &rng)
            let t0 = Profile.now()
            body(b)
            slowest = max(slowest, Profile.now() - t0)
        }
        print(
            String(
                format: "%@: %d inputs (seed %llu), slowest %.1f ms, peak memory +%.0f MB", what, count, Self.seed,
                slowest * 1e3, peakMB() - before))
        XCTAssertLessThan(slowest, perInput, "\(what): an input took \(slowest) s")
        XCTAssertLessThan(peakMB() - before, memoryMB, "\(what): memory grew")
    }

    /// Byte flips, random bytes, insertions, deletions, truncation, splices of digits and
    /// structural characters, mostly near the start (where the headers are).
    static func mutate(_ b: inout [UInt8], _ rng: inout RNG) {
        let special = Array("0123456789{}[]:,\"&*!-#\n .eE".utf8) + [0, 0xFF, 0x7F]
        for _ in 0..<(1 + rng.below(4)) {
            guard !b.isEmpty else {
                b = [UInt8(rng.below(256))]
                continue
            }
            let hot = rng.uniform() < 0.8 ? Swift.min(b.count, 600) : b.count
            let i = rng.below(hot)
            switch rng.below(7) {
            case 0: b[i] ^= UInt8(1 << rng.below(8))
            case 1: b[i] = UInt8(rng.below(256))
            case 2: b.insert(special[rng.below(special.count)], at: i)
            case 3: b.remove(at: i)
            case 4: b = Array(b.prefix(i))
            case 5: b[i] = special[rng.below(special.count)]
            default: b.insert(contentsOf: Array(repeating: special[rng.below(10)], count: 1 + rng.below(20)), at: i)
            }
        }
    }

    func testSafeTensorsHeaders() throws {
        let records = [
            TensorRecord("a", floats: (0..<40).map(Float.init), shape: [5, 8]),
            TensorRecord("b", int64s: [1, 2, 3], shape: [3]),
            TensorRecord("c.weight", floats: [1, 2], shape: [2, 1])
        ]
        let base = [UInt8](SafeTensors.encode(records, metadata: ["producer": "fuzz", "classes": "7"]))
        var opened = 0
        fuzz("safetensors", base: base, count: 30000) { bytes in
            guard let f = try? SafeTensorsFile(data: Data(bytes), path: "fuzz.safetensors") else { return }
            opened += 1
            for (name, t) in f.tensors {
                switch t.dtype {
                case .F32: _ = try? f.floats(name)
                case .I64: _ = try? f.int64s(name)
                default: break
                }
            }
        }
        XCTAssertGreaterThan(opened, 0, "some mutations still parse")
    }

    func testYAMLConfigs() throws {
        let base = Array(
            """
            data: {root: /data/market, height: 256, width: 128}
            model:
              depth: 50
              groups: 4
            optim: {name: sgd, lr: 0.05}
            schedule:
              milestones: [40, 70]
            train: {run_dir: runs/x, seed: 1}
            """.utf8)
        fuzz("yaml", base: base, count: 15000) { bytes in
            _ = try? Config(yaml: String(decoding: bytes, as: UTF8.self), source: "fuzz.yaml")
        }
    }

    func testDatasetFileNames() throws {
        let base = Array("0002_c1s1_000451_03.jpg".utf8)
        fuzz("file names", base: base, count: 50000, perInput: 0.1) { bytes in
            let name = String(decoding: bytes, as: UTF8.self)
            if let p = try? ReIDDataset.parse(name) {
                XCTAssert(
                    p.pid >= -1 && p.pid < 1_000_000_000 && p.camera >= 0, "\(ReIDDataset.printable(name)) -> \(p)")
            }
            _ = ReIDDataset.printable(name)
        }
    }

    func testJPEGHeaders() throws {
        let img = RGBImage(width: 48, height: 96, fill: (120, 30, 200))
        let base = [UInt8](try img.jpegData(quality: 80))
        var decoded = 0
        fuzz("jpeg", base: base, count: 15000) { bytes in
            if let d = try? RGBImage(jpeg: Data(bytes), path: "fuzz.jpg") {
                decoded += 1
                XCTAssertEqual(d.pixels.count, d.width * d.height * 3)
            }
        }
        XCTAssertGreaterThan(decoded, 0)
    }
}

/// Structure-aware fuzzing of the inputs that reached memory errors, hangs and wrong results in
/// the hostile-input run: torch.save views and pickles, list files, configuration values.
final class StructuredFuzzTests: XCTestCase {
    /// A number from the ranges that break size arithmetic: small, near 2^31, 2^32, 2^62, 2^63, negative.
    static func edgy(_ rng: inout RNG) -> Int {
        switch rng.below(8) {
        case 0, 1, 2: return rng.below(9)
        case 3: return (1 << 31) + rng.below(3) - 1
        case 4: return (1 << 32) + rng.below(3) - 1
        case 5: return (1 << 62) + rng.below(300)
        case 6: return Int.max - rng.below(3)
        default: return -1 - rng.below(3)
        }
    }

    /// One hostile legacy .pth of `kind`: a random view, a nesting, memo sharing, or a valid file's bytes mutated.
    static func torchFile(_ kind: String, _ rng: inout RNG) -> [UInt8] {
        let stored = rng.below(65)
        switch kind {
        case "view":
            let dims = 1 + rng.below(4)
            let shape = (0..<dims).map { _ in edgy(&rng) }, stride = (0..<dims).map { _ in edgy(&rng) }
            return legacyTorchFile(stored: stored) {
                $0.tensor("w", numel: stored, offset: edgy(&rng), shape: shape, stride: stride)
            }
        case "nesting":
            let depth = 1 + rng.below(400), op: UInt8 = [0x85, 0x61][rng.below(2)]
            return legacyTorchFile(stored: stored) { d in
                d.str("k")
                if op == 0x61 {
                    for _ in 0..<depth { d.b.append(0x5D) }
                    for _ in 0..<(depth - 1) { d.b.append(0x61) }
                } else {
                    d.b.append(0x4E)
                    for _ in 0..<depth { d.b.append(0x85) }
                }
                d.b.append(0x73)
            }
        case "memo":
            let rounds = 1 + rng.below(80)
            return legacyTorchFile(stored: stored) { d in
                d.str("x")
                d.b += [0x71, 0]
                for _ in 0..<rounds { d.b += [0x68, 0, 0x68, 0, 0x86, 0x71, 0] }
                d.b += [0x68, 0, 0x4E, 0x73]
            }
        default:
            var b = legacyTorchFile(stored: 16) { $0.tensor("w", numel: 16, offset: 2, shape: [2, 3], stride: [1, 2]) }
            FuzzTests.mutate(&b, &rng)
            return b
        }
    }

    func testTorchFiles() throws {
        var rng = RNG(key: FuzzTests.seed, 1601)
        let kinds = ["view", "nesting", "memo", "bytes"]
        var inputs = [String: Int](), accepted = [String: Int](), slowest = (0.0, "")
        for i in 0..<8000 {
            let kind = kinds[i % kinds.count]
            let bytes = Self.torchFile(kind, &rng)
            let t0 = Profile.now()
            do {
                let records = try TorchFile.readLegacy(bytes: bytes, path: "fuzz.pth", elementBudget: 1 << 20)
                accepted[kind, default: 0] += 1
                XCTAssertLessThanOrEqual(records.reduce(0) { $0 + $1.shape.reduce(1, *) }, 1 << 20)
            } catch {
                XCTAssertLessThan("\(error)".utf8.count, 700, "\(kind): an unbounded message")
            }
            inputs[kind, default: 0] += 1
            let dt = Profile.now() - t0
            if dt > slowest.0 { slowest = (dt, kind) }
        }
        print(
            "torch files: \(inputs.sorted { $0.key < $1.key }) inputs, \(accepted.sorted { $0.key < $1.key }) read, slowest \(String(format: "%.1f", slowest.0 * 1e3)) ms (\(slowest.1))"
        )
        XCTAssertLessThan(slowest.0, 1, "an input took \(slowest.0) s")
        XCTAssertGreaterThan(accepted["view", default: 0], 0, "some random views are valid")
    }

    func testListFiles() throws {
        let base = Array("path,pid,camid\r\nimages/a.jpg,1,2\r\nimages/b.jpg,-1,0\nc.png,0,3\n".utf8)
        var rng = RNG(key: FuzzTests.seed, 1602)
        var parsed = 0, slowest = 0.0
        for _ in 0..<20000 {
            var b = base
            FuzzTests.mutate(&b, &rng)
            let t0 = Profile.now()
            if let lines = try? InputFile.lines(of: Data(b), path: "fuzz.csv", maxLine: 200),
                let rows = try? ListLayout.parse(lines: lines, file: "fuzz.csv", needSplit: false)
            {
                parsed += 1
                for r in rows { XCTAssert(r.pid >= -1 && !r.path.isEmpty && r.line >= 2, "\(r)") }
            }
            slowest = max(slowest, Profile.now() - t0)
        }
        print("list files: 20000 inputs, \(parsed) parsed, slowest \(String(format: "%.2f", slowest * 1e3)) ms")
        XCTAssertGreaterThan(parsed, 0)
        XCTAssertLessThan(slowest, 0.5)
    }

    /// Random keys with values from the edges (huge, infinite, negative, text, lists): each is refused
    /// or gives a configuration whose typed sections can be read and stay within the key's range.
    func testConfigValues() throws {
        var rng = RNG(key: FuzzTests.seed, 1603)
        let values = [
            "1e999", "-1e999", ".nan", ".inf", "1e9", "-1", "0", "1", "3", "4097", "65537", "2e9",
            "9223372036854775807",
            "0.5", "1e-300", "[1, 2, 3]", "[99999999999]", "text", "\"\"", "true", "~", "{a: 1}", "[[1]]"
        ]
        var accepted = 0
        for _ in 0..<20000 {
            var c = Config()
            try c.apply(override: "data.root=/x")
            for _ in 0..<(1 + rng.below(3)) {
                let key = configKeys[rng.below(configKeys.count)]
                _ = try? c.apply(override: "\(key.name)=\(values[rng.below(values.count)])")
            }
            guard (try? c.validate()) != nil else { continue }
            accepted += 1
            _ = (c.data, c.augment, c.sampler, c.model, c.optim, c.schedule, c.train, c.eval)
            for key in configKeys {
                guard let r = key.range else { continue }
                switch c.values[key.name] {
                case .int(let v)?: XCTAssert(r.contains(Double(v)), "\(key.name) = \(v)")
                case .double(let v)?: XCTAssert(v.isFinite && r.contains(v), "\(key.name) = \(v)")
                case .ints(let a)?: XCTAssert(a.allSatisfy { r.contains(Double($0)) }, "\(key.name) = \(a)")
                default: break
                }
            }
        }
        print("config values: 20000 configurations, \(accepted) accepted")
        XCTAssertGreaterThan(accepted, 0)
    }
}
