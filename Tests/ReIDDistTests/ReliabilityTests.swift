// Bad input, as a clumsy or hostile user gives it: each case ends in a clear
// error naming the file, key or value (or a bounded result), never a crash,
// a hang or unbounded memory.
import Foundation
import ReIDEval
import ReIDImage
import XCTest

@testable import ReIDCore
@testable import ReIDData
@testable import ReIDDist

final class ReliabilityTests: XCTestCase {
    func runBinary(_ args: [String]) throws -> (Int32, String) { try runReidDist(args) }

    func testDuplicateKeysAndAliasBombsInAConfig() throws {
        let dir = scratch("yaml")
        let f = dir + "/c.yaml"
        try "model:\n  depth: 18\noptim:\n  lr: 0.1\nmodel:\n  depth: 50\n".write(
            toFile: f, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Config(file: f)) {
            XCTAssert("\($0)".contains("\(f): 'model' is given twice (lines 1 and 5)"), "\($0)")
        }
        try "model:\n  depth: 18\n  depth: 50\n".write(toFile: f, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Config(file: f)) {
            XCTAssert("\($0)".contains("'model.depth' is given twice (lines 2 and 3)"), "\($0)")
        }
        // A billion laughs in about 400 bytes: 9^9 leaves if expanded.
        var bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n"
        for (name, prev) in zip(["b", "c", "d", "e", "f", "g", "h", "i"], ["a", "b", "c", "d", "e", "f", "g", "h"]) {
            bomb += "\(name): &\(name) [" + Array(repeating: "*\(prev)", count: 9).joined(separator: ", ") + "]\n"
        }
        XCTAssertLessThan(bomb.utf8.count, 500)
        try bomb.write(toFile: f, atomically: true, encoding: .utf8)
        let t0 = Date()
        XCTAssertThrowsError(try Config(file: f)) { XCTAssert("\($0)".contains("more than 10000 YAML nodes"), "\($0)") }
        XCTAssertLessThan(Date().timeIntervalSince(t0), 2, "refused before expanding")
        var c = Config()
        XCTAssertThrowsError(
            try c.apply(override: "schedule.milestones=" + bomb.replacingOccurrences(of: "\n", with: " "))
        ) { _ in }
    }

    func testAHugeMaxRankIsClampedToTheGallery() throws {
        func set(_ n: Int, seed: UInt64) -> FeatureSet {
            var r = RNG(key: seed)
            let f = Tensor([n, 4])
            for i in 0..<f.count { f.ptr[i] = Float(r.normal()) }
            return FeatureSet(
                features: f, pids: (0..<n).map { Int64($0 % 3 + 1) }, camids: (0..<n).map { Int64($0 % 2 + 1) })
        }
        let q = set(7, seed: 1), g = set(52, seed: 2)
        let r = try rank(query: q, gallery: g, maxRank: 1_000_000_000)
        XCTAssertEqual(r.cmc.count, 52)
        XCTAssertEqual(r.rank(1_000), r.cmc.last)
        XCTAssertEqual(r.mAP, try rank(query: q, gallery: g).mAP)
        // An all-zero feature has no cosine distance: an error, not a ranking by file order.
        g.features.ptr.update(repeating: 0, count: 2 * 4)
        XCTAssertThrowsError(try rank(query: q, gallery: g)) {
            XCTAssert("\($0)".contains("2 gallery feature(s) are all zero or not finite, first row 0"), "\($0)")
        }
        XCTAssertNoThrow(try rank(query: q, gallery: g, metric: .euclidean))
    }

    func testAnOversizedImageIsRefusedFromItsHeader() throws {
        let path = try XCTUnwrap(try ReIDDataset(root: tinyData, layout: .market).query.samples.first?.path)
        XCTAssertThrowsError(try RGBImage(file: path, maxPixels: 100)) {
            XCTAssert("\($0)".contains("more than data.max_pixels = 100; not decoded"), "\($0)")
        }
        XCTAssertThrowsError(try RGBImage.checkHeader(file: path, maxPixels: 100)) {
            XCTAssert("\($0)".hasPrefix(path), "\($0)")
        }
        XCTAssertEqual(checkImageHeaders([path], threads: 1, maxPixels: 100).count, 1)
        XCTAssertGreaterThan(try RGBImage.checkHeader(file: path).width, 0)
    }

    func testADamagedGalleryImageStopsTrainingAtItsStart() throws {
        let root = scratch("damaged-data") + "/data"
        var c = SynthConfig()
        c.trainIds = 8
        c.testIds = 6
        c.seed = 11
        _ = try writeSynthetic(c, to: root)
        let ds = try ReIDDataset(root: root, layout: .market)
        let victim = ds.gallery.samples[3].path
        let bytes = try Data(contentsOf: URL(fileURLWithPath: victim))
        try bytes.prefix(40).write(to: URL(fileURLWithPath: victim))
        XCTAssertThrowsError(try Trainer(config: try tinyConfig(scratch("damaged-run"), ["data.root=\(root)"]))) {
            XCTAssert("\($0)".contains("1 unreadable image(s) in \(root)"), "\($0)")
        }
        // data.skip_bad_images does not cover evaluation images.
        XCTAssertThrowsError(
            try Trainer(
                config: try tinyConfig(scratch("damaged-run2"), ["data.root=\(root)", "data.skip_bad_images=true"])))
        XCTAssertNoThrow(
            try Trainer(
                config: try tinyConfig(scratch("damaged-run3"), ["data.root=\(root)", "data.check_images=false"])))
    }

    func testNonFiniteWeightsAreNamedAtLoad() throws {
        let dir = scratch("nan")
        var spec = try tinyConfig(dir + "/run").model.spec
        spec.classes = 8
        for (what, poison) in [
            ("backbone.conv1.weight[5] is nan", { (a: Arena) in a.value[5] = .nan }),
            ("is -1.0", { (a: Arena) in a.buffer[a.buffers.first { $0.name.hasSuffix("running_var") }!.offset] = -1 })
        ] {
            let net = GroupedMultiBranchNet(spec, seed: 3)
            poison(net.arena)
            try SafeTensors.write(net.arena.stateRecords(), to: dir + "/init.safetensors")
            XCTAssertThrowsError(
                try Trainer(config: try tinyConfig(scratch("nanrun"), ["model.init=\(dir)/init.safetensors"]))
            ) {
                XCTAssert("\($0)".contains("\(dir)/init.safetensors (model.init): ") && "\($0)".contains(what), "\($0)")
            }
        }
    }

    /// The command line: a model.safetensors path works as documented, a NaN one is refused,
    /// negative numbers after options reach validation, a file in the way of a folder is one line.
    /// The watchdog times the collective at an epoch's end as it times a step (a link that went
    /// down there used to hang the job until the launcher's own limit): it names that stretch
    /// when it overruns, and such stretches do not count among the steps the automatic bound is
    /// made of.
    func testTheWatchdogTimesTheEpochEndLikeAStep() throws {
        let fired = NSLock()
        var message: String?
        let dog = StepWatchdog(timeout: 0.3, rank: 0, ranks: 1)
        defer { dog.close() }
        dog.onStall = { m in
            fired.lock()
            message = m
            fired.unlock()
        }
        dog.arm("the end of epoch 3 (batch-norm statistics averaged over ranks)", .collective)
        let t0 = Date()
        while Date().timeIntervalSince(t0) < 5 {
            Thread.sleep(forTimeInterval: 0.1)
            fired.lock()
            let got = message
            fired.unlock()
            if got != nil { break }
        }
        fired.lock()
        let got = message
        fired.unlock()
        XCTAssertNotNil(got, "the watchdog did not fire on an overrunning epoch end")
        XCTAssert(
            got?.contains("error: no progress for") == true && got?.contains("in the end of epoch 3") == true, got ?? ""
        )
        dog.disarm()

        let auto = StepWatchdog(timeout: nil, rank: 0, ranks: 1)
        defer { auto.close() }
        auto.arm("the end of epoch 1", .collective)
        auto.disarm()
        XCTAssertEqual(auto.limit, 900, "an epoch end counted as a step")
        auto.arm("epoch 2 step 1")
        auto.disarm()
        XCTAssertEqual(auto.limit, 120, "a step not counted")
    }

    /// While armed, the watchdog pings the other ranks every third of `train.heartbeat_timeout_s`.
    /// A rank silent on every ping for that long ends the job, in a stretch that is not timed
    /// (an evaluation) too, and the message names it; a rank that answers now and then, a
    /// stretch that ends, or no pings at all (0) end nothing.
    func testASilentRankEndsTheJobEvenInAnUntimedStretch() throws {
        final class Probe: @unchecked Sendable {
            let lock = NSLock()
            var answers: [[Int]]
            var calls = 0
            var message: String?
            init(_ answers: [[Int]]) { self.answers = answers }
            func ping(_ within: Double) -> [Int]? {
                lock.lock()
                defer { lock.unlock() }
                calls += 1
                return answers[(calls - 1) % answers.count]
            }
            func fired(_ m: String) {
                lock.lock()
                message = m
                lock.unlock()
            }
            var state: (Int, String?) {
                lock.lock()
                defer { lock.unlock() }
                return (calls, message)
            }
        }
        func watch(
            _ answers: [[Int]], heartbeat: Double = 0.6, stretch: StepWatchdog.Stretch = .pingedOnly,
            for seconds: Double, disarmEvery: Double? = nil
        ) -> (Int, String?) {
            let probe = Probe(answers)
            // A step bound far shorter than the wait: only an untimed stretch survives it.
            let dog = StepWatchdog(timeout: 0.3, heartbeatTimeout: heartbeat, rank: 0, ranks: 4, ping: probe.ping)
            defer { dog.close() }
            dog.onStall = probe.fired
            dog.arm("the evaluation after epoch 2", stretch)
            let t0 = Date()
            var last = t0
            while Date().timeIntervalSince(t0) < seconds && probe.state.1 == nil {
                Thread.sleep(forTimeInterval: 0.05)
                if let every = disarmEvery, Date().timeIntervalSince(last) >= every {
                    dog.disarm()
                    dog.arm("the evaluation after epoch 2", stretch)
                    last = Date()
                }
            }
            dog.disarm()
            return probe.state
        }
        // Ranks 1 and 3 quiet on every ping: both named, after at least the 0.6 s bound.
        let t0 = Date()
        var (calls, message) = watch([[1, 3]], for: 5)
        let took = Date().timeIntervalSince(t0)
        XCTAssertNotNil(message, "a silent rank did not end the job")
        XCTAssert(message?.contains("error: ranks 1, 3 answered no heartbeat for") == true, message ?? "")
        XCTAssert(
            message?.contains("in the evaluation after epoch 2 (train.heartbeat_timeout_s 1 s)") == true, message ?? "")
        XCTAssert(message?.contains("stopped, or their link is down") == true, message ?? "")
        XCTAssertGreaterThanOrEqual(took, 0.6)
        XCTAssertGreaterThanOrEqual(calls, 3)
        // Rank 2 silent on every ping while rank 1 answers every other one: rank 2 alone is named.
        (_, message) = watch([[1, 2], [2]], for: 5)
        XCTAssert(message?.contains("error: rank 2 answered no heartbeat") == true, message ?? "")
        // A rank that answers every third ping is alive: 3 s without a stall (and no step bound here).
        (calls, message) = watch([[1], [1], []], heartbeat: 1.5, for: 2.5)
        XCTAssertNil(message)
        XCTAssertGreaterThanOrEqual(calls, 4, "the watchdog did not keep pinging")
        // Stretches that end (collectives that complete) clear the silence.
        (_, message) = watch([[1]], stretch: .pingedOnly, for: 2, disarmEvery: 0.25)
        XCTAssertNil(message)
        // No pings at all with a heartbeat timeout of 0.
        (calls, message) = watch([[1]], heartbeat: 0, for: 1)
        XCTAssertEqual(calls, 0)
        XCTAssertNil(message)
        // A timed stretch still ends on the step bound, and says so.
        (_, message) = watch([[]], stretch: .collective, for: 5)
        XCTAssert(
            message?.contains("no progress for") == true && message?.contains("train.step_timeout_s") == true,
            message ?? "")
    }

    func testCommandLineMessages() throws {
        let run = scratch("cli") + "/run"
        let t = try Trainer(config: try tinyConfig(run, ["schedule.epochs=1"]))
        t.log = { _ in }
        try t.run()
        let cfg = run + "/config.yaml", model = run + "/checkpoints/epoch-0001/model.safetensors"
        var (s, o) = try runBinary(["evaluate", "--config", cfg, "--checkpoint", model])
        XCTAssertEqual(s, 0, o)
        XCTAssert(o.contains("rank-1"), o)
        let net = GroupedMultiBranchNet(t.model.spec, seed: 1)
        net.arena.value[7] = .infinity
        let bad = scratch("cli-bad") + "/model.safetensors"
        try SafeTensors.write(net.arena.stateRecords(), to: bad)
        (s, o) = try runBinary([
            "extract", "--config", cfg, "--checkpoint", bad, "--split", "query", "--out", bad + ".features"
        ])
        XCTAssertEqual(s, 1, o)
        XCTAssert(o.contains("\(bad): backbone.conv1.weight[7] is inf"), o)
        (s, o) = try runBinary(["rank", "--query", "q", "--gallery", "g", "--max-rank", "-5"])
        XCTAssertNotEqual(s, 0)
        XCTAssert(o.contains("--max-rank must be at least 1"), o)
        (s, o) = try runBinary(["train", "--config", cfg, "--set", "train.run_dir=\(model)/x"])
        XCTAssertEqual(s, 1, o)
        XCTAssert(o.contains("\(model): train.run_dir is a file, not a folder"), o)
        XCTAssertFalse(o.contains("NSCocoaErrorDomain"), o)
    }

    /// Every command that reads a checkpoint verifies its hashes, whatever other options it is given.
    func testEveryCommandVerifiesTheCheckpointItReads() throws {
        let run = scratch("integrity") + "/run"
        let t = try Trainer(config: try tinyConfig(run, ["schedule.epochs=1"]))
        t.log = { _ in }
        try t.run()
        let cfg = run + "/config.yaml", dir = run + "/checkpoints/epoch-0001", out = scratch("integrity-out")
        let model = dir + "/model.safetensors"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: model))
        bytes[bytes.count - 5] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: model))
        let images = tinyData + "/query"
        for args in [
            ["evaluate", "--config", cfg, "--checkpoint", dir],
            ["evaluate", "--checkpoint", dir, "--data-root", tinyData],
            ["evaluate", "--config", cfg, "--checkpoint", run],
            ["evaluate", "--config", cfg, "--checkpoint", model],
            [
                "extract", "--config", cfg, "--checkpoint", dir, "--split", "query", "--out", out + "/q.safetensors",
                "--data-root", tinyData
            ],
            ["embed", "--checkpoint", dir, "--images", images, "--out", out + "/e.safetensors"],
            ["export", "--checkpoint", dir, "--onnx", out + "/m.onnx"],
            ["train", "--config", cfg, "--resume", dir, "--set", "train.run_dir=\(out)/resumed"]
        ] {
            let (s, o) = try runBinary(args)
            XCTAssertEqual(s, 1, "\(args): \(o)")
            XCTAssert(
                o.contains("model.safetensors: SHA-256") || o.contains("none of its 1 checkpoint(s) verifies"),
                "\(args): \(o)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/e.safetensors"))
    }
}
