// `reid-dist bench eval`: evaluation at Market-1501 and MSMT17 sizes on
// structured random features, timed end to end (load, distances, metrics) in a
// child `reid-dist rank` process whose peak memory is read from the kernel.
import ArgumentParser
import Foundation
import ReIDCore
import ReIDEval

struct BenchEval: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Time `reid-dist rank` on Market-1501- and MSMT17-sized feature files.")

    @Option(help: "Sizes to run: market, msmt, or both (comma-separated).") var sizes = "market,msmt"
    @Option(parsing: .unconditional, help: "Feature dimension.") var dim = 2048
    @Option(help: "Folder for the generated feature files (kept for reuse).") var workdir = "/tmp/reid-dist-bench-eval"
    @Option(parsing: .unconditional, help: "Threads.") var threads = ProcessInfo.processInfo.activeProcessorCount
    @Flag(help: "Also time --rerank (Market size only).") var rerank = false
    @Option(
        help:
            "A Python with numpy (and torchreid, for its evaluator): times Cluster/python/eval_baseline.py on the same files."
    )
    var python: String?
    @Option(help: "Write the figures as JSON.") var json: String?

    struct Size { let name: String, queries: Int, gallery: Int, ids: Int }
    static let known = [
        Size(name: "market", queries: 3368, gallery: 19732, ids: 751),
        Size(name: "msmt", queries: 11659, gallery: 82161, ids: 3060)
    ]

    func validate() throws {
        for s in sizes.split(separator: ",") where !Self.known.contains(where: { $0.name == s }) {
            throw ValidationError("unknown size '\(s)'; known: market, msmt")
        }
    }

    func run() throws {
        setBLASThreads(threads)
        try createFolder(workdir, what: "--workdir")
        var rows: [[String: Any]] = []
        let gflops = measureSGEMM()
        print(
            String(
                format: "sgemm %.0f GFLOP/s (%@ kernel, OPENBLAS_CORETYPE=%@)", gflops, blasCoreName(),
                ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "(unset)"))
        for s in Self.known where sizes.split(separator: ",").contains(Substring(s.name)) {
            let (qp, gp) = try makeFiles(s)
            let floor = 2.0 * Double(s.queries) * Double(s.gallery) * Double(dim) / (gflops * 1e9)
            var row: [String: Any] = [
                "size": s.name, "queries": s.queries, "gallery": s.gallery, "dim": dim,
                "sgemm_floor_s": floor
            ]
            let (sec, mem) = try timeRank(["--query", qp, "--gallery", gp])
            print(
                String(
                    format: "%-7@ %5d x %6d: reid-dist rank %.2f s (sgemm floor %.2f s, ratio %.2f), peak %.0f MB",
                    s.name, s.queries, s.gallery, sec, floor, sec / floor, mem))
            row["seconds"] = sec
            row["peak_mb"] = mem
            if rerank && s.name == "market" {
                let (rs, rm) = try timeRank(["--query", qp, "--gallery", gp, "--rerank"])
                print(String(format: "        with --rerank: %.2f s, peak %.0f MB", rs, rm))
                row["rerank_seconds"] = rs
                row["rerank_peak_mb"] = rm
            }
            if let py = python, s.name == "market" {
                let (bs, bm) = try timeProcess(py, [try baselineScript(), qp, gp])
                print(
                    String(
                        format: "        numpy + torchreid evaluator: %.2f s, peak %.0f MB; reid-dist is %.1fx faster",
                        bs, bm, bs / sec))
                row["baseline_seconds"] = bs
                row["baseline_peak_mb"] = bm
            }
            rows.append(row)
        }
        if let json {
            let data = try JSONSerialization.data(
                withJSONObject: ["sgemm_gflops": gflops, "rows": rows], options: [.prettyPrinted, .sortedKeys])
            try writeAtomically(data, to: json)
        }
    }

    /// Cluster/python/eval_baseline.py, found upwards from the executable (inside .build) or the working directory.
    func baselineScript() throws -> String {
        let rel = "Cluster/python/eval_baseline.py"
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<6 {
            let p = dir.appendingPathComponent(rel).path
            if FileManager.default.fileExists(atPath: p) { return p }
            dir = dir.deletingLastPathComponent()
        }
        if FileManager.default.fileExists(atPath: rel) { return rel }
        throw RankingError("cannot find \(rel); run from the repository root")
    }

    /// Identity-clustered features: centre per id plus noise, random cameras,
    /// 5% distractors (id 0) and 2% junk (id -1) in the gallery.
    func makeFiles(_ s: Size) throws -> (String, String) {
        let qp = "\(workdir)/\(s.name)-d\(dim)-query.safetensors",
            gp = "\(workdir)/\(s.name)-d\(dim)-gallery.safetensors"
        if FileManager.default.fileExists(atPath: qp) && FileManager.default.fileExists(atPath: gp) { return (qp, gp) }
        print("generating \(s.name)-sized features in \(workdir) ...")
        var rng = RNG(key: 42, UInt64(dim))
        let centres = Tensor([s.ids + 1, dim])
        for i in 0..<centres.count { centres.ptr[i] = Float(rng.normal()) }
        func make(_ n: Int, gallery: Bool, seed: UInt64) -> FeatureSet {
            var r = RNG(key: seed, UInt64(n))
            let f = Tensor([n, dim], zero: false)
            var pids = [Int64](repeating: 0, count: n), cams = [Int64](repeating: 0, count: n)
            for i in 0..<n {
                var pid = Int64(1 + r.below(s.ids))
                if gallery {
                    let u = r.uniform()
                    if u < 0.05 { pid = 0 } else if u < 0.07 { pid = -1 }
                }
                pids[i] = pid
                cams[i] = Int64(1 + r.below(6))
                let c = centres.ptr + Int(max(pid, 0)) * dim, row = f.ptr + i * dim
                for j in 0..<dim { row[j] = 0.3 * c[j] + Float(r.normal()) }
            }
            return FeatureSet(features: f, pids: pids, camids: cams)
        }
        try make(s.queries, gallery: false, seed: 1).write(to: qp, producer: "reid-dist bench eval")
        try make(s.gallery, gallery: true, seed: 2).write(to: gp, producer: "reid-dist bench eval")
        return (qp, gp)
    }

    /// Seconds and peak memory of a child `reid-dist rank`, as it reports them in
    /// its JSON (its own /proc VmHWM: a spawned child's rusage can include the
    /// parent's pages at spawn time).
    func timeRank(_ args: [String]) throws -> (Double, Double) {
        let out = "\(workdir)/rank-\(getpid()).json"
        let (wall, _) = try timeProcess(
            CommandLine.arguments[0], ["rank"] + args + ["--threads", "\(threads)", "--json", out])
        guard let data = FileManager.default.contents(atPath: out),
            let obj = try JSONSerialization.jsonObject(with: data) as? [String: Any],
            let peak = obj["peak_rss_mb"] as? Double
        else { throw RankingError("\(out): no peak_rss_mb from reid-dist rank") }
        return (wall, peak)
    }

    /// Wall time and peak RSS (MB, from wait4; an upper bound, see timeRank) of a child process.
    func timeProcess(_ exe: String, _ args: [String]) throws -> (Double, Double) {
        let argv: [UnsafeMutablePointer<CChar>?] = ([exe] + args).map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var pid: pid_t = 0
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        defer { posix_spawn_file_actions_destroy(&actions) }
        let t0 = Profile.now()
        let rc = posix_spawn(&pid, exe, &actions, nil, argv, environ)
        guard rc == 0 else { throw RankingError("cannot start \(exe): \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        var usage = rusage()
        while wait4(pid, &status, 0, &usage) < 0 && errno == EINTR {}
        let sec = Profile.now() - t0
        guard status == 0 else {
            throw RankingError("\(exe) \(args.joined(separator: " ")) failed (wait status \(status))")
        }
        return (sec, Double(usage.ru_maxrss) / 1024)
    }
}
