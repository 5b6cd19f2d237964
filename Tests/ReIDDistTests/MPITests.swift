// Data parallelism under mpirun: 2 ranks equal 2 simulated ranks, 3 ranks
// oversubscribed train and checkpoint, and a killed rank ends the job.
// These run the reid-dist executable that `swift test` builds beside the tests.
import Foundation
import ReIDData
import ReIDReport
import XCTest

@testable import ReIDCore
@testable import ReIDDist

final class MPITests: XCTestCase {
    static let products = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        .deletingLastPathComponent()
    static var binary: String {
        // The test runner is products/<package>.xctest (a file on Linux, a bundle elsewhere).
        var dir = products
        for _ in 0..<3 {
            let p = dir.appendingPathComponent("reid-dist").path
            if FileManager.default.isExecutableFile(atPath: p) { return p }
            dir = dir.deletingLastPathComponent()
        }
        return products.appendingPathComponent("reid-dist").path
    }

    func mpirun() throws -> String {
        for p in ["/usr/bin/mpirun", "/usr/local/bin/mpirun"] where FileManager.default.isExecutableFile(atPath: p) {
            return p
        }
        throw XCTSkip("mpirun is not installed (Cluster/setup.sh installs openmpi-bin)")
    }

    /// Runs a command, returning its exit status and combined output.
    @discardableResult
    func run(_ exe: String, _ args: [String], timeout: Double = 300, env extra: [String: String?] = [:]) throws -> (
        Int32, String
    ) {
        try runProgram(exe, args, env: extra)
    }

    func mpiArgs(_ n: Int) -> [String] {
        [
            "--allow-run-as-root", "-np", "\(n)", "--oversubscribe", "--bind-to", "none",
            "--mca", "btl", "self,vader", "--mca", "btl_vader_single_copy_mechanism", "none"
        ]
    }

    func configFile(_ dir: String) throws -> String {
        let p = dir + "/tiny.yaml"
        try """
        data: {root: "\(tinyData)", height: 64, width: 32}
        model: {depth: 18, width: 8, groups: 2, branches: 2}
        sampler: {ids_per_batch: 4, instances: 2}
        optim: {name: sgd, lr: 0.05, momentum: 0.9}
        schedule: {epochs: 1, warmup_epochs: 0, milestones: [10]}
        train: {checkpoint_every: 1, eval_every: 0, log_every: 1, threads: 1}
        augment: {pad: 2}
        eval: {batch_size: 16, flip: false}
        """.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    /// Continues `<dir>/parts` with --resume auto under mpirun, then checks every float tensor
    /// equals the uninterrupted `<dir>/whole`'s, bit for bit.
    func resumePartsAndCompare(_ mpi: String, _ base: [String], _ dir: String, resumedFrom: String) throws {
        let (s, o) = try run(mpi, base + ["--set", "train.run_dir=\(dir)/parts", "--resume", "auto"])
        XCTAssertEqual(s, 0, o)
        XCTAssert(o.contains(resumedFrom), o)
        let a = try model(dir + "/whole"), b = try model(dir + "/parts")
        for (k, t) in a.tensors where t.dtype == .F32 { XCTAssertEqual(try a.floats(k), try b.floats(k), k) }
    }

    /// Starts `mpirun ARGS` in the background, its output collected in the returned pipe.
    func startMPI(_ mpi: String, _ args: [String]) throws -> (Process, Pipe) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: mpi)
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        return (p, out)
    }

    func model(_ run: String) throws -> SafeTensorsFile {
        let latest = try String(contentsOfFile: run + "/checkpoints/latest", encoding: .utf8)
        return try SafeTensorsFile(path: run + "/checkpoints/" + latest + "/model.safetensors")
    }

    /// The "train" records of a run's metrics.jsonl.
    func trainRecords(_ run: String) throws -> [TrainRecord] {
        try MetricsFile.read(run + "/" + MetricsFile.name).train
    }

    /// Cross-entropy + triplet with mining over both ranks' images: mpirun -np 2 takes the same
    /// steps as --simulate-ranks 2 (per-step losses within 1e-6 relative; they are bit-identical
    /// here, as simulated ranks sum whole replica gradients in rank order); and mining each rank's
    /// own images instead finds the same hardest positives at the first step (the identity sampler
    /// keeps an identity on one rank) and hardest negatives that are farther on average.
    func testTripletMiningOverTwoRanks() throws {
        let mpi = try mpirun()
        let dir = scratch("triplet2"), cfg = try configFile(dir)
        let loss = ["--set", "loss.kind=ce+triplet", "--set", "loss.triplet_weight=0.5"]
        let (s0, o0) = try run(
            Self.binary, ["train", "--config", cfg, "--set", "train.run_dir=\(dir)/sim", "--simulate-ranks", "2"] + loss
        )
        XCTAssertEqual(s0, 0, o0)
        XCTAssert(
            o0.contains(
                "loss: 1.0 x cross-entropy (label smoothing 0.1) + 0.5 x batch-hard triplet (euclidean, margin 0.3, global mining)"
            ), o0)
        let (s1, o1) = try run(
            mpi, mpiArgs(2) + [Self.binary, "train", "--config", cfg, "--set", "train.run_dir=\(dir)/mpi"] + loss)
        XCTAssertEqual(s1, 0, o1)
        let (s2, o2) = try run(
            Self.binary,
            [
                "train", "--config", cfg, "--set", "train.run_dir=\(dir)/local", "--simulate-ranks", "2",
                "--set", "loss.triplet_scope=local"
            ] + loss)
        XCTAssertEqual(s2, 0, o2)
        let sim = try trainRecords(dir + "/sim"), viaMPI = try trainRecords(dir + "/mpi"),
            local = try trainRecords(dir + "/local")
        XCTAssertGreaterThanOrEqual(sim.count, 3, "a few steps: \(o0)")
        XCTAssertEqual(sim.count, viaMPI.count)
        for (a, b) in zip(sim, viaMPI).prefix(8) {
            for (key, path) in [
                ("step_loss", \TrainRecord.stepLoss), ("triplet_loss", \.tripletLoss), ("triplet_d_an", \.tripletDAn)
            ] {
                let x = try XCTUnwrap(a[keyPath: path], key), y = try XCTUnwrap(b[keyPath: path], key)
                XCTAssertEqual(x, y, accuracy: 1e-6 * abs(y), "\(key) at step \(a.step)")
            }
        }
        let g = sim[0], l = local[0]
        XCTAssertEqual(try XCTUnwrap(g.tripletDAp), try XCTUnwrap(l.tripletDAp), accuracy: 1e-9)
        XCTAssertLessThan(try XCTUnwrap(g.tripletDAn), try XCTUnwrap(l.tripletDAn))
    }

    func testTwoRanksEqualTwoSimulatedRanks() throws {
        let mpi = try mpirun()
        let dir = scratch("mpi2"), cfg = try configFile(dir)
        let (s2, o2) = try run(
            Self.binary, ["train", "--config", cfg, "--set", "train.run_dir=\(dir)/sim", "--simulate-ranks", "2"])
        XCTAssertEqual(s2, 0, o2)
        // One blocking all-reduce after backward, and small buckets overlapped with backward.
        for (name, bucket) in [("blocking", "0"), ("buckets", "0.05")] {
            let (s1, o1) = try run(
                mpi,
                mpiArgs(2) + [
                    Self.binary, "train", "--config", cfg, "--set", "train.run_dir=\(dir)/\(name)",
                    "--set", "train.bucket_mb=\(bucket)", "--set", "train.check_replicas_every=1",
                    "--set", "train.trace=\(dir)/\(name).json", "--set", "train.threads=\(name == "blocking" ? 0 : 1)"
                ])
            XCTAssertEqual(s1, 0, o1)
            XCTAssert(
                o1.contains(
                    name == "blocking"
                        ? "2 MPI ranks, one blocking all-reduce after backward"
                        : "2 MPI ranks, gradient all-reduce in buckets"), o1)
            // train.threads 0: this process's cores shared among the node's 2 ranks.
            let threads = name == "blocking" ? max(1, availableCores() / 2) : 1
            XCTAssert(o1.contains("\(threads) thread(s) per rank"), "\(threads) thread(s) each: \(o1)")
            let a = try model(dir + "/" + name), b = try model(dir + "/sim")
            XCTAssertEqual(Set(a.tensors.keys), Set(b.tensors.keys))
            var num = 0.0, den = 0.0
            for (k, t) in a.tensors where t.dtype == .F32 {
                let x = try a.floats(k), y = try b.floats(k)
                for i in 0..<x.count {
                    num += Double(x[i] - y[i]) * Double(x[i] - y[i])
                    den += Double(x[i]) * Double(x[i])
                }
            }
            XCTAssertLessThan((num / den).squareRoot(), 1e-5, "\(name): relative difference of all weights")
            let steps = o1.components(separatedBy: "\n").filter { $0.contains("epoch 1/1 step") }.count
            XCTAssertGreaterThanOrEqual(steps, 2, "a few steps were taken: \(o1)")
            // The trace holds both ranks' events, buckets included when bucketed.
            let trace =
                try JSONSerialization.jsonObject(
                    with: try Data(contentsOf: URL(fileURLWithPath: "\(dir)/\(name).json"))) as! [String: Any]
            let events = trace["traceEvents"] as! [[String: Any]]
            XCTAssertEqual(Set(events.map { $0["pid"] as! Int }), [0, 1])
            XCTAssertEqual(
                events.contains { ($0["name"] as! String).hasPrefix("all-reduce bucket") }, name == "buckets")
            // The run's account of the all-reduce, printed and in metrics.jsonl.
            XCTAssert(o1.contains("gradient all-reduce exposed"), o1)
            let metrics = try String(contentsOfFile: "\(dir)/\(name)/metrics.jsonl", encoding: .utf8)
            XCTAssert(metrics.contains("\"allreduce_exposed_s\""), metrics)
        }
    }

    func testThreeRanksOversubscribedTrainAndCheckpoint() throws {
        let mpi = try mpirun()
        let dir = scratch("mpi3"), cfg = try configFile(dir)
        let (s, o) = try run(
            mpi,
            mpiArgs(3) + [
                Self.binary, "train", "--config", cfg, "--set", "train.run_dir=\(dir)/run",
                "--set", "sampler.ids_per_batch=3"
            ])
        XCTAssertEqual(s, 0, o)
        let latest = try String(contentsOfFile: dir + "/run/checkpoints/latest", encoding: .utf8)
        let st = try Checkpoint.verify(dir + "/run/checkpoints/" + latest)
        XCTAssertEqual(st.worldSize, 3)
        // P not divisible by the ranks is an error before training.
        let (bad, out) = try run(
            mpi, mpiArgs(3) + [Self.binary, "train", "--config", cfg, "--set", "train.run_dir=\(dir)/bad"])
        XCTAssertNotEqual(bad, 0)
        XCTAssert(out.contains("sampler.ids_per_batch = 4 is the global P and must be divisible by the 3 ranks"), out)
    }

    func testTheLaunchIsReadFromTheEnvironment() {
        typealias L = MPICommunicator.Launch
        XCTAssertEqual(MPICommunicator.launch([:]), L.alone)
        XCTAssertEqual(
            MPICommunicator.launch(["OMPI_COMM_WORLD_SIZE": "4", "PMIX_RANK": "1", "SLURM_STEP_NUM_TASKS": "2"]),
            L.mpi(ranks: 4))
        // srun --mpi=pmix
        XCTAssertEqual(MPICommunicator.launch(["PMIX_RANK": "0", "SLURM_STEP_NUM_TASKS": "8"]), L.mpi(ranks: 8))
        XCTAssertEqual(MPICommunicator.launch(["PMI_RANK": "0", "PMI_SIZE": "3"]), L.mpi(ranks: 3))
        XCTAssertEqual(MPICommunicator.launch(["SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"]), L.alone) // one task
        guard case .refused(let why) = MPICommunicator.launch(["SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "2"]) else {
            return XCTFail("plain srun with 4 tasks must be refused")
        }
        XCTAssert(why.contains("4 tasks started by srun without MPI"), why)
    }

    func testGradientSyncAveragesAndEndsItsThreadCleanly() throws {
        // One process: the sum over ranks is the gradient itself, and 1/N = 1.
        let n = 1000
        let g = UnsafeMutablePointer<Float>.allocate(capacity: n)
        defer { g.deallocate() }
        for i in 0..<n { g[i] = Float(i) }
        for _ in 0..<3 {
            let sync = GradientSync(comm: SingleProcess(), grad: g, count: n, bucketBytes: 40_000)
            XCTAssertEqual(sync.buckets.count, 4) // at most a quarter each
            XCTAssertEqual(sync.buckets.first, 750..<1000) // the end of the arena first
            sync.beginStep()
            try sync.ready(500)
            try sync.finish()
            XCTAssertEqual(sync.events.count, 4)
            XCTAssertEqual(g[999], 999)
            XCTAssert(sync.close(), "the communication thread left")
        }
    }

    /// The binary shortens OpenBLAS's worker spin when the user has not chosen one, and keeps
    /// a chosen one (bench prints the value OpenBLAS was loaded with).
    func testOpenBLASWorkersAreQuietUnlessTheUserChose() throws {
        let args = ["bench", "train", "--steps", "1", "--threads", "2", "--cases", "r18w32-128x64-b32", "--no-stages"]
        let (s1, o1) = try run(Self.binary, args, env: ["OPENBLAS_THREAD_TIMEOUT": String?.none])
        XCTAssertEqual(s1, 0, o1)
        XCTAssert(o1.contains("OPENBLAS_THREAD_TIMEOUT=4"), o1)
        let json = scratch("bench-json") + "/bench.json"
        let (s2, o2) = try run(Self.binary, args + ["--json", json], env: ["OPENBLAS_THREAD_TIMEOUT": "20"])
        XCTAssertEqual(s2, 0, o2)
        XCTAssert(o2.contains("OPENBLAS_THREAD_TIMEOUT=20"), o2)
        // --json: the figures printed, with the settings they were measured under
        let report = try XCTUnwrap(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any])
        let rows = try XCTUnwrap(report["train_step"] as? [[String: Any]])
        XCTAssertEqual(rows.map { $0["case"] as? String }, ["r18w32-128x64-b32"])
        let ips = try XCTUnwrap(rows[0]["images_per_second"] as? Double)
        XCTAssert(
            o2.contains(String(format: "%8.2f img/s", ips)), "the printed figure is the written one: \(ips)\n\(o2)")
        XCTAssertEqual(report["threads"] as? Int, 2)
        XCTAssertNotNil(report["sgemm_gflops"] as? Double)
    }

    func testBucketTimesAreCountedOnceWhereTheyOverlap() {
        XCTAssertEqual(GradientSync.covered([(5, 6), (0, 2), (1, 3), (1.5, 2.5)]), 4)
        XCTAssertEqual(GradientSync.covered([]), 0)
    }

    func testShardsAreDisjointCoverAllAndChangeWithTheEpoch() {
        let a = identityShards(classes: 23, ranks: 3, seed: 1, epoch: 0)
        XCTAssertEqual(a.flatMap { $0 }.sorted(), Array(0..<23))
        XCTAssertEqual(Set(a[0]).intersection(a[1]).count, 0)
        XCTAssertNotEqual(a, identityShards(classes: 23, ranks: 3, seed: 1, epoch: 1))
        XCTAssertEqual(a, identityShards(classes: 23, ranks: 3, seed: 1, epoch: 0))
    }

    func testEveryRankTakesTheSameNumberOfSteps() throws {
        let t = try Trainer(
            config: try tinyConfig(scratch("steps"), ["sampler.ids_per_batch=2"]), writeFiles: false, simulateRanks: 2)
        for epoch in 0..<3 {
            let b = t.batches(epoch: epoch)
            XCTAssertEqual(b.count, 2)
            XCTAssertEqual(b[0].count, b[1].count)
            let ids0 = Set(b[0].joined().map { t.dataset.train.samples[$0].label }),
                ids1 = Set(b[1].joined().map { t.dataset.train.samples[$0].label })
            XCTAssert(ids0.isDisjoint(with: ids1), "rank batches come from disjoint identity shards")
        }
    }

    /// A single-process checkpoint continues under 2 ranks from its epoch boundary, saying so.
    func testResumeWithAnotherNumberOfRanks() throws {
        let mpi = try mpirun()
        let dir = scratch("reshard"), cfg = try configFile(dir)
        let (s1, o1) = try run(Self.binary, ["train", "--config", cfg, "--set", "train.run_dir=\(dir)/run"])
        XCTAssertEqual(s1, 0, o1)
        let (s2, o2) = try run(
            mpi,
            mpiArgs(2) + [
                Self.binary, "train", "--config", cfg, "--set", "train.run_dir=\(dir)/run",
                "--set", "schedule.epochs=2", "--resume", "auto"
            ])
        XCTAssertEqual(s2, 0, o2)
        XCTAssert(o2.contains("the checkpoint was written by 1 rank(s), this run has 2"), o2)
        XCTAssert(o2.contains("epoch 2/2 step"), o2)
        let st = try Checkpoint.verify(
            dir + "/run/checkpoints/" + (try String(contentsOfFile: dir + "/run/checkpoints/latest", encoding: .utf8)))
        XCTAssertEqual(st.epoch, 2)
        XCTAssertEqual(st.worldSize, 2)
    }

    /// Unreadable training images: skipped and counted by the rank that drew them, which says
    /// so with its rank; without data.skip_bad_images the job stops naming the file.
    func testBadImagesAreReportedByTheRankThatReadThem() throws {
        let mpi = try mpirun()
        let dir = scratch("badimg"), fm = FileManager.default
        try fm.copyItem(atPath: tinyData, toPath: dir + "/data")
        let train = dir + "/data/bounding_box_train"
        var seen = Set<String>()
        for f in try fm.contentsOfDirectory(atPath: train).sorted() where f.hasSuffix(".jpg") {
            let id = String(f.prefix(4))
            if seen.insert(id).inserted { try Data("not a jpeg".utf8).write(to: URL(fileURLWithPath: train + "/" + f)) }
        }
        let cfg = try configFile(dir)
        let base = mpiArgs(2) + [Self.binary, "train", "--config", cfg, "--set", "data.root=\(dir)/data"]
        let (s, o) = try run(mpi, base + ["--set", "train.run_dir=\(dir)/skip", "--set", "data.skip_bad_images=true"])
        XCTAssertEqual(s, 0, o)
        for r in 0..<2 { XCTAssert(o.contains("rank \(r): warning: "), "rank \(r) reports its skipped images: \(o)") }
        XCTAssert(o.contains("unreadable image(s) skipped so far"), o)
        let (bad, out) = try run(mpi, base + ["--set", "train.run_dir=\(dir)/stop"])
        XCTAssertNotEqual(bad, 0)
        XCTAssert(out.contains("error:") && out.contains(train + "/"), "the error names the image: \(out)")
    }

    /// SIGKILL one rank mid-run: the job ends non-zero within 30 s, the last
    /// checkpoint verifies, and resuming from it completes.
    func testKilledRankEndsTheJobAndTheRunResumes() throws {
        let mpi = try mpirun()
        let dir = scratch("kill"), cfg = try configFile(dir)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: mpi)
        p.arguments =
            mpiArgs(2) + [
                Self.binary, "train", "--config", cfg, "--set", "train.run_dir=\(dir)/run", "--set",
                "schedule.epochs=200"
            ]
        var env = ProcessInfo.processInfo.environment
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        p.environment = env
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        // Wait for a checkpoint, then for training to go on past it.
        let latest = dir + "/run/checkpoints/latest"
        var waited = 0.0
        while !FileManager.default.fileExists(atPath: latest) && waited < 120 {
            usleep(100_000)
            waited += 0.1
        }
        XCTAssert(FileManager.default.fileExists(atPath: latest), "no checkpoint appeared")
        usleep(300_000)
        let (_, children) = try run("/usr/bin/pgrep", ["-P", "\(p.processIdentifier)"])
        let ranks = children.split(separator: "\n").compactMap { Int32($0) }
        XCTAssertEqual(ranks.count, 2, "two rank processes under mpirun: \(children)")
        guard let victim = ranks.last else {
            p.terminate()
            return
        }
        kill(victim, SIGKILL)
        let t0 = Date()
        while p.isRunning && Date().timeIntervalSince(t0) < 30 { usleep(100_000) }
        XCTAssertFalse(p.isRunning, "the job did not end within 30 s of losing a rank")
        if p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        XCTAssertNotEqual(p.terminationStatus, 0)
        let name = try String(contentsOfFile: latest, encoding: .utf8)
        let st = try Checkpoint.verify(dir + "/run/checkpoints/" + name)
        let (s, o) = try run(
            mpi,
            mpiArgs(2) + [
                Self.binary, "train", "--config", cfg, "--set", "train.run_dir=\(dir)/run",
                "--set", "schedule.epochs=\(st.epoch + 1)", "--resume", "auto"
            ])
        XCTAssertEqual(s, 0, o)
        XCTAssert(o.contains("resumed from"), o)
        let after = try Checkpoint.verify(
            dir + "/run/checkpoints/" + (try String(contentsOfFile: latest, encoding: .utf8)))
        XCTAssertEqual(after.epoch, st.epoch + 1)
    }

    /// mpirun evaluate: ranks share the images, rank 0 ranks; the numbers equal
    /// the single-process run exactly.
    func testClusterEvaluationEqualsSingleProcess() throws {
        let mpi = try mpirun()
        let dir = scratch("ceval"), cfg = try configFile(dir)
        let (s0, o0) = try run(Self.binary, ["train", "--config", cfg, "--set", "train.run_dir=\(dir)/run"])
        XCTAssertEqual(s0, 0, o0)
        let common = [
            "evaluate", "--config", cfg, "--set", "train.run_dir=\(dir)/run", "--set", "eval.batch_size=8",
            "--checkpoint", "\(dir)/run"
        ]
        let (s1, o1) = try run(Self.binary, common + ["--json", "\(dir)/one.json"])
        XCTAssertEqual(s1, 0, o1)
        for n in [2, 3] {
            let (s2, o2) = try run(mpi, mpiArgs(n) + [Self.binary] + common + ["--json", "\(dir)/many.json"])
            XCTAssertEqual(s2, 0, o2)
            let a = try EvaluationSummary.read(dir + "/one.json"), b = try EvaluationSummary.read(dir + "/many.json")
            for (k, path) in [("rank1", \EvaluationSummary.rank1), ("rank5", \.rank5), ("mAP", \.mAP), ("mINP", \.mINP)]
            {
                XCTAssertEqual(a[keyPath: path], b[keyPath: path], "\(k) with \(n) ranks")
            }
            XCTAssertEqual(a.cmc, b.cmc)
            XCTAssertEqual(b.ranks, n)
        }
    }

    /// Two ranks stopped after epoch 1 and resumed end with the weights of an uninterrupted 2-epoch run.
    func testResumedTwoRankRunEqualsUninterrupted() throws {
        let mpi = try mpirun()
        let dir = scratch("mpires"), cfg = try configFile(dir)
        let base =
            mpiArgs(2) + [
                Self.binary, "train", "--config", cfg, "--set", "schedule.epochs=2", "--set", "train.bucket_mb=0.05"
            ]
        let (s1, o1) = try run(mpi, base + ["--set", "train.run_dir=\(dir)/whole"])
        XCTAssertEqual(s1, 0, o1)
        let (s2, o2) = try run(mpi, base + ["--set", "train.run_dir=\(dir)/parts", "--stop-after", "1"])
        XCTAssertEqual(s2, 0, o2)
        try resumePartsAndCompare(mpi, base, dir, resumedFrom: "resumed from")
    }

    /// SIGUSR1 to mpirun (what Slurm's --signal sends) at a random step: both ranks finish that
    /// step, rank 0 checkpoints it, the job exits with status 3, and --resume auto ends with
    /// the weights and statistics of an uninterrupted run, bit for bit.
    func testSignalledTwoRankRunResumesToTheSameWeights() throws {
        let mpi = try mpirun()
        let dir = scratch("mpisig"), cfg = try configFile(dir)
        let base =
            mpiArgs(2) + [
                Self.binary, "train", "--config", cfg, "--set", "schedule.epochs=12", "--set",
                "train.checkpoint_every=4",
                "--set", "train.bucket_mb=0.05"
            ]
        let (s1, o1) = try run(mpi, base + ["--set", "train.run_dir=\(dir)/whole"])
        XCTAssertEqual(s1, 0, o1)
        let (p, out) = try startMPI(mpi, base + ["--set", "train.run_dir=\(dir)/parts"])
        let target = Int.random(in: 3...40)
        let metrics = dir + "/parts/metrics.jsonl"
        var waited = 0.0
        while waited < 120 && p.isRunning {
            let text = (try? String(contentsOfFile: metrics, encoding: .utf8)) ?? ""
            if text.contains("\"global_step\":\(target),") { break }
            usleep(2_000)
            waited += 0.002
        }
        kill(p.processIdentifier, SIGUSR1)
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        print("SIGUSR1 after global step \(target)")
        XCTAssertEqual(p.terminationStatus, 3, text)
        XCTAssert(text.contains("stopped on SIGUSR1 after step"), text)
        try resumePartsAndCompare(mpi, base, dir, resumedFrom: "resumed from \(dir)/parts/checkpoints/epoch-")
    }

    /// A rank that stops making progress (SIGSTOP) does not hang the job: the other rank's
    /// step watchdog names the step and ends the job; no process is left behind.
    func testAStalledRankEndsTheJobThroughTheWatchdog() throws {
        let mpi = try mpirun()
        let dir = scratch("stall"), cfg = try configFile(dir)
        let (p, out) = try startMPI(
            mpi,
            mpiArgs(2) + [
                Self.binary, "train", "--config", cfg, "--set", "train.run_dir=\(dir)/run",
                "--set", "schedule.epochs=500", "--set", "train.step_timeout_s=2",
                "--set", "train.checkpoint_every=100"
            ])
        let (text, _) = try stopRank(1, of: p, out) {
            ((try? String(contentsOfFile: dir + "/run/metrics.jsonl", encoding: .utf8)) ?? "").contains(
                "\"global_step\":5,")
        }
        XCTAssert(text.contains("error: no progress for") && text.contains("(train.step_timeout_s 2 s)"), text)
        // The surviving rank names the stopped one: it does not answer its heartbeat.
        XCTAssert(text.contains("does not answer (stopped, or its link is down)"), text)
    }

    /// mpirun's rank processes by rank (OMPI_COMM_WORLD_RANK in their environment), once all
    /// `count` have started (at most 30 s).
    func rankProcesses(of p: Process, count: Int) throws -> [Int: Int32] {
        var byRank: [Int: Int32] = [:]
        let t0 = Date()
        while byRank.count < count && Date().timeIntervalSince(t0) < 30 {
            usleep(10_000)
            let (_, children) = try run("/usr/bin/pgrep", ["-P", "\(p.processIdentifier)"])
            for pid in children.split(separator: "\n").compactMap({ Int32($0) }) {
                let env = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/environ"))) ?? Data()
                for entry in env.split(separator: 0) {
                    let kv = String(decoding: entry, as: UTF8.self)
                    if kv.hasPrefix("OMPI_COMM_WORLD_RANK="), let r = Int(kv.dropFirst(21)) { byRank[r] = pid }
                }
            }
        }
        return byRank
    }

    /// Once `ready()` holds (polled every millisecond, at most 60 s), stops rank `victim` of job `p`
    /// (SIGSTOP) and collects the job's output until it ends (a job still running 60 s later is
    /// ended, so a hang fails the test rather than the suite); returns the output and the seconds
    /// from the stop to the end.
    func stopRank(_ victim: Int, of p: Process, _ out: Pipe, once ready: () -> Bool) throws -> (String, Double) {
        let byRank = try rankProcesses(of: p, count: 2)
        guard let pid = byRank[victim] else {
            p.terminate()
            p.waitUntilExit()
            XCTFail("ranks by pid: \(byRank)")
            return ("", 0)
        }
        var waited = 0.0
        while waited < 60 && !ready() {
            usleep(1_000)
            waited += 0.001
        }
        kill(pid, SIGSTOP)
        let t0 = Date()
        DispatchQueue.global().asyncAfter(deadline: .now() + 60) {
            if p.isRunning {
                kill(pid, SIGKILL)
                p.terminate()
            }
        }
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        let took = Date().timeIntervalSince(t0)
        kill(pid, SIGKILL)
        print(text.split(separator: "\n").filter { $0.contains("heartbeat") }.joined(separator: "\n"))
        print(String(format: "job over %.1f s after the stop", took))
        XCTAssertNotEqual(p.terminationStatus, 0)
        XCTAssertLessThan(took, 30, "the job ended \(took) s after the stop")
        return (text, took)
    }

    /// `mpirun evaluate` is watched too. Rank 0 stopped as soon as it has written the JSON (it then
    /// writes the report) leaves rank 1 in the final barrier; rank 1's pings go unanswered and,
    /// after train.heartbeat_timeout_s, it ends the job naming rank 0 and the evaluation.
    func testAStoppedRankEndsAClusterEvaluationThroughItsHeartbeat() throws {
        let mpi = try mpirun()
        let dir = scratch("heval"), cfg = try configFile(dir)
        let (s0, o0) = try run(Self.binary, ["train", "--config", cfg, "--set", "train.run_dir=\(dir)/run"])
        XCTAssertEqual(s0, 0, o0)
        let (p, out) = try startMPI(
            mpi,
            mpiArgs(2) + [
                Self.binary, "evaluate", "--config", cfg, "--set", "train.heartbeat_timeout_s=3",
                "--checkpoint", "\(dir)/run", "--json", "\(dir)/e.json", "--report", "\(dir)/report"
            ])
        let (text, _) = try stopRank(0, of: p, out) { FileManager.default.fileExists(atPath: dir + "/e.json") }
        XCTAssert(
            text.range(
                of:
                    #"rank 1: error: rank 0 answered no heartbeat for \d+ s in the evaluation \(train.heartbeat_timeout_s 3 s\): "#
                    + "stopped, or its link is down; ending the job. Run it again once every rank is up",
                options: .regularExpression) != nil, text)
    }

    /// Rank 1 stopped as soon as rank 0 has written the first checkpoint: rank 1 is then still
    /// extracting its share of a 1,300-image test set (about 0.2 s), so rank 0 waits on it in the
    /// evaluation, which is not timed (and the step bound is 600 s here). Rank 0's heartbeat pings
    /// go unanswered, and after train.heartbeat_timeout_s it ends the job, naming rank 1 and the
    /// evaluation. (A rank stopped after sending its share would not block rank 0 there: the
    /// shared-memory gather and barrier complete on the sender's messages alone.)
    func testAStoppedRankEndsTheJobThroughItsHeartbeat() throws {
        let mpi = try mpirun()
        let dir = scratch("heartbeat"), cfg = try configFile(dir)
        var synth = SynthConfig()
        synth.trainIds = 8
        synth.testIds = 120
        synth.seed = 11
        _ = try writeSynthetic(synth, to: dir + "/data")
        let (p, out) = try startMPI(
            mpi,
            mpiArgs(2) + [
                Self.binary, "train", "--config", cfg, "--set", "train.run_dir=\(dir)/run",
                "--set", "data.root=\(dir)/data",
                "--set", "schedule.epochs=200", "--set", "train.eval_every=1",
                "--set", "eval.flip=true", "--set", "eval.batch_size=1",
                "--set", "train.step_timeout_s=600", "--set", "train.heartbeat_timeout_s=3"
            ])
        let (text, _) = try stopRank(1, of: p, out) {
            FileManager.default.fileExists(atPath: dir + "/run/checkpoints/latest")
        }
        XCTAssert(
            text.range(
                of: #"rank 0: error: rank 1 answered no heartbeat for \d+ s in the evaluation after epoch 1 "#,
                options: .regularExpression) != nil, text)
        XCTAssert(text.contains("(train.heartbeat_timeout_s 3 s): stopped, or its link is down; ending the job"), text)
        XCTAssertFalse(text.contains("no progress for"), text)
    }

    /// Under Cluster/run-local.sh the first rank's one-line error is the last line the user sees,
    /// after Open MPI's banners; the binary tells its version.
    func testRunLocalEndsWithTheFirstRanksError() throws {
        _ = try mpirun()
        let dir = scratch("runlocal"), cfg = try configFile(dir)
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
            .appendingPathComponent("Cluster/run-local.sh").path
        let (s, o) = try run(
            script, ["3", cfg, "--set", "sampler.ids_per_batch=4", "--set", "train.run_dir=\(dir)/run"],
            env: ["REID_DIST_BIN": Self.binary])
        XCTAssertNotEqual(s, 0, o)
        let last = o.split(separator: "\n").last.map(String.init) ?? ""
        XCTAssert(
            last.hasPrefix("run-local.sh: job failed") && last.contains("first error: rank ")
                && last.contains("divisible by the 3 ranks"), last)
        let (v, version) = try run(Self.binary, ["--version"])
        XCTAssertEqual(v, 0)
        XCTAssertEqual(version.trimmingCharacters(in: .whitespacesAndNewlines), reidDistVersion)
    }

    /// Cluster/sim-cluster.sh, or a skip saying why this machine cannot make network namespaces.
    func simCluster() throws -> String {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
            .appendingPathComponent("Cluster/sim-cluster.sh").path
        guard getuid() == 0 else { throw XCTSkip("simulated cluster: needs root for network namespaces") }
        let probe = "rdprobe\(getpid())"
        let (s, o) = try run("/bin/sh", ["-c", "ip netns add \(probe) && ip netns del \(probe)"])
        guard s == 0 else {
            throw XCTSkip(
                "simulated cluster: this machine cannot make network namespaces (\(o.trimmingCharacters(in: .whitespacesAndNewlines)))"
            )
        }
        return script
    }

    /// Two namespace "nodes" over a shaped 1 Gbit/s link: a few training steps as one MPI job,
    /// then node 2's link goes down mid-training: the surviving rank's watchdog names the step
    /// and stops within train.step_timeout_s, the last checkpoint verifies, and once the link is
    /// back (a new cluster) --resume auto continues.
    func testSimulatedClusterTrainsAndSurvivesALinkGoingDown() throws {
        let script = try simCluster()
        let dir = scratch("simcluster"), cfg = try configFile(dir)
        let t0 = Date()
        var (s, o) = try run(
            script,
            [
                "2", "--rate", "1gbit", "--timeout", "60", "--", "train", "--config", cfg,
                "--set", "train.run_dir=\(dir)/run"
            ], timeout: 90)
        XCTAssertEqual(s, 0, o)
        XCTAssert(o.contains("2 MPI ranks") && o.contains("epoch 1/1 step"), o)
        print(String(format: "simulated 2-node training: %.1f s", Date().timeIntervalSince(t0)))
        // A dead link: the job ends --grace seconds after the first error at the latest (Open MPI's
        // abort alone waited for the unreachable node until the launcher's limit, then crashed in
        // PMIx_Finalize), with no crash report, the first error repeated as the last line.
        let tDown = Date()
        (s, o) = try run(
            script,
            [
                "2", "--rate", "1gbit", "--timeout", "120", "--grace", "10", "--link-down", "2@7", "--", "train",
                "--config", cfg,
                "--set", "train.run_dir=\(dir)/down", "--set", "schedule.epochs=400", "--set", "train.step_timeout_s=3"
            ], timeout: 150)
        let took = Date().timeIntervalSince(tDown)
        XCTAssertNotEqual(s, 0, o)
        XCTAssertLessThan(took, 45, "ended within the grace after the error, not at --timeout: \(o)")
        XCTAssertFalse(o.contains("End of error message") || o.contains("Segmentation fault"), "no crash report: \(o)")
        let lastLine = o.split(separator: "\n").last.map(String.init) ?? ""
        XCTAssert(
            lastLine.hasPrefix("sim-cluster: job failed (exit 1); first error: rank 0: error: no progress"), lastLine)
        XCTAssert(o.contains("link of node 2 down") && o.contains("error: no progress for"), o)
        XCTAssert(
            o.contains("rank 0: error: no progress") && o.contains("rank 1 does not answer"),
            "rank 0 names rank 1, behind the link: \(o)")
        let latest = try String(contentsOfFile: dir + "/down/checkpoints/latest", encoding: .utf8)
        let st = try Checkpoint.verify(dir + "/down/checkpoints/" + latest)
        (s, o) = try run(
            script,
            [
                "2", "--rate", "1gbit", "--timeout", "60", "--", "train", "--config", cfg,
                "--set", "train.run_dir=\(dir)/down", "--set", "schedule.epochs=\(st.epoch + 1)", "--resume", "auto"
            ], timeout: 90)
        XCTAssertEqual(s, 0, o)
        XCTAssert(o.contains("resumed from \(dir)/down/checkpoints/\(latest)"), o)
        // SIGKILL of a rank inside a node: the job ends within 30 s, as on one machine.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: script)
        p.arguments = [
            "2", "--rate", "1gbit", "--timeout", "90", "--", "train", "--config", cfg, "--set",
            "train.run_dir=\(dir)/kill",
            "--set", "schedule.epochs=400"
        ]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        var waited = 0.0
        while waited < 60
            && !((try? String(contentsOfFile: dir + "/kill/metrics.jsonl", encoding: .utf8)) ?? "").contains(
                "\"global_step\":5,")
        {
            usleep(50_000)
            waited += 0.05
        }
        // The rank processes: argv[0] is the reid-dist binary (mpirun and the script only pass it on).
        let ranks = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }
            .filter {
                let argv = ((try? String(contentsOfFile: "/proc/\($0)/cmdline", encoding: .utf8)) ?? "").split(
                    separator: "\0")
                return argv.first?.hasSuffix("reid-dist") == true && argv.contains { $0.contains("\(dir)/kill") }
            }
        XCTAssertEqual(ranks.count, 2, "two ranks in the simulated nodes")
        if let victim = ranks.last { kill(victim, SIGKILL) }
        let t1 = Date()
        while p.isRunning && Date().timeIntervalSince(t1) < 30 { usleep(100_000) }
        XCTAssertFalse(p.isRunning, "the job did not end within 30 s of losing a rank")
        if p.isRunning {
            p.terminate()
            p.waitUntilExit()
        }
    }

    /// train.grad_dtype bfloat16 / float16: the gradients cross in 16 bits, blocking and
    /// bucketed; the run ends close to the float32 one (the same steps, rounding apart), and
    /// says how it averaged.
    func testSixteenBitGradientExchangeTrainsCloseToFloat32() throws {
        let mpi = try mpirun()
        let dir = scratch("half"), cfg = try configFile(dir)
        let (s0, o0) = try run(
            mpi, mpiArgs(2) + [Self.binary, "train", "--config", cfg, "--set", "train.run_dir=\(dir)/f32"])
        XCTAssertEqual(s0, 0, o0)
        let reference = try model(dir + "/f32")
        for (kind, bucket) in [("bfloat16", "0.05"), ("float16", "0"), ("bfloat16", "0")] {
            let name = "\(kind)-\(bucket)"
            let (s, o) = try run(
                mpi,
                mpiArgs(2) + [
                    Self.binary, "train", "--config", cfg, "--set", "train.run_dir=\(dir)/\(name)",
                    "--set", "train.grad_dtype=\(kind)", "--set", "train.bucket_mb=\(bucket)"
                ])
            XCTAssertEqual(s, 0, o)
            XCTAssert(o.contains("gradients sent as \(kind)"), o)
            let m = try model(dir + "/" + name)
            var num = 0.0, den = 0.0, same = true
            for (k, t) in reference.tensors where t.dtype == .F32 {
                let x = try reference.floats(k), y = try m.floats(k)
                if x != y { same = false }
                for i in 0..<x.count {
                    num += Double(x[i] - y[i]) * Double(x[i] - y[i])
                    den += Double(x[i]) * Double(x[i])
                }
            }
            let rel = (num / den).squareRoot()
            print("\(name): relative difference of all weights from float32's: \(rel)")
            XCTAssertFalse(same, "\(name): the 16-bit exchange changed nothing, so it did not happen")
            XCTAssertLessThan(rel, 1e-2, name)
        }
    }
}
