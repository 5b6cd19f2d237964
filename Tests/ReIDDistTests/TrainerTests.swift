// Configuration errors, a short training run, checkpoints and resume.
import Foundation
import ReIDEval
import ReIDReport
import XCTest

@testable import ReIDCore
@testable import ReIDData
@testable import ReIDDist

func scratch(_ name: String) -> String {
    let p = FileManager.default.temporaryDirectory.appendingPathComponent("reid-\(name)-\(getpid())").path
    try? FileManager.default.removeItem(atPath: p)
    try! FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
    return p
}

/// Runs a program (the reid-dist executable built beside the tests by default), returning
/// its exit status and combined output; Open MPI may run as root.
@discardableResult
func runProgram(_ exe: String = MPITests.binary, _ args: [String], env extra: [String: String?] = [:]) throws -> (
    Int32, String
) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    var env = ProcessInfo.processInfo.environment
    env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    for (k, v) in extra { env[k] = v }
    p.environment = env
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

func runReidDist(_ args: [String]) throws -> (Int32, String) { try runProgram(MPITests.binary, args) }

/// A tiny synthetic dataset shared by the tests of this file.
let tinyData: String = {
    let root = scratch("tiny") + "/data"
    var c = SynthConfig()
    c.trainIds = 8
    c.testIds = 6
    c.seed = 11
    _ = try! writeSynthetic(c, to: root)
    return root
}()

func tinyConfig(_ run: String, _ extra: [String] = []) throws -> Config {
    var c = Config()
    for o in [
        "data.root=\(tinyData)", "data.height=64", "data.width=32", "model.depth=18", "model.width=8",
        "model.groups=2", "model.branches=2", "sampler.ids_per_batch=4", "sampler.instances=2",
        "optim.lr=0.003", "schedule.epochs=3", "schedule.warmup_epochs=0", "schedule.milestones=[10]",
        "train.run_dir=\(run)", "train.checkpoint_every=1", "train.eval_every=0", "train.log_every=1",
        "train.threads=2", "eval.batch_size=16", "augment.pad=2"
    ] + extra {
        try c.apply(override: o)
    }
    try c.validate()
    return c
}

final class ConfigTests: XCTestCase {
    func expect(_ overrides: [String], _ fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(
            try {
                var c = Config()
                try c.apply(override: "data.root=/x")
                for o in overrides { try c.apply(override: o) }
                try c.validate()
            }(),
            file: file, line: line
        ) { XCTAssert("\($0)".contains(fragment), "got: \($0)", file: file, line: line) }
    }

    func testErrorsNameTheKey() {
        expect(["optim.lrr=0.1"], "unknown key 'optim.lrr' (did you mean 'optim.lr'?)")
        expect(["optim.lr=fast"], "optim.lr must be a number")
        expect(["optim.lr=-0.1"], "optim.lr = -0.1 is out of its range, 1e-12 to 100")
        expect(["model.groups=3"], "model.groups = 3: must divide the 2048 channels")
        expect(["model.depth=101"], "model.depth must be one of 18, 34, 50")
        expect(["sampler.ids_per_batch=1", "sampler.instances=1"], "P*K = 1 < 2")
        expect(["schedule.milestones=[70, 40]"], "schedule.milestones")
        expect(["optim.nesterov=yes please"], "optim.nesterov must be true or false")
        expect(["novalue"], "expected key=value")
    }

    /// Values that used to pass the checks and fail later: infinities, allocations from a number,
    /// thread counts that hang; each refused at load naming the key and its range.
    func testNumbersOutsideTheirRangeAreRefusedAtLoad() {
        expect(["optim.lr=1e999"], "optim.lr must be a finite number")
        expect(["optim.lr=.inf"], "optim.lr must be a finite number")
        expect(["sampler.instances=1000000000"], "sampler.instances = 1000000000 is out of its range, 1 to 4096")
        expect(["sampler.ids_per_batch=4096", "sampler.instances=4096"], "more than 65,536")
        expect(["train.threads=1000000000"], "train.threads = 1000000000 is out of its range")
        expect(["train.threads=4000"], "more than 16 threads for each of the")
        expect(["eval.batch_size=100000"], "eval.batch_size = 100000 is out of its range, 1 to 4096")
        expect(["schedule.milestones=[10, 99999999]"], "schedule.milestones = 99999999 is out of its range")
        expect(["data.height=100000"], "data.height = 100000 is out of its range, 32 to 8192")
        XCTAssert(configKeysMarkdown.contains("(1 to 4096)"), "the key table shows the ranges")
    }

    /// An unknown key names the key it probably meant, across sections too.
    func testUnknownKeysGetAHintAcrossSections() {
        expect(["train.epochs=5"], "unknown key 'train.epochs' (did you mean 'schedule.epochs'?)")
        expect(["optim.label_smoothing=0.1"], "(did you mean 'loss.label_smoothing'?)")
        expect(["data.flip=0.5"], "did you mean 'augment.flip' or 'eval.flip'?")
        expect(["nothing.like.it=1"], "unknown key 'nothing.like.it'")
    }

    func testTheDocsListEveryKeyAsTheCodeDefinesIt() throws {
        let page = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/configuration.md")
        let text = try String(contentsOf: page, encoding: .utf8)
        XCTAssert(
            text.contains(configKeysMarkdown + "\n"),
            "docs/configuration.md's table differs from `reid-dist config-keys`: paste its output")
    }

    /// Every relative link of README.md and docs/*.md names a file of the repository.
    func testTheDocsLinksExist() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let docs = try FileManager.default.contentsOfDirectory(atPath: root.path + "/docs").filter {
            $0.hasSuffix(".md")
        }.map { "docs/" + $0 }
        var checked = 0
        for page in ["README.md", "CHANGELOG.md"] + docs {
            let text = try String(contentsOf: root.appendingPathComponent(page), encoding: .utf8)
            let folder = (page as NSString).deletingLastPathComponent
            for m in text.matches(of: #/\]\(([^)#:\s]*)(#[^)]*)?\)/#) {
                let target = String(m.1)
                let path =
                    target.isEmpty
                    ? root.appendingPathComponent(page).path
                    : ((root.path as NSString).appendingPathComponent(folder) as NSString).appendingPathComponent(
                        target)
                XCTAssert(
                    FileManager.default.fileExists(atPath: path), "\(page) links to \(target), which does not exist")
                // an anchor names one of the target page's headings (GitHub's slugs)
                if let anchor = m.2.map({ String($0.dropFirst()) }), path.hasSuffix(".md"),
                    let target = try? String(contentsOfFile: path, encoding: .utf8)
                {
                    let slugs = target.split(separator: "\n").filter { $0.hasPrefix("#") }.map { Self.slug(String($0)) }
                    XCTAssert(slugs.contains(anchor), "\(page) links to \(m.0), whose page has no such heading")
                }
                checked += 1
            }
            // every repository path named in code spans exists (Cluster/..., Configs/..., Sources/..., ...)
            for m in text.matches(of: #/`((?:Cluster|Configs|Sources|Tests|docs|\.ci)/[A-Za-z0-9_./+-]*[A-Za-z0-9_])/#)
            {
                let target = String(m.1)
                XCTAssert(
                    FileManager.default.fileExists(atPath: root.appendingPathComponent(target).path),
                    "\(page) names \(target), which does not exist")
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 10)
    }

    /// A heading's anchor as GitHub makes it: lower case, spaces to hyphens, other punctuation dropped.
    static func slug(_ heading: String) -> String {
        let title = heading.drop { $0 == "#" }.trimmingCharacters(in: .whitespaces).lowercased()
        return String(
            title.compactMap { c -> Character? in
                c == " " ? "-" : (c.isLetter || c.isNumber || c == "-" || c == "_") ? c : nil
            })
    }

    func testFilesOverridesAndTheResolvedYAMLRoundTrip() throws {
        let dir = scratch("cfg")
        let f = dir + "/c.yaml"
        try
            "data:\n  root: /data/m\nmodel:\n  depth: 18\n  groups: 8\noptim:\n  lr: 3.5e-4\nschedule:\n  milestones: [4, 9]\n"
            .write(toFile: f, atomically: true, encoding: .utf8)
        var c = try Config(file: f)
        try c.apply(override: "optim.name=sgd")
        XCTAssertEqual(c.model.spec.depth, 18)
        XCTAssertEqual(c.optim.lr, 3.5e-4)
        XCTAssertEqual(c.schedule.milestones, [4, 9])
        XCTAssertEqual(c.optim.kind, .sgd)
        XCTAssertEqual(c.sources["optim.lr"], f)
        try c.yaml.write(toFile: dir + "/resolved.yaml", atomically: true, encoding: .utf8)
        XCTAssertEqual(try Config(file: dir + "/resolved.yaml").values, c.values)
        try "model:\n  colour: red\n".write(toFile: f, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Config(file: f)) {
            XCTAssert("\($0)".contains("\(f): unknown key 'model.colour'"), "\($0)")
        }
        XCTAssertEqual(
            try Config(file: "Configs/market1501.yaml".existingOr("../Configs/market1501.yaml")).sampler.idsPerBatch, 16
        )
    }
}

extension String {
    func existingOr(_ other: String) -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        return (root as NSString).appendingPathComponent(self)
    }
}

final class TrainerTests: XCTestCase {
    /// The training position is broadcast as JSON (`Communicator.broadcast`): every field comes
    /// back bit for bit, doubles that have no short decimal form included.
    func testTrainingPositionRoundTripsExactly() throws {
        var p = TrainingPosition()
        p.epoch = 3
        p.globalStep = 1234
        p.optimizerSteps = 1234
        p.stepInEpoch = 17
        p.epochProgress = [0.1 + 0.2, 1e-300, Double.pi * 1e17, Double.leastNonzeroMagnitude]
        p.bestMAP = 0.4692012345678901
        let back = try JSONDecoder().decode(TrainingPosition.self, from: JSONEncoder().encode(p))
        XCTAssertEqual(back, p)
        XCTAssertEqual(back.epochProgress!.map(\.bitPattern), p.epochProgress!.map(\.bitPattern))
        XCTAssertEqual(try SingleProcess().broadcast(p, root: 0), p)
    }

    func weights(_ t: Trainer) -> [Float] {
        Array(UnsafeBufferPointer(start: t.model.arena.value, count: t.model.arena.paramCount))
    }

    func testShortRunLowersTheLossAndItsCheckpointReloadsToTheSameFeatures() throws {
        let run = scratch("run")
        let t = try Trainer(config: try tinyConfig(run, ["schedule.epochs=4"]))
        var lines: [String] = []
        t.log = { lines.append($0) }
        try t.run()
        let losses = try MetricsFile.read(run + "/metrics.jsonl").train.map(\.loss)
        XCTAssertGreaterThan(losses.count, 4)
        XCTAssertLessThan(losses.suffix(3).reduce(0, +) / 3, losses.prefix(3).reduce(0, +) / 3, "loss falls: \(losses)")
        XCTAssert(lines.contains { $0.hasPrefix("eval: rank-1") }, "evaluates at the end")
        XCTAssert(FileManager.default.fileExists(atPath: run + "/config.yaml"))
        // Checkpoint: the weights reload into a fresh model with the same features.
        let dir = try XCTUnwrap(try Checkpoint.resolve("auto", runDir: run)).dir
        XCTAssert(dir.hasSuffix("epoch-0004"))
        var spec = t.model.spec
        spec.classes = try Checkpoint.classes(modelFile: dir + "/model.safetensors")
        let fresh = GroupedMultiBranchNet(spec, seed: 999)
        try fresh.arena.load(from: try SafeTensorsFile(path: dir + "/model.safetensors"), strict: true)
        let q = t.dataset.query
        let a = try extractFeatures(
            model: t.model, split: q, height: 64, width: 32, batchSize: 16, flip: true, producer: "t")
        let b = try extractFeatures(
            model: fresh, split: q, height: 64, width: 32, batchSize: 16, flip: true, producer: "t")
        XCTAssertEqual(a.features.array, b.features.array)
        // Only the newest keep_checkpoints (3) folders stay.
        let kept = try FileManager.default.contentsOfDirectory(atPath: run + "/checkpoints").filter {
            $0.hasPrefix("epoch-")
        }.sorted()
        XCTAssertEqual(kept, ["epoch-0002", "epoch-0003", "epoch-0004"])
    }

    func testResumedRunEndsWithTheSameWeightsAsAnUninterruptedOne() throws {
        let whole = try Trainer(config: try tinyConfig(scratch("whole")))
        whole.log = { _ in }
        try whole.run()
        let runB = scratch("parts")
        let first = try Trainer(config: try tinyConfig(runB))
        first.log = { _ in }
        try first.run(untilEpoch: 1)
        let second = try Trainer(config: try tinyConfig(runB), start: .resume("auto"))
        second.log = { _ in }
        XCTAssertEqual(second.startEpoch, 1)
        try second.run()
        XCTAssertEqual(weights(second), weights(whole))
        XCTAssertEqual(second.model.arena.counters, whole.model.arena.counters)
    }

    func testDamagedCheckpointIsRefused() throws {
        let run = scratch("damaged")
        let t = try Trainer(config: try tinyConfig(run, ["schedule.epochs=1"]))
        t.log = { _ in }
        try t.run()
        let dir = try XCTUnwrap(try Checkpoint.resolve("auto", runDir: run)).dir
        let path = dir + "/model.safetensors"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[bytes.count - 1] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try Checkpoint.verify(dir)) {
            XCTAssert("\($0)".contains("model.safetensors: SHA-256"), "\($0)")
        }
    }

    func testSHA256KnownAnswers() {
        var a = SHA256()
        a.update(Data("abc".utf8))
        XCTAssertEqual(a.hexDigest(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        var b = SHA256()
        b.update(Data(String(repeating: "a", count: 1000).utf8))
        XCTAssertEqual(b.hexDigest(), "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }
}

/// The run folder, resuming, preemption (Reliability): one job per folder, nothing
/// discarded by a resume, the exact step saved on a signal.
final class RunFolderTests: XCTestCase {
    func weights(_ t: Trainer) -> [Float] {
        Array(UnsafeBufferPointer(start: t.model.arena.value, count: t.model.arena.paramCount))
    }
    func buffers(_ t: Trainer) -> [Float] {
        Array(UnsafeBufferPointer(start: t.model.arena.buffer, count: t.model.arena.bufferCount))
    }

    func testASecondJobInTheSameRunFolderIsRefusedNamingTheHolder() throws {
        let run = scratch("lock")
        let first = try Trainer(config: try tinyConfig(run))
        XCTAssertThrowsError(try Trainer(config: try tinyConfig(run))) {
            XCTAssert(
                "\($0)".contains("\(run): another job is training into this run folder")
                    && "\($0)".contains("pid \(getpid())"), "\($0)")
        }
        first.log = { _ in }
        try first.run(untilEpoch: 1) // its lock is released when its run ends
        XCTAssertNoThrow(try Trainer(config: try tinyConfig(run), start: .resume("auto")))
    }

    func testAFreshRunNeverOverwritesAndRestartMovesTheOldRunAside() throws {
        let run = scratch("fresh")
        let t = try Trainer(config: try tinyConfig(run, ["schedule.epochs=1"]))
        t.log = { _ in }
        try t.run()
        XCTAssertThrowsError(try Trainer(config: try tinyConfig(run))) {
            XCTAssert(
                "\($0)".contains("already holds a run (checkpoints up to epoch-0001); continue it with --resume auto"),
                "\($0)")
        }
        let again = try Trainer(config: try tinyConfig(run), start: .restart)
        XCTAssertEqual(again.startEpoch, 0)
        let parent = (run as NSString).deletingLastPathComponent, base = (run as NSString).lastPathComponent
        let aside = try FileManager.default.contentsOfDirectory(atPath: parent).filter { $0.hasPrefix(base + ".old-") }
        XCTAssertEqual(aside.count, 1)
        XCTAssert(
            FileManager.default.fileExists(
                atPath: parent + "/" + aside[0] + "/checkpoints/epoch-0001/model.safetensors"),
            "the old run is kept whole")
        XCTAssertNil(RunFolder.holdsRun(run))
    }

    /// A job that died before its first checkpoint (killed, preempted, a dead link) is resubmitted
    /// with --resume auto, as train.sbatch does: it starts afresh with what it wrote moved aside.
    func testResumeAutoBeforeTheFirstCheckpointStartsAfresh() throws {
        let run = scratch("early")
        try #"{"kind":"step","epoch":1,"step":3,"loss":6.1}"#.appending("\n").write(
            toFile: run + "/metrics.jsonl", atomically: true, encoding: .utf8)
        XCTAssertNotNil(RunFolder.holdsRun(run))
        let t = try Trainer(config: try tinyConfig(run, ["schedule.epochs=1"]), start: .resume("auto"))
        XCTAssertEqual(t.startEpoch, 0)
        let parent = (run as NSString).deletingLastPathComponent, base = (run as NSString).lastPathComponent
        let aside = try FileManager.default.contentsOfDirectory(atPath: parent).filter { $0.hasPrefix(base + ".old-") }
        XCTAssertEqual(aside.count, 1)
        XCTAssert(
            FileManager.default.fileExists(atPath: parent + "/" + aside[0] + "/metrics.jsonl"),
            "the partial run is kept")
        t.log = { _ in }
        try t.run()
        XCTAssertNotNil(try Checkpoint.resolve("auto", runDir: run))
    }

    func testResumeAutoTakesTheNewestCheckpointThatVerifiesAndSaysWhich() throws {
        let run = scratch("auto")
        let t = try Trainer(config: try tinyConfig(run, ["schedule.epochs=2"]))
        t.log = { _ in }
        try t.run()
        let ck = run + "/checkpoints"
        // latest missing: the newest checkpoint that verifies.
        try FileManager.default.removeItem(atPath: ck + "/latest")
        var r = try XCTUnwrap(try Checkpoint.resolve("auto", runDir: run))
        XCTAssert(r.dir.hasSuffix("epoch-0002"))
        XCTAssert(r.note?.contains("latest is missing") == true, "\(r.note ?? "")")
        // the newest damaged: the one before, saying why.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: ck + "/epoch-0002/model.safetensors"))
        bytes[bytes.count - 1] ^= 1
        try bytes.write(to: URL(fileURLWithPath: ck + "/epoch-0002/model.safetensors"))
        try "epoch-0002".write(toFile: ck + "/latest", atomically: true, encoding: .utf8)
        r = try XCTUnwrap(try Checkpoint.resolve("auto", runDir: run))
        XCTAssert(r.dir.hasSuffix("epoch-0001"), r.dir)
        XCTAssert(r.note?.contains("latest names epoch-0002, which does not verify") == true, "\(r.note ?? "")")
        // a dangling latest
        try "epoch-0009".write(toFile: ck + "/latest", atomically: true, encoding: .utf8)
        XCTAssert(
            try XCTUnwrap(try Checkpoint.resolve("auto", runDir: run)).note?.contains("which does not exist") == true)
        // none verifies: an error, nothing touched.
        try FileManager.default.removeItem(atPath: ck + "/epoch-0001/optimizer.safetensors")
        XCTAssertThrowsError(try Checkpoint.resolve("auto", runDir: run)) {
            XCTAssert("\($0)".contains("none of its 2 checkpoint(s) verifies"), "\($0)")
        }
        XCTAssertThrowsError(try Trainer(config: try tinyConfig(run), start: .resume("auto")))
        XCTAssert(FileManager.default.fileExists(atPath: ck + "/epoch-0002"))
    }

    func testUnhashedImpossibleAndUnfinishedCheckpointsAreHandled() throws {
        let run = scratch("hashes")
        let t = try Trainer(config: try tinyConfig(run, ["schedule.epochs=1"]))
        t.log = { _ in }
        try t.run()
        let dir = run + "/checkpoints/epoch-0001", statePath = dir + "/state.json"
        let original = try String(contentsOfFile: statePath, encoding: .utf8)
        var obj = try JSONSerialization.jsonObject(with: Data(original.utf8)) as! [String: Any]
        obj["files"] = [String: String]()
        try JSONSerialization.data(withJSONObject: obj).write(to: URL(fileURLWithPath: statePath))
        XCTAssertThrowsError(try Checkpoint.verify(dir)) {
            XCTAssert("\($0)".contains("lists no hash for model.safetensors"), "\($0)")
        }
        obj = try JSONSerialization.jsonObject(with: Data(original.utf8)) as! [String: Any]
        obj["epoch"] = -5
        try JSONSerialization.data(withJSONObject: obj).write(to: URL(fileURLWithPath: statePath))
        XCTAssertThrowsError(try Checkpoint.verify(dir)) {
            XCTAssert("\($0)".contains("impossible state (epoch -5)"), "\($0)")
        }
        obj["epoch"] = 40
        try JSONSerialization.data(withJSONObject: obj).write(to: URL(fileURLWithPath: statePath))
        XCTAssertThrowsError(try Trainer(config: try tinyConfig(run), start: .resume("auto"))) {
            XCTAssert("\($0)".contains("has done 40 epochs, beyond this run's schedule.epochs = 3"), "\($0)")
        }
        try original.write(toFile: statePath, atomically: true, encoding: .utf8)
        // A save that never finished (disk full, a crash) is cleared at the next start.
        try FileManager.default.createDirectory(
            atPath: run + "/checkpoints/.tmp-epoch-0002-999", withIntermediateDirectories: true)
        _ = try Trainer(config: try tinyConfig(run), start: .resume("auto"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: run + "/checkpoints/.tmp-epoch-0002-999"))
    }

    /// A stop request after a random step (what a signal sets), then --resume auto: the final
    /// weights and statistics equal an uninterrupted run's bit for bit; one process, and
    /// 2 simulated ranks (whose differing batch-norm statistics the checkpoint must keep).
    func testAStopAtARandomStepResumesToTheSameWeightsBitForBit() throws {
        var rng = SystemRandomNumberGenerator()
        for ranks in [1, 2] {
            let extra = ["sampler.ids_per_batch=4"]
            let whole = try Trainer(config: try tinyConfig(scratch("whole\(ranks)"), extra), simulateRanks: ranks)
            whole.log = { _ in }
            try whole.run()
            let total = whole.globalStep
            // The request comes after step `signalAt` has been agreed on; the ranks see it after
            // the next step and stop there, as with a signal that arrives during a step.
            let signalAt = Int.random(in: 1..<(total - 2), using: &rng), stopAt = signalAt + 1
            print("simulated ranks \(ranks): stop requested during step \(stopAt) of \(total)")
            let run = scratch("stopped\(ranks)")
            let first = try Trainer(config: try tinyConfig(run, extra), simulateRanks: ranks)
            first.log = { line in
                if line.hasPrefix("epoch") && first.globalStep == signalAt { StopSignal.received.pointee = SIGUSR1 }
            }
            defer { StopSignal.reset() }
            guard case .stopped(_, let dir?) = try first.run() else { return XCTFail("the run did not stop") }
            StopSignal.reset()
            XCTAssertEqual(first.globalStep, stopAt)
            let st = try Checkpoint.verify(dir)
            XCTAssertEqual(st.step, stopAt)
            let second = try Trainer(config: try tinyConfig(run, extra), simulateRanks: ranks, start: .resume("auto"))
            second.log = { _ in }
            try second.run()
            XCTAssertEqual(second.globalStep, total)
            XCTAssertEqual(weights(second), weights(whole), "\(ranks) rank(s), stopped after step \(stopAt)")
            XCTAssertEqual(buffers(second), buffers(whole))
            XCTAssertEqual(second.model.arena.counters, whole.model.arena.counters)
        }
    }

    func testCheckpointMinutesSavesMidEpochAndAMidEpochCheckpointNeedsItsRankCount() throws {
        let run = scratch("minutes")
        let t = try Trainer(
            config: try tinyConfig(
                run, ["train.checkpoint_minutes=0.00001", "schedule.epochs=1", "train.keep_checkpoints=50"]),
            simulateRanks: 2)
        t.log = { _ in }
        try t.run()
        let names = try FileManager.default.contentsOfDirectory(atPath: run + "/checkpoints").filter {
            $0.contains("-step-")
        }
        XCTAssertGreaterThanOrEqual(names.count, 2, "\(names)")
        let mid = run + "/checkpoints/" + names.sorted()[0]
        XCTAssertThrowsError(
            try Trainer(config: try tinyConfig(scratch("other"), ["schedule.epochs=1"]), start: .resume(mid))
        ) {
            XCTAssert("\($0)".contains("by 2 rank(s); this run has 1"), "\($0)")
        }
    }
}

/// Each dataset layout end to end: load, train one epoch, evaluate; and a model trained on
/// one dataset evaluated on another.
final class DatasetRunTests: XCTestCase {
    func testEveryLayoutTrainsAndEvaluates() throws {
        for layout in [Layout.msmt17, .cuhk03, .list] {
            let root = scratch("run-\(layout.rawValue)") + "/data"
            var c = SynthConfig()
            c.layout = layout
            c.trainIds = 8
            c.testIds = 6
            c.seed = 11
            _ = try writeSynthetic(c, to: root)
            let t = try Trainer(
                config: try tinyConfig(
                    scratch("run-\(layout.rawValue)-out"),
                    ["data.root=\(root)", "data.layout=\(layout.rawValue)", "schedule.epochs=1"]))
            var lines: [String] = []
            t.log = { lines.append($0) }
            try t.run()
            XCTAssertEqual(t.dataset.classes, 8, "\(layout)")
            XCTAssert(lines.contains { $0.hasPrefix("eval: rank-1") }, "\(layout): \(lines)")
        }
    }

    func testAModelTrainedOnOneDatasetIsEvaluatedOnAnother() throws {
        let run = scratch("cross") + "/run"
        let t = try Trainer(config: try tinyConfig(run, ["schedule.epochs=1"]))
        t.log = { _ in }
        try t.run()
        let other = scratch("cross-msmt") + "/data"
        var c = SynthConfig()
        c.layout = .msmt17
        c.trainIds = 5
        c.testIds = 9
        c.seed = 4
        _ = try writeSynthetic(c, to: other)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: MPITests.binary)
        p.arguments = [
            "evaluate", "--config", run + "/config.yaml", "--checkpoint", run, "--data-root", other, "--layout",
            "msmt17",
            "--json", run + "/cross.json"
        ]
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, out)
        XCTAssert(out.contains("(trained on \(tinyData), layout market, 8 classes, epoch 1)"), out)
        XCTAssert(out.contains("on \(other) (layout msmt17, Market protocol"), out)
        XCTAssertEqual(try EvaluationSummary.read(run + "/cross.json").layout, "msmt17")
    }
}
