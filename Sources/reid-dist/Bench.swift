// `reid-dist bench`: sgemm speed, per-stage ResNet-50 times, training-step
// throughput of the grouped multi-branch network, peak memory, and (with
// --torch-python) PyTorch's numbers for the same cases measured in the same run.
import ArgumentParser
import Foundation
import ReIDCore
import ReIDDist

struct BenchCase: Codable {
    let name: String, depth: Int, width: Int, height: Int, imageWidth: Int, batch: Int, classes: Int
}

let benchCases = [
    BenchCase(name: "r50-256x128-b16", depth: 50, width: 64, height: 256, imageWidth: 128, batch: 16, classes: 751),
    BenchCase(name: "r18-256x128-b32", depth: 18, width: 64, height: 256, imageWidth: 128, batch: 32, classes: 751),
    BenchCase(name: "r18w32-128x64-b32", depth: 18, width: 32, height: 128, imageWidth: 64, batch: 32, classes: 751)
]

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks: training step (default) and evaluation.",
        subcommands: [BenchTrain.self, BenchConvs.self, BenchEval.self, BenchAllreduce.self, BenchPlan.self],
        defaultSubcommand: BenchTrain.self)
}

extension WireType: ExpressibleByArgument {}
extension ConvAlgorithm: ExpressibleByArgument {}
extension KernelPath: ExpressibleByArgument {}
enum WinogradFusionChoice: String, ExpressibleByArgument, CaseIterable {
    case `default`, none, all
    var fusion: Winograd.Fusion {
        switch self {
        case .default: .default
        case .none: .none
        case .all: .all
        }
    }
}

/// How the 7x7 stem runs under `options`, for the first line and the JSON.
func stemKernel(_ options: EngineOptions) -> String {
    let path = options.effectiveKernelPath.name
    return options.directStemRuns
        ? "direct 7x7, \(path)" : "blocked im2col + GEMM (the C kernels run \(path) here, slower)"
}

/// Whether this process is a rank other than 0 of an MPI job (its launcher's environment says so).
let isNonRootRank: Bool = {
    let env = ProcessInfo.processInfo.environment
    let rank = env["OMPI_COMM_WORLD_RANK"] ?? env["PMI_RANK"] ?? env["PMIX_RANK"] ?? "0"
    return rank != "0"
}()

/// print, on rank 0 only.
func say(_ s: String) { if !isNonRootRank { print(s) } }

struct BenchTrain: ParsableCommand {
    var comm: Communicator = SingleProcess()
    enum CodingKeys: CodingKey {
        case steps, threads, cases, noStages, torchPython, torchScript, json, bucketMb, gradDtype, convAlgorithm,
            winogradFusion, kernels, scaling
    }
    @Option(help: "3x3 stride-1 convolutions: auto, gemm or winograd (as model.conv_algorithm).")
    var convAlgorithm: ConvAlgorithm = .auto
    @Option(help: "Which Winograd passes run fused, block by block: default (thin layers), none or all.")
    var winogradFusion: WinogradFusionChoice = .default
    @Option(
        help:
            "Limit the C kernels (the direct stem, the Winograd transforms) to this vector path: avx512, avx2 or portable (default: the best this processor runs)."
    )
    var kernels: KernelPath?
    @Option(help: "Under mpirun: the gradients' type in the all-reduce (float32, bfloat16, float16).")
    var gradDtype: WireType = .float32
    @Option(
        parsing: .unconditional,
        help:
            "Under mpirun: gradient all-reduce bucket size in MB, overlapped with backward (0: blocking after backward)."
    )
    var bucketMb = 25.0
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Measure sgemm, per-stage and training-step speed, and peak memory.",
        discussion: """
            OpenBLAS reads OPENBLAS_CORETYPE at start; for figures that represent this CPU run
            `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE reid-dist bench`. The kernel in use is printed.
            """)

    @Option(
        parsing: .unconditional, help: "Timed training steps per case (after 2 warm-up steps); the median is reported.")
    var steps = 5
    @Option(
        parsing: .unconditional,
        help:
            "Threads for OpenBLAS and the engine's loops (default: the cores of this process's affinity mask shared among the ranks on its node)."
    )
    var threads: Int?
    /// --threads, or the cores this rank may use (as train.threads 0 gives it).
    var threadCount: Int { threads ?? max(1, availableCores() / max(comm.localSize, 1)) }
    @Option(help: "Cases to run (comma-separated): \(benchCases.map(\.name).joined(separator: ",")), or 'all'.")
    var cases = "r50-256x128-b16,r18w32-128x64-b32"
    @Flag(help: "Skip the per-stage timing of each case.")
    var noStages = false
    @Flag(help: "Also run every case with 1 thread and print the scaling efficiency of --threads.")
    var scaling = false
    @Option(help: "A Python with torch: runs Cluster/python/torch_baseline.py in the same run and prints ratios.")
    var torchPython: String?
    @Option(help: "Path of the PyTorch baseline script (default: Cluster/python/torch_baseline.py of this checkout).")
    var torchScript = repositoryFile("Cluster/python/torch_baseline.py")
    @Option(help: "Write all figures as JSON to this file.")
    var json: String?

    func validate() throws {
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1") }
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1, got \(t)") }
        let known = Set(benchCases.map(\.name))
        for c in selected where !known.contains(c) {
            throw ValidationError("unknown case '\(c)'; known: \(known.sorted().joined(separator: ", "))")
        }
        if let p = torchPython, !FileManager.default.isExecutableFile(atPath: p) {
            throw ValidationError("--torch-python \(p) is not an executable")
        }
        if torchPython != nil, !FileManager.default.fileExists(atPath: torchScript) {
            throw ValidationError("--torch-script \(torchScript) does not exist")
        }
    }

    var selected: [String] { cases == "all" ? benchCases.map(\.name) : cases.split(separator: ",").map(String.init) }

    /// The engine options every model of this benchmark computes with, on `threads` threads.
    func engine(threads: Int) -> EngineOptions {
        EngineOptions(
            threads: threads, convAlgorithm: convAlgorithm, kernelPath: kernels ?? .avx512,
            winogradFusion: winogradFusion.fusion)
    }

    mutating func run() throws {
        let comm = try MPICommunicator.forThisProcess()
        defer { (comm as? MPICommunicator)?.finalize() }
        self.comm = comm
        let threads = threadCount, options = engine(threads: threads)
        let kernelPath = options.effectiveKernelPath
        if let kernels, kernelPath != kernels {
            say("note: this processor has no \(kernels.rawValue) path; the kernels run \(kernelPath.name)")
        }
        setBLASThreads(threads)
        let env = ProcessInfo.processInfo.environment
        let coretype = env["OPENBLAS_CORETYPE"] ?? "(unset)"
        say(
            "convolutions: \(convAlgorithm.rawValue) (3x3 stride 1), Winograd fusion \(winogradFusion.rawValue); OpenBLAS \(blasCoreName()) kernel, OPENBLAS_CORETYPE=\(coretype), \(threads) thread(s)\(self.threads == nil ? " per rank (\(availableCores()) cores allowed / \(comm.localSize) rank(s) on this node)" : ""), OPENBLAS_THREAD_TIMEOUT=\(ProcessInfo.processInfo.environment["OPENBLAS_THREAD_TIMEOUT"] ?? "(unset)"); engine loops: \(engineVectorPath); stem: \(stemKernel(options)); F(2x2) transforms: \(Winograd.transformPath(options)); F(4x4) transforms: C, \(kernelPath.name)"
        )
        let gf = measureSGEMM()
        say(String(format: "sgemm 2048x2048x2048: %.1f GFLOP/s", gf))
        var report = BenchReport(
            openblasCore: blasCoreName(), openblasCoretype: coretype, threads: threads,
            convAlgorithm: convAlgorithm.rawValue, winogradFusion: winogradFusion.rawValue,
            engineVectorPath: engineVectorPath, stemKernel: stemKernel(options),
            winogradTransforms: Winograd.transformPath(options), winograd4Transforms: kernelPath.name,
            sgemmGflops: gf)
        if !noStages {
            var stages: [String: [BenchReport.StageTime]] = [:]
            for name in selected { stages[name] = stageTimes(benchCases.first { $0.name == name }!, options) }
            report.stages = stages
        }
        for name in selected {
            let c = benchCases.first { $0.name == name }!
            report.trainStep.append(try trainStep(c, options))
        }
        if scaling, threads > 1, comm.size == 1 { report.scaling = try scalingRows(report.trainStep, threads: threads) }
        report.peakRssMb = peakRSSMB()
        say(String(format: "peak resident memory: %.0f MB", report.peakRssMb))
        if let py = torchPython { report.torch = runTorch(py, ours: report.trainStep) }
        if let json, comm.isRoot {
            try report.json().write(to: URL(fileURLWithPath: json))
            say("wrote \(json)")
        }
    }

    /// Forward and backward time of each backbone stage of a case.
    func stageTimes(_ c: BenchCase, _ options: EngineOptions) -> [BenchReport.StageTime] {
        let net = GroupedMultiBranchNet(ModelSpec(depth: c.depth, width: c.width, classes: c.classes), options: options)
        let x = Tensor([c.batch, 3, c.height, c.imageWidth])
        var rng = RNG(key: 1)
        for i in 0..<x.count { x.ptr[i] = Float(rng.normal()) }
        let labels = (0..<c.batch).map { $0 % c.classes }
        _ = net.forwardLoss(x, labels: labels, labelSmoothing: 0.1)
        net.backward() // sizes every buffer
        guard let bb = net.resnet else { return [] } // per-stage timing is ResNet's
        var fwd = [Double](repeating: .infinity, count: 5), bwd = fwd
        for _ in 0..<3 {
            var t = bb.input
            for s in 0..<5 {
                let t0 = Profile.now()
                t = bb.forwardStage(s, t, training: true)
                fwd[s] = min(fwd[s], Profile.now() - t0)
            }
            let g = bb.featureGradBuffer(t.shape)
            for i in 0..<g.count { g.ptr[i] = 1e-3 }
            var d = g
            for s in stride(from: 4, through: 0, by: -1) {
                let t0 = Profile.now()
                d = bb.backwardStage(s, d)
                bwd[s] = min(bwd[s], Profile.now() - t0)
            }
        }
        let names = ["stem", "layer1", "layer2", "layer3", "layer4"]
        say("\(c.name), per stage (best of 3):")
        return (0..<5).map { s in
            say(String(format: "  %-7@ forward %7.1f ms   backward %7.1f ms", names[s], fwd[s] * 1e3, bwd[s] * 1e3))
            return BenchReport.StageTime(stage: names[s], forwardMs: fwd[s] * 1e3, backwardMs: bwd[s] * 1e3)
        }
    }

    /// Median training step (forward, loss, backward, gradient averaging, SGD update) of the
    /// full network: the trainer's own TrainingStep on a fixed random batch.
    func trainStep(_ c: BenchCase, _ options: EngineOptions) throws -> BenchReport.StepFigures {
        let net = GroupedMultiBranchNet(ModelSpec(depth: c.depth, width: c.width, classes: c.classes), options: options)
        let opt = Optimizer(.sgd, paramCount: net.arena.paramCount, momentum: 0.9, weightDecay: 5e-4)
        let x = Tensor([c.batch, 3, c.height, c.imageWidth])
        var rng = RNG(key: 2)
        for i in 0..<x.count { x.ptr[i] = Float(rng.normal()) }
        let labels = (0..<c.batch).map { _ in rng.below(c.classes) }
        let averaging = try makeGradientAveraging(
            comm: comm, simulatedRanks: 1, arena: net.arena, bucketBytes: Int(bucketMb * 1_048_576),
            wire: gradDtype)
        defer { averaging.close() }
        let step = TrainingStep(model: net, optimizer: opt, averaging: averaging, labelSmoothing: 0.1)
        var times: [Double] = [], waits: [Double] = [], busy: [Double] = []
        let profile = Profile()
        for i in 0..<(steps + 2) {
            if i == 2 { net.ws.profile = profile }
            let r = try step.run(lr: 0.01, context: "bench step \(i + 1)") { _ in (x, labels) }
            if i >= 2 {
                let wait = r.total(.allreduceWait)
                times.append(r.seconds)
                waits.append(wait)
                busy.append(r.buckets.isEmpty ? wait : GradientSync.covered(r.buckets.map { ($0.start, $0.end) }))
            }
        }
        net.ws.profile = nil
        let med = times.sorted()[times.count / 2]
        let total = times.reduce(0, +)
        var parts: [String: Double] = [:]
        var accounted = 0.0
        for p in Profile.Part.allCases where p != .other {
            parts["\(p)"] = profile.seconds[p.rawValue] / total
            accounted += profile.seconds[p.rawValue]
        }
        parts["other"] = max(0, 1 - accounted / total)
        let split = ["gemm", "im2col", "batchnorm", "pool", "other"].map {
            String(format: "%@ %.0f%%", $0, parts[$0]! * 100)
        }
        let world = Double(comm.size)
        let commTime = waits.reduce(0, +)
        var hidden = 0.0, exposed = 0.0, imbalance = 0.0, blocking = 0.0, inFlight = 0.0
        if comm.size > 1 {
            // The reduction alone, blocking, after a barrier: what overlapping can hide.
            blocking = .infinity
            for _ in 0..<3 {
                try comm.barrier()
                let t = Profile.now()
                try comm.allreduceSum(net.arena.grad, net.arena.paramCount)
                blocking = min(blocking, Profile.now() - t)
            }
            // Per step: exposed all-reduce and imbalance between ranks (GradientSync.splitWaits).
            let split = GradientSync.splitWaits(try comm.allgather(waits))
            exposed = split.exposed / Double(waits.count)
            imbalance = split.imbalance / Double(waits.count)
            inFlight = busy.reduce(0, +) / Double(busy.count)
            hidden = max(0, 1 - exposed / blocking)
        }
        let ranksNote =
            comm.size > 1
            ? String(
                format:
                    " x %d ranks (all-reduce alone %.0f ms, in flight %.0f ms/step, exposed %.0f ms = %.0f%% hidden; waiting for the slower rank %.0f ms)",
                comm.size, blocking * 1e3, inFlight * 1e3, exposed * 1e3, hidden * 100, imbalance * 1e3) : ""
        say(
            String(
                format: "%-20@ b=%-3d %8.1f ms/step %8.2f img/s%@   [%@]", c.name, c.batch, med * 1e3,
                Double(c.batch) * world / med, ranksNote, split.joined(separator: ", ")))
        return BenchReport.StepFigures(
            caseName: c.name, batch: c.batch, ranks: comm.size, msPerStep: med * 1e3,
            imagesPerSecond: Double(c.batch) * world / med, allreduceWaitFraction: commTime / total,
            allreduceBlockingMs: blocking * 1e3, allreduceInFlightMs: inFlight * 1e3, allreduceExposedMs: exposed * 1e3,
            allreduceHiddenFraction: hidden, rankImbalanceMs: imbalance * 1e3, timeFraction: parts)
    }

    /// Every case again with 1 thread: efficiency = images/s with N threads / (N x images/s with 1).
    func scalingRows(_ rows: [BenchReport.StepFigures], threads: Int) throws -> [BenchReport.ScalingRow] {
        setBLASThreads(1)
        defer { setBLASThreads(threads) }
        say("with 1 thread, for the scaling of \(threads):")
        var out: [BenchReport.ScalingRow] = []
        for (name, row) in zip(selected, rows) {
            let one = try trainStep(benchCases.first { $0.name == name }!, engine(threads: 1))
            let r1 = one.imagesPerSecond, rn = row.imagesPerSecond
            let eff = rn / (Double(threads) * r1)
            say(
                String(
                    format: "  %-20@ 1 thread %.2f img/s, %d threads %.2f img/s: %.2fx, scaling efficiency %.0f%%",
                    name, r1, threads, rn, rn / r1, eff * 100))
            out.append(
                BenchReport.ScalingRow(
                    caseName: name, oneThreadImagesPerSecond: r1, threads: threads, imagesPerSecond: rn, efficiency: eff
                ))
        }
        return out
    }

    func runTorch(_ py: String, ours: [BenchReport.StepFigures]) -> BenchReport.TorchComparison {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("torch-bench-\(getpid()).json").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: py)
        p.arguments = [torchScript, "--threads", "\(threadCount)", "--steps", "\(steps)", "--json", out]
        say("PyTorch baseline (\(torchScript)):")
        do {
            try p.run()
            p.waitUntilExit()
        } catch {
            say("  could not run \(py): \(error)")
            return BenchReport.TorchComparison(error: "\(error)")
        }
        guard p.terminationStatus == 0, let data = try? Data(contentsOf: URL(fileURLWithPath: out)),
            let rows = try? JSONDecoder().decode([BenchReport.TorchRow].self, from: data)
        else {
            say("  the baseline failed (exit \(p.terminationStatus))")
            return BenchReport.TorchComparison(error: "exit \(p.terminationStatus)")
        }
        var ratios: [BenchReport.Ratio] = []
        say("reid-dist / PyTorch (best of its layouts), images/s:")
        for r in ours {
            let name = r.caseName, mine = r.imagesPerSecond
            guard let theirs = rows.filter({ $0.caseName == name }).map(\.imagesPerSecond).max() else { continue }
            say(String(format: "  %-20@ %8.1f vs %8.1f  ratio %.2f", name, mine, theirs, mine / theirs))
            ratios.append(BenchReport.Ratio(caseName: name, reidDist: mine, torch: theirs, ratio: mine / theirs))
        }
        return BenchReport.TorchComparison(rows: rows, ratios: ratios)
    }
}

/// Peak resident set size of this process in MB (VmHWM).
func peakRSSMB() -> Double {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in s.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let kb = line.split(separator: " ").compactMap { Double($0) }.first ?? 0
        return kb / 1024
    }
    return 0
}

/// Best-of-5 sgemm rate at 2048^3 after a warm-up call, in GFLOP/s.
func measureSGEMM() -> Double {
    let n = 2048
    let a = Tensor([n, n]), b = Tensor([n, n]), c = Tensor([n, n])
    for i in 0..<a.count {
        a.ptr[i] = Float(i % 7) * 0.1
        b.ptr[i] = Float(i % 5) * 0.1
    }
    sgemm(m: n, n: n, k: n, a: a.ptr, b: b.ptr, c: c.ptr)
    var best = Double.infinity
    for _ in 0..<5 {
        let t = Profile.now()
        sgemm(m: n, n: n, k: n, a: a.ptr, b: b.ptr, c: c.ptr)
        best = min(best, Profile.now() - t)
    }
    return 2 * Double(n * n * n) / best / 1e9
}

/// `reid-dist bench allreduce` (under mpirun): in-place sum all-reduce of 1, 25
/// and 100 MB of floats against a plain memcpy of the same size.
struct BenchAllreduce: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allreduce",
        abstract: "All-reduce bandwidth between ranks (run under mpirun -np N).")
    @Option(parsing: .unconditional, help: "Repetitions per size.") var reps = 10
    @Option(
        help:
            "Type on the wire: float32, or bfloat16 / float16 (the same gradients in half the bytes, converted both ways)."
    )
    var dtype: WireType = .float32

    func run() throws {
        let comm = try MPICommunicator.forThisProcess()
        guard let mpi = comm as? MPICommunicator else {
            throw ValidationError(
                "run it under MPI: Cluster/run-local.sh is for training; use mpirun -np 2 reid-dist bench allreduce")
        }
        defer { mpi.finalize() }
        for mb in [1, 25, 100] {
            let n = mb * 262_144 // mb MB of float32 gradients
            let a = Tensor([n]), b = Tensor([n])
            for i in 0..<n { a.ptr[i] = 1 }
            let stage = UnsafeMutablePointer<UInt16>.allocate(capacity: n)
            defer { stage.deallocate() }
            // One all-reduce of these gradients, converted when 16-bit (the conversions are timed too).
            func once() throws {
                if dtype == .float32 {
                    try comm.allreduceSum(a.ptr, n)
                    return
                }
                dtype.narrow(a.ptr, stage, n)
                try comm.allreduceSumHalf(stage, n, dtype)
                dtype.widen(stage, a.ptr, n, scale: 1 / Float(comm.size))
            }
            try once()
            var best = Double.infinity, copy = Double.infinity
            for _ in 0..<reps {
                try comm.barrier()
                let t = Profile.now()
                try once()
                best = min(best, Profile.now() - t)
                let t2 = Profile.now()
                b.ptr.update(from: a.ptr, count: n)
                copy = min(copy, Profile.now() - t2)
            }
            if comm.isRoot {
                print(
                    String(
                        format:
                            "%4d MB: all-reduce %8.2f ms (%6.2f GB/s algorithm bandwidth), memcpy %6.2f ms (%6.2f GB/s), %d ranks%@",
                        mb, best * 1e3, Double(n * 4) / best / 1e9, copy * 1e3, Double(n * 4) / copy / 1e9, comm.size,
                        dtype == .float32 ? "" : ", sent as \(dtype.rawValue)"))
            }
        }
    }
}

/// A file of this checkout: `relative` to the working directory when it is there, else to the
/// repository the binary was built in (.build/<config>/reid-dist -> the folder holding .build).
func repositoryFile(_ relative: String) -> String {
    if FileManager.default.fileExists(atPath: relative) { return relative }
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent(relative).path
        if FileManager.default.fileExists(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    return relative
}
