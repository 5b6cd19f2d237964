// `reid-dist rank`: the evaluation protocol on two feature files.
import ArgumentParser
import Foundation
import ReIDCore
import ReIDEval

extension Metric: ExpressibleByArgument {}
extension QueryOrder: ExpressibleByArgument {}

struct Rank: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rank a gallery for each query and report CMC, mAP and mINP (Market-1501 protocol).",
        discussion: """
            Feature files are safetensors with `features` F32 [N, D], `pids` I64 [N], `camids` I64 [N]
            and optional __metadata__ `paths` (a JSON list of image paths, needed for --visualize).
            Gallery id -1 is junk and never takes part; id 0 (distractors) always counts as wrong.
            Queries are processed in blocks, so memory stays near (block x gallery) floats.
            """)

    @Option(help: "Query feature file.") var query: String
    @Option(help: "Gallery feature file.") var gallery: String
    @Option(help: "Distance: cosine (1 - cos) or euclidean (squared).") var metric: Metric = .cosine
    @Flag(help: "k-reciprocal re-ranking (Zhong et al. 2017).") var rerank = false
    @Option(parsing: .unconditional, help: "Re-ranking k1.") var k1 = 20
    @Option(parsing: .unconditional, help: "Re-ranking k2.") var k2 = 6
    @Option(parsing: .unconditional, help: "Re-ranking lambda (weight of the original distance).") var lambda = 0.3
    @Option(parsing: .unconditional, help: "Length of the CMC curve.") var maxRank = 50
    @Option(parsing: .unconditional, help: "Queries per distance block.") var block = 512
    @Option(parsing: .unconditional, help: "Threads for OpenBLAS and the engine's loops.") var threads = ProcessInfo
        .processInfo.activeProcessorCount
    @Option(help: "Write the results as JSON to this file.") var json: String?
    @Option(help: "Write ranked-list pictures of the first --visualize-count queries into this folder.") var visualize:
        String?
    @Option(parsing: .unconditional, help: "How many queries to draw with --visualize.") var visualizeCount = 20
    @Option(help: "Which queries --visualize draws: worst (lowest AP first), best, or file (file order).")
    var visualizeOrder: QueryOrder = .file
    @Option(help: "Folder that relative image paths in the feature files are relative to.") var imageRoot: String?

    func validate() throws {
        guard maxRank >= 1 else { throw ValidationError("--max-rank must be at least 1") }
        guard block >= 1 else { throw ValidationError("--block must be at least 1") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        guard k1 >= 1, k2 >= 1, k2 <= k1 + 1 else {
            throw ValidationError("re-ranking needs k1 >= 1 and 1 <= k2 <= k1 + 1")
        }
        guard (0...1).contains(lambda) else { throw ValidationError("--lambda must be in [0, 1]") }
    }

    func run() throws {
        setBLASThreads(threads)
        let t0 = Profile.now()
        let q = try FeatureSet(path: query), g = try FeatureSet(path: gallery)
        let tLoad = Profile.now() - t0
        let params = RerankParams(k1: k1, k2: k2, lambda: lambda)
        let r =
            rerank
            ? try rankReranked(
                query: q, gallery: g, metric: metric, params: params, maxRank: maxRank, blockRows: block,
                threads: threads)
            : try rank(query: q, gallery: g, metric: metric, maxRank: maxRank, blockRows: block, threads: threads)
        let seconds = Profile.now() - t0
        printTable(r, q: q, g: g, seconds: seconds, load: tLoad)
        if let dir = visualize { try drawPictures(q, g, dir: dir, params: params, result: r) }
        if let json { try writeJSON(r, seconds: seconds, to: json) }
    }

    func printTable(_ r: RankingResult, q: FeatureSet, g: FeatureSet, seconds: Double, load: Double) {
        print(
            "\(q.count) queries x \(g.count) gallery, D=\(q.dim), \(metric)\(rerank ? " + re-ranking (k1=\(k1), k2=\(k2), lambda=\(lambda))" : "")"
        )
        print(" rank-1   rank-5  rank-10  rank-20      mAP     mINP")
        print(
            String(
                format: "%6.2f%%  %6.2f%%  %6.2f%%  %6.2f%%  %6.2f%%  %6.2f%%",
                r.rank(1) * 100, r.rank(5) * 100, r.rank(10) * 100, r.rank(20) * 100, r.mAP * 100, r.mINP * 100))
        print(
            String(
                format: "valid queries %d of %d; %.2f s (%.2f s loading); peak memory %.0f MB",
                r.validQueries, r.totalQueries, seconds, load, peakRSSMB()))
        if r.validQueries == 0 { print("warning: no query has a correct gallery image from another camera") }
    }

    func drawPictures(_ q: FeatureSet, _ g: FeatureSet, dir: String, params: RerankParams, result: RankingResult) throws
    {
        let picked = result.queries(visualizeOrder, visualizeCount)
        let n = picked.count
        var rows: [Float] = []
        for i in picked { rows += q.features.buffer[(i * q.dim)..<((i + 1) * q.dim)] }
        let head = FeatureSet(
            features: Tensor([n, q.dim], rows), pids: picked.map { q.pids[$0] }, camids: picked.map { q.camids[$0] },
            paths: q.paths.isEmpty ? [] : picked.map { q.paths[$0] }, path: q.path)
        let gal = rerank ? g.droppingJunk() : g
        let dist: Tensor
        if rerank {
            // Re-ranked distances need the whole query set's neighbourhoods.
            let rr = try Reranker(query: q, gallery: gal, metric: metric, params: params, threads: threads)
            dist = Tensor([n, gal.count])
            for (r, i) in picked.enumerated() { rr.distances(q0: i, rows: 1, into: dist.ptr + r * gal.count) }
        } else {
            dist = distanceMatrix(head, gal, metric: metric, threads: threads)
        }
        var pics = RankedListPictures()
        pics.imageRoot = imageRoot
        let files = try pics.write(query: head, gallery: gal, distances: dist.ptr, count: n, to: dir)
        print("wrote \(files.count) pictures to \(dir)")
    }

    func writeJSON(_ r: RankingResult, seconds: Double, to path: String) throws {
        let obj: [String: Any] = [
            "rank1": r.rank(1), "rank5": r.rank(5), "rank10": r.rank(10), "rank20": r.rank(20),
            "mAP": r.mAP, "mINP": r.mINP, "valid_queries": r.validQueries, "total_queries": r.totalQueries,
            "cmc": r.cmc, "metric": metric.rawValue, "rerank": rerank, "seconds": seconds, "peak_rss_mb": peakRSSMB()
        ]
        let data = try JSONSerialization.data(withJSONObject: obj, options: [.prettyPrinted, .sortedKeys])
        try writeAtomically(data, to: path)
    }
}
