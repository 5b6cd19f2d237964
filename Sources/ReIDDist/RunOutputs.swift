// Everything a training run says and leaves behind, in one place: progress
// lines on the console, `metrics.jsonl` (one JSON object per line: "train",
// "eval", "comm"), the Chrome trace of the first steps and the end-of-run
// summary. Rank 0 alone prints and writes; every rank calls the same methods
// (the collectives inside need them all), and each rank prints its own warnings.
import Foundation
import ReIDCore
import ReIDEval
import ReIDReport

/// This program's version, in run.json and the report.
public let reidDistVersion = "0.14.0"

public final class RunOutputs {
    /// Prints a line (rank 0; a no-op elsewhere). Tests replace it.
    public var log: (String) -> Void
    let comm: Communicator
    let metrics: FileHandle?
    /// The run folder, on rank 0 when it writes files; nil elsewhere.
    let runDir: String?
    /// What run.json says of this run (ranks, threads, processor, ...).
    public var runInfo: [String: Any] = [:]
    public internal(set) var windowWait = 0.0
    let logEvery: Int, heads: Double, worldSize: Int, averagingNote: String

    // The run.
    var runStart = 0.0, imagesSeen = 0
    /// This rank's wait for the all-reduce after backward, per step.
    public internal(set) var allreduceWaits: [Double] = []
    var plan = (epochs: 0, end: 0, imagesPerStep: 0)
    // The epoch, summed over ranks.
    var epoch = 0, steps = 0
    var lossSum = 0.0, seen = 0, correct = 0
    var windowStart = 0.0, windowImages = 0
    /// Mean training loss of the epoch so far.
    public var epochLoss: Double { lossSum / Double(Swift.max(seen, 1)) }
    // The trace.
    let tracePath: String?
    static let tracedSteps = 50
    var tracedSteps = 0
    var traceEvents: [(kind: TraceKind, start: Double, duration: Double)] = []

    /// Makes the run folder, `config.yaml` and `metrics.jsonl` (appended to) when `runDir` is
    /// given and this is rank 0.
    public init(
        runDir: String?, configYAML: String, comm: Communicator, logEvery: Int, heads: Int, worldSize: Int,
        averaging: String, tracePath: String?
    ) throws {
        self.comm = comm
        self.logEvery = logEvery
        self.heads = Double(heads)
        self.worldSize = worldSize
        self.averagingNote = averaging
        self.tracePath = tracePath
        log =
            comm.isRoot
            ? {
                print($0)
                fflush(stdout)
            } : { _ in }
        self.runDir = comm.isRoot ? runDir : nil
        if let runDir, comm.isRoot {
            try createFolder(runDir, what: "train.run_dir")
            try writeAtomically(Data(configYAML.utf8), to: (runDir as NSString).appendingPathComponent("config.yaml"))
            let path = (runDir as NSString).appendingPathComponent("metrics.jsonl")
            if !FileManager.default.fileExists(atPath: path)
                && !FileManager.default.createFile(atPath: path, contents: nil)
            {
                throw FileWriteError(path, "cannot create the metrics file")
            }
            guard let handle = FileHandle(forWritingAtPath: path) else {
                throw FileWriteError(path, "cannot open the metrics file for writing")
            }
            handle.seekToEndOfFile()
            metrics = handle
        } else {
            metrics = nil
        }
    }

    /// A warning of this rank's own (its shard's images, say): under MPI every rank prints
    /// its own on standard error, with its rank.
    public func warn(_ s: String) {
        if comm.size > 1 {
            FileHandle.standardError.write(Data("rank \(comm.rank): warning: \(s)\n".utf8))
        } else {
            log("warning: " + s)
        }
    }

    /// One line of metrics.jsonl (rank 0 of a run that writes files).
    public func record<R: Encodable>(_ r: R) {
        guard let metrics else { return }
        do { metrics.write(try MetricsFile.line(r)) } catch { warn("a metrics record could not be written: \(error)") }
    }

    public func beginRun(epochs: Int, until end: Int, imagesPerStep: Int) {
        runStart = Profile.now()
        imagesSeen = 0
        allreduceWaits = []
        plan = (epochs, end, imagesPerStep)
        writeRunInfo(finished: false)
    }

    /// run.json: who ran this and how (rank 0); wall time summed over the run's jobs.
    func writeRunInfo(finished: Bool) {
        guard let runDir else { return }
        let path = (runDir as NSString).appendingPathComponent("run.json")
        var info =
            ((try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path)))) as? [String: Any])
            ?? [:]
        let cpu =
            ((try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? "").split(separator: "\n")
            .first { $0.hasPrefix("model name") }.map {
                String($0.split(separator: ":", maxSplits: 1).last ?? "").trimmingCharacters(in: .whitespaces)
            } ?? "?"
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, 255)
        for (k, v) in runInfo { info[k] = v }
        info["processor"] = cpu
        info["blas_kernel"] = blasCoreName()
        info["openblas"] = blasConfig()
        info["reid_dist_version"] = reidDistVersion
        info["host"] = String(cString: host)
        info["ranks"] = worldSize
        if finished {
            info["wall_s"] = ((info["wall_s"] as? NSNumber)?.doubleValue ?? 0) + (Profile.now() - runStart)
            info["jobs"] = ((info["jobs"] as? NSNumber)?.intValue ?? 0) + 1
        } else if info["started"] == nil {
            info["started"] = ISO8601DateFormatter().string(from: Date())
        }
        if let data = try? JSONSerialization.data(withJSONObject: info, options: [.prettyPrinted, .sortedKeys]) {
            try? writeAtomically(data, to: path)
        }
    }

    /// The run's report.html (and report/*.svg), rank 0; a failure is a warning, never the run's end.
    public func writeReport() {
        guard let runDir else { return }
        do {
            let path = try RunReport.write(runDir: runDir)
            log("report: \(path)")
        } catch { warn("the run report could not be written: \(error)") }
    }

    /// An epoch begins; a resumed one carries its summed loss, images and correct predictions so far.
    public func beginEpoch(_ e: Int, steps n: Int, progress: [Double]? = nil) {
        epoch = e
        steps = n
        lossSum = progress?[0] ?? 0
        seen = Int(progress?[1] ?? 0)
        correct = Int(progress?[2] ?? 0)
        windowStart = Profile.now()
        windowImages = 0
    }

    /// The epoch's loss sum, images and correct predictions so far (for a mid-epoch checkpoint).
    public var epochProgress: [Double] { [lossSum, Double(seen), Double(correct)] }

    /// After each step, with its figures summed over ranks: the epoch's sums and the trace.
    /// Returns whether the step ends a log window (every `logEvery` steps and at the epoch's end):
    /// then the caller gathers every rank's `windowWait` and calls `logWindow`.
    public func stepDone(_ r: StepResult, totals: StepTotals, step: Int) -> Bool {
        lossSum += totals.lossSum
        seen += totals.images
        correct += totals.correct
        imagesSeen += totals.images
        windowImages += totals.images
        allreduceWaits.append(r.total(.allreduceWait))
        windowWait += r.total(.allreduceWait)
        trace(r)
        return (step + 1) % logEvery == 0 || step + 1 == steps
    }

    /// The progress line and a "train" record of the window that `step` ends. `rankWaits`: every
    /// rank's `windowWait` (the time it waited after backward), gathered by the caller: the
    /// smallest is the exposed all-reduce, the rest waiting for the slowest rank (GradientSync.splitWaits).
    public func logWindow(
        _ r: StepResult, totals: StepTotals, step: Int, globalStep: Int, lr: Float, dataWait: Double,
        rankWaits waits: [Double]
    ) {
        windowWait = 0
        let now = Profile.now()
        let ips = Double(windowImages) / Swift.max(now - windowStart, 1e-9)
        let stepsLeft = (plan.end - epoch - 1) * steps + (steps - step - 1)
        let eta = Double(stepsLeft * plan.imagesPerStep) / Swift.max(ips, 1e-9)
        let acc = Double(correct) / Double(Swift.max(seen, 1)) / heads
        log(
            String(
                format: "epoch %d/%d step %d/%d  loss %.4f  acc %5.1f%%  lr %.2e  %.1f img/s  ETA %@",
                epoch + 1, plan.epochs, step + 1, steps, epochLoss, acc * 100, lr, ips, formatDuration(eta)))
        var rec = TrainRecord(
            epoch: epoch + 1, step: step + 1, globalStep: globalStep, loss: epochLoss, acc: acc, lr: Double(lr))
        rec.stepLoss = totals.lossSum / Double(Swift.max(totals.images, 1))
        rec.imagesPerSecond = ips
        rec.dataWaitS = dataWait
        rec.ranks = worldSize
        if waits.count > 1 {
            rec.allreduceExposedS = waits.min()!
            rec.rankWaitS = waits.max()! - waits.min()!
        }
        if totals.triplet.anchors > 0 {
            let t = totals.triplet, a = Double(t.anchors)
            rec.tripletLoss = t.lossSum / a
            rec.tripletDAp = t.dapSum / a
            rec.tripletDAn = t.danSum / a
        }
        if r.gatherSeconds > 0 { rec.featureAllgatherS = r.gatherSeconds } // this rank's, this step's
        record(rec)
        windowStart = now
        windowImages = 0
    }

    /// An evaluation's numbers: a console line, an "eval" record, the ranked lists of its
    /// worst and best queries, and the report brought up to date.
    public func evaluated(_ r: RankingResultSummary, epoch: Int, globalStep: Int, ranked: RankedListsFile?) {
        log(
            String(
                format:
                    "eval: rank-1 %.2f%%  rank-5 %.2f%%  rank-10 %.2f%%  mAP %.2f%%  mINP %.2f%%  (%d queries, %d gallery, %.1f s)",
                r.rank1 * 100, r.rank5 * 100, r.rank10 * 100, r.mAP * 100, r.mINP * 100, r.queries, r.gallery, r.seconds
            ))
        record(
            EvalRecord(
                epoch: epoch, globalStep: globalStep, rank1: r.rank1, rank5: r.rank5, rank10: r.rank10, mAP: r.mAP,
                mINP: r.mINP, seconds: r.seconds, cmc: r.cmc))
        if let runDir, let ranked {
            let dir = (runDir as NSString).appendingPathComponent(RunReport.folder)
            do {
                try createFolder(dir, what: "the report folder")
                let enc = JSONEncoder()
                enc.outputFormatting = [.sortedKeys]
                try writeAtomically(try enc.encode(ranked), to: (dir as NSString).appendingPathComponent("ranked.json"))
            } catch { warn("the ranked lists could not be saved: \(error)") }
        }
        writeReport()
    }

    /// The summary line (and, with several MPI ranks, the all-reduce's exposed time and the
    /// ranks' imbalance as a "comm" record), then the trace file if one was asked for.
    /// `rankWaits`: every rank's `allreduceWaits` (several ranks); `traces`: every rank's
    /// `traceValues` (with `train.trace`), both gathered by the caller.
    public func endRun(rankWaits: [[Double]]?, traces: [[Double]]?) throws {
        let total = Profile.now() - runStart
        var summary = String(
            format: "trained %d images in %@ (%.1f img/s)", imagesSeen, formatDuration(total),
            Double(imagesSeen) / Swift.max(total, 1e-9))
        if let rankWaits, rankWaits.count > 1 {
            let (exposed, imbalance) = GradientSync.splitWaits(rankWaits)
            summary += String(
                format:
                    "; gradient all-reduce exposed %.1f s (%.1f%% of the run), ranks waiting for the slowest %.1f s",
                exposed, exposed / Swift.max(total, 1e-9) * 100, imbalance)
            record(
                CommRecord(
                    allreduceExposedS: exposed, rankImbalanceS: imbalance, runS: total, ranks: worldSize,
                    averaging: averagingNote))
        }
        log(summary)
        if let traces { try writeTrace(traces) }
        writeRunInfo(finished: true)
        writeReport()
    }

    // MARK: the trace

    /// What a trace event shows: a phase of the step, or one bucket's all-reduce (its own row).
    enum TraceKind: Equatable {
        case phase(StepResult.Phase)
        case bucket(Int)
        var name: String {
            switch self {
            case .phase(.forward): return "forward"
            case .phase(.backward): return "backward"
            case .phase(.allreduceWait): return "wait for all-reduce"
            case .phase(.optimizer): return "optimizer"
            case .bucket(let b): return "all-reduce bucket \(b)"
            }
        }
        var thread: Int {
            if case .bucket = self { return 1 }
            return 0
        }
        /// As one number, for gathering over ranks.
        var code: Double {
            switch self {
            case .phase(let p): return Double(p.rawValue)
            case .bucket(let b): return Double(StepResult.Phase.allCases.count + b)
            }
        }
        init(code: Double) {
            let c = Int(code), phases = StepResult.Phase.allCases.count
            self = c < phases ? .phase(StepResult.Phase(rawValue: c)!) : .bucket(c - phases)
        }
    }

    func trace(_ r: StepResult) {
        guard tracePath != nil, tracedSteps < Self.tracedSteps else { return }
        tracedSteps += 1
        let base = r.start - runStart
        for p in r.phases { traceEvents.append((.phase(p.phase), base + p.start, p.duration)) }
        for b in r.buckets { traceEvents.append((.bucket(b.bucket), base + b.start, b.end - b.start)) }
    }

    /// This rank's trace events as (kind, start, duration) doubles, for gathering over ranks.
    public var traceValues: [Double] { traceEvents.flatMap { [$0.kind.code, $0.start, $0.duration] } }

    /// Rank 0 writes every rank's events (pid = rank; `all`: each rank's `traceValues`) as a
    /// Chrome trace-event file.
    func writeTrace(_ all: [[Double]]) throws {
        guard let tracePath, comm.isRoot else { return }
        var events: [[String: Any]] = []
        for (rank, values) in all.enumerated() {
            for k in stride(from: 0, to: values.count - 2, by: 3) {
                let kind = TraceKind(code: values[k])
                events.append([
                    "name": kind.name, "ph": "X", "pid": rank, "tid": kind.thread, "ts": values[k + 1] * 1e6,
                    "dur": values[k + 2] * 1e6
                ])
            }
        }
        let data = try JSONSerialization.data(
            withJSONObject: ["traceEvents": events, "displayTimeUnit": "ms"], options: [])
        try writeAtomically(data, to: tracePath)
        log(
            "wrote trace \(tracePath) (\(events.count) events; open in a browser's trace viewer, e.g. chrome://tracing or Perfetto)"
        )
    }
}

/// A step's figures summed over ranks, and whether any rank asked to stop or to checkpoint.
public struct StepTotals {
    public var lossSum: Double, images: Int, correct: Int
    public var stop: Bool, checkpoint: Bool
    /// The step's triplet figures over all ranks' anchors (zero without a triplet loss).
    public var triplet = TripletStats()
}

/// The figures of one evaluation that the run reports.
public struct RankingResultSummary {
    public var rank1: Double, rank5: Double, rank10: Double, mAP: Double, mINP: Double
    public var queries: Int, gallery: Int, seconds: Double
    public var cmc: [Double] = []
}

public func formatDuration(_ s: Double) -> String {
    guard s.isFinite else { return "?" }
    let t = Int(s.rounded())
    return t >= 3600
        ? String(format: "%dh%02dm", t / 3600, (t % 3600) / 60) : String(format: "%dm%02ds", t / 60, t % 60)
}
