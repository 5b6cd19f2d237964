// Seeded fuzzing of every parser that reads a user's bytes: safetensors
// headers, YAML configurations, dataset file names and JPEG headers. Each
// mutated input must give an error or a result: never a crash, a hang (each
// input is timed) or memory beyond a bound (the peak resident size is read
// before and after). Thousands of inputs in a few seconds; the seed is printed.
import Foundation
import XCTest
@testable import ReIDCore
@testable import ReIDData
@testable import ReIDDist
import ReIDImage

final class FuzzTests: XCTestCase {
    static let seed: UInt64 = 20261128

    func peakMB() -> Double {
        let s = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = s.split(separator: "\n").first { $0.hasPrefix("VmHWM:") } ?? ""
        return (line.split(separator: " ").compactMap { Double($0) }.first ?? 0) / 1024
    }

    /// Runs `body` on `count` mutations of `base`; each within `perInput` seconds, and the peak
    /// memory at most `memoryMB` above where it started.
    func fuzz(_ what: String, base: [UInt8], count: Int, perInput: Double = 1, memoryMB: Double = 300,
              mutate: (inout [UInt8], inout RNG) -> Void = FuzzTests.mutate, _ body: ([UInt8]) -> Void) {
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
        print(String(format: "%@: %d inputs (seed %llu), slowest %.1f ms, peak memory +%.0f MB", what, count, Self.seed, slowest * 1e3, peakMB() - before))
        XCTAssertLessThan(slowest, perInput, "\(what): an input took \(slowest) s")
        XCTAssertLessThan(peakMB() - before, memoryMB, "\(what): memory grew")
    }

    /// Byte flips, random bytes, insertions, deletions, truncation, splices of digits and
    /// structural characters, mostly near the start (where the headers are).
    static func mutate(_ b: inout [UInt8], _ rng: inout RNG) {
        let special = Array("0123456789{}[]:,\"&*!-#\n .eE".utf8) + [0, 0xFF, 0x7F]
        for _ in 0..<(1 + rng.below(4)) {
            guard !b.isEmpty else { b = [UInt8(rng.below(256))]; continue }
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
        let records = [TensorRecord("a", floats: (0..<40).map(Float.init), shape: [5, 8]),
                       TensorRecord("b", int64s: [1, 2, 3], shape: [3]),
                       TensorRecord("c.weight", floats: [1, 2], shape: [2, 1])]
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
        let base = Array("""
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
                XCTAssert(p.pid >= -1 && p.pid < 1_000_000_000 && p.camera >= 0, "\(ReIDDataset.printable(name)) -> \(p)")
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
