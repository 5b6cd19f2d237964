// `reid-dist study STUDY.yaml`: every run of a study (ReIDDist's Study), one after another, each
// an ordinary `reid-dist train --resume auto` in its own process (under Cluster/run-local.sh with
// --ranks N), then the table. Stopped anywhere (a signal, a crash, --max-runs), the next call
// skips finished runs and continues the unfinished one.
import ArgumentParser
import Foundation
import ReIDDist
import ReIDReport

struct StudyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "study",
        abstract: "Train every cell x seed of a study (a base config, a grid of overrides, seeds) and tabulate them.",
        discussion: """
            Each run is an ordinary run folder, <out>/<cell>/seed-<s>, trained by `reid-dist train
            --resume auto`; its output goes to <out>/<cell>/seed-<s>.log. Finished runs are skipped,
            an unfinished one continues from its checkpoint, a failed one is tried again (its reason
            is kept in seed-<s>.failed until then). SIGINT or SIGTERM stop the running run at a
            checkpoint and end the study; call it again to continue. At the end (or with
            --summarise) it writes <out>/study.json, study.csv and study.html: per cell the mean and
            standard deviation over seeds of rank-1, mAP, mINP, images/s and wall time.
            See Configs/studies/ and docs/studies.md.
            """)

    @Argument(help: "The study file (YAML: base, out, seeds, set, grid, cells).") var file: String
    @Flag(
        name: [.customLong("summarise"), .customLong("summarize")],
        help: "Only write the table from the run folders as they are.")
    var summarise = false
    @Option(help: "Ranks per run: each run under Cluster/run-local.sh N (mpirun on this machine).") var ranks = 1
    @Option(help: "Write a Slurm job array (one task per run not yet finished) to this file instead of running.")
    var slurm: String?
    @Option(help: "Train at most this many runs now (the next call continues).") var maxRuns: Int?
    @Flag(help: "List the runs and where each stands; run nothing.") var dryRun = false

    func validate() throws {
        guard ranks >= 1 else { throw ValidationError("--ranks must be at least 1") }
        if let m = maxRuns, m < 1 { throw ValidationError("--max-runs must be at least 1") }
    }

    func run() throws {
        setlinebuf(stdout) // progress lines as they happen, also into a file
        let study = try Study(file: file)
        let configs = try study.configs()
        let runs = study.runs
        func states() -> [StudyRunState] {
            zip(runs, configs).map { StudyRunState(runDir: $0.runDir, epochs: $1.schedule.epochs) }
        }
        let before = states()
        let finished = before.filter { $0 == .finished }.count
        print(
            "study \(file): \(study.cells.count) cells x \(study.seeds.count) seeds = \(runs.count) runs; \(finished) finished"
        )
        if summarise {
            try writeSummary(study, configs)
            return
        }
        if dryRun {
            for (r, s) in zip(runs, before) { print("  \(r.cell.name) seed \(r.seed): \(describe(s))  \(r.runDir)") }
            return
        }
        if let slurm {
            try writeSlurm(study, runs: zip(runs, before).filter { $0.1 != .finished }.map(\.0), to: slurm)
            return
        }
        StopSignal.install()
        let bin = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
        var started = 0
        for (i, (run, state)) in zip(runs, before).enumerated() where state != .finished {
            if let m = maxRuns, started >= m {
                print("stopping after \(m) run(s) (--max-runs); call again to continue")
                break
            }
            started += 1
            try? FileManager.default.removeItem(atPath: StudyRunState.failureFile(run.runDir))
            try FileManager.default.createDirectory(
                atPath: (run.runDir as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            let what = "[\(i + 1)/\(runs.count)] \(run.cell.name) seed \(run.seed)"
            print(
                "\(what): \(state == .partial ? "continuing" : "training") (log: \(StudyRunState.logFile(run.runDir)))")
            let t0 = Date()
            let (status, lastError) = try launch(bin, study, run)
            let took = formatDuration(Date().timeIntervalSince(t0))
            if status == 0, let e = StudyResults.finalEval(run.runDir) {
                print(
                    String(
                        format: "%@: done in %@: rank-1 %.2f%%, mAP %.2f%%", what, took,
                        100 * e.rank1, 100 * e.mAP))
            } else if status == StopSignal.exitStatus || StopSignal.pending != nil {
                print("\(what): stopped at a checkpoint after \(took); call the study again to continue")
                try writeSummary(study, configs)
                throw ExitCode(StopSignal.exitStatus)
            } else {
                let why = "exit status \(status)" + (lastError.map { ": " + $0 } ?? "")
                try (why + "\n").write(toFile: StudyRunState.failureFile(run.runDir), atomically: true, encoding: .utf8)
                print("\(what): FAILED after \(took) (\(why)); the study goes on")
            }
        }
        try writeSummary(study, configs)
    }

    func describe(_ s: StudyRunState) -> String {
        switch s {
        case .new: return "not started"
        case .partial: return "unfinished"
        case .finished: return "finished"
        case .failed(let why): return "failed (\(why))"
        }
    }

    /// The run's command line: `reid-dist train` with its overrides, or Cluster/run-local.sh N.
    func command(_ bin: String, _ study: Study, _ run: Study.Run) -> [String] {
        let train = ["--config", study.base] + run.overrides.flatMap { ["--set", $0] } + ["--resume", "auto"]
        return ranks > 1
            ? [repositoryFile("Cluster/run-local.sh"), "\(ranks)", study.base] + Array(train.dropFirst(2))
            : [bin, "train"] + train
    }

    /// Runs one training process, its output appended to the run's log; forwards a stop signal to
    /// it. Returns its exit status and the last line of its output that reports an error.
    func launch(_ bin: String, _ study: Study, _ run: Study.Run) throws -> (Int32, String?) {
        let cmd = command(bin, study, run)
        let logPath = StudyRunState.logFile(run.runDir)
        if !FileManager.default.fileExists(atPath: logPath) {
            _ = FileManager.default.createFile(atPath: logPath, contents: nil) // checked by opening it below
        }
        guard let log = FileHandle(forWritingAtPath: logPath) else {
            throw ConfigError("\(logPath): cannot write the run's log")
        }
        defer { try? log.close() }
        log.seekToEndOfFile()
        log.write(Data(("$ " + cmd.joined(separator: " ") + "\n").utf8))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: cmd[0])
        p.arguments = Array(cmd.dropFirst())
        var env = ProcessInfo.processInfo.environment
        env["REID_DIST_BIN"] = bin
        p.environment = env
        p.standardOutput = log
        p.standardError = log
        do { try p.run() } catch { throw ConfigError("\(cmd[0]): cannot start (\(error))") }
        var forwarded = false
        while p.isRunning {
            usleep(100_000)
            if StopSignal.pending != nil && !forwarded {
                p.terminate()
                forwarded = true
            }
        }
        let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        let last = text.split(separator: "\n").last { $0.lowercased().contains("error") }.map { String($0.prefix(300)) }
        return (p.terminationStatus, last)
    }

    func writeSummary(_ study: Study, _ configs: [Config]) throws {
        let results = StudyResults(study, configs: configs)
        try FileManager.default.createDirectory(atPath: study.out, withIntermediateDirectories: true)
        let dir = study.out as NSString
        try JSONSerialization.data(withJSONObject: results.json, options: [.prettyPrinted, .sortedKeys])
            .write(to: URL(fileURLWithPath: dir.appendingPathComponent("study.json")))
        try results.csv.write(toFile: dir.appendingPathComponent("study.csv"), atomically: true, encoding: .utf8)
        try results.html(relativeTo: study.out).write(
            toFile: dir.appendingPathComponent("study.html"), atomically: true, encoding: .utf8)
        func pad(_ s: String, _ n: Int) -> String {
            s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count)
        }
        let width = Swift.max(8, results.rows.map(\.cell.name.count).max() ?? 0) + 1
        print(
            pad("cell", width) + pad("seeds", 7) + pad("rank-1 %", 16) + pad("mAP %", 16) + pad("mINP %", 16)
                + pad("img/s", 9) + "status")
        for r in results.rows {
            func f(_ k: KeyPath<StudyResults.Seed, Double>) -> String {
                r.mean(k).map { String(format: "%.2f ± %.2f", $0, r.sd(k)!) } ?? "-"
            }
            print(
                pad(r.cell.name, width) + pad("\(r.finished.count)/\(r.seeds.count)", 7) + pad(f(\.rank1), 16)
                    + pad(f(\.mAP), 16)
                    + pad(f(\.mINP), 16) + pad(r.mean(\.imagesPerSecond).map { String(format: "%.1f", $0) } ?? "-", 9)
                    + r.status)
        }
        print("wrote \(dir.appendingPathComponent("study.html")), study.csv and study.json")
    }

    /// A Slurm job array: task k trains the k-th run not yet finished, with `--ranks` ranks.
    func writeSlurm(_ study: Study, runs: [Study.Run], to path: String) throws {
        guard !runs.isEmpty else {
            print("every run is finished: nothing to submit")
            return
        }
        func q(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        let bin = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
        var cases = ""
        for (k, r) in runs.enumerated() {
            cases += "  \(k)) args=(\((r.overrides.flatMap { ["--set", $0] }).map(q).joined(separator: " ")));;\n"
        }
        let script = """
            #!/usr/bin/env bash
            # Generated by `reid-dist study \(file) --slurm \(path)`: one array task per run not yet finished
            # (\(runs.count) of \(study.runs.count)), each `reid-dist train --resume auto` with \(ranks) rank(s).
            #   sbatch \(path)
            # then, when the tasks are done: reid-dist study \(file) --summarise
            # Preempted or failed tasks: submit this file again (finished runs stay finished; regenerate it
            # to leave them out).
            #SBATCH --job-name=reid-dist-study
            #SBATCH --array=0-\(runs.count - 1)
            #SBATCH --ntasks=\(ranks)
            #SBATCH --time=24:00:00
            #SBATCH --output=\(study.out)/slurm-%A_%a.out
            #SBATCH --signal=B:USR1@300
            set -euo pipefail
            cd \(q(FileManager.default.currentDirectoryPath))
            case "$SLURM_ARRAY_TASK_ID" in
            \(cases)esac
            exec mpirun -np "$SLURM_NTASKS" --bind-to none \(q(bin)) train --config \(q(study.base)) --resume auto --set train.threads=0 "${args[@]}"

            """
        try FileManager.default.createDirectory(atPath: study.out, withIntermediateDirectories: true)
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: path)
        print("wrote \(path): \(runs.count) array task(s); submit with: sbatch \(path)")
    }
}
