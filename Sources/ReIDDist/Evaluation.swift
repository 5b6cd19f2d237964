// The one evaluation path, for `train` (every eval.every epochs) and `evaluate`: query and
// gallery features with the model (under MPI each rank extracts a share of the batches), then
// the protocol on rank 0.
import Foundation
import ReIDCore
import ReIDData
import ReIDEval
import ReIDReport

/// One evaluation of a model on a dataset's query and gallery.
public struct Evaluation {
    public let query: FeatureSet, gallery: FeatureSet
    public let ranking: RankingResult
    /// Features and protocol together, wall time.
    public let seconds: Double

    /// Features of `dataset`'s query and gallery with `model`'s current weights (`eval.batch_size`,
    /// `eval.flip`), then `eval.metric`, re-ranked when `eval.rerank`, on the model's threads.
    /// Every rank takes part; rank 0 alone gets the result, the others nil.
    public static func run(
        model: GroupedMultiBranchNet, dataset: ReIDDataset, data: DataSettings, eval e: EvalSettings,
        comm: Communicator, producer: String
    ) throws -> Evaluation? {
        let t0 = Profile.now()
        func features(_ s: Split) throws -> FeatureSet? {
            try extractFeatures(
                model: model, split: s, height: data.height, width: data.width, batchSize: e.batchSize, flip: e.flip,
                maxPixels: data.maxPixels, comm: comm, producer: producer)
        }
        let q = try features(dataset.query), g = try features(dataset.gallery)
        guard let q, let g else { return nil }
        let threads = model.ws.threads
        let r =
            e.rerank
            ? try rankReranked(query: q, gallery: g, metric: e.metric, threads: threads)
            : try rank(query: q, gallery: g, metric: e.metric, threads: threads)
        return Evaluation(query: q, gallery: g, ranking: r, seconds: Profile.now() - t0)
    }
}

extension Evaluation {
    /// This evaluation's own report in `dir`: a one-evaluation "run folder" (metrics.jsonl, run.json
    /// describing the model `which` and the data, report/ranked.json with the worst and best
    /// queries' ranked lists) and its report.html, whose path it returns (`evaluate --report`).
    public func writeReport(
        to dir: String, model which: String, spec: ModelSpec, data: DataSettings, eval e: EvalSettings
    ) throws -> String {
        let r = ranking, q = query, g = gallery
        try createFolder(dir + "/" + RunReport.folder, what: "--report")
        let record = EvalRecord(
            epoch: 0, globalStep: 0, rank1: r.rank(1), rank5: r.rank(5), rank10: r.rank(10), mAP: r.mAP, mINP: r.mINP,
            seconds: seconds, cmc: r.cmc)
        try writeAtomically(try MetricsFile.line(record), to: dir + "/" + MetricsFile.name)
        let info: [String: Any] = [
            "kind": "evaluation", "model": which,
            "architecture": "ResNet-\(spec.depth), width \(spec.width), last stride \(spec.lastStride), "
                + "\(spec.groups) groups x \(spec.branches) branches, \(spec.featureChannels)-d features",
            "input": "\(data.height) x \(data.width) pixels"
                + (e.flip ? ", features averaged with the mirror image's" : ""),
            "evaluated_on":
                "\(data.root) (layout \(data.layout.rawValue)): \(q.count) queries, \(g.count) gallery images",
            "metric": e.metric == .cosine ? "cosine distance" : "squared Euclidean distance",
            "seconds": seconds, "reid_dist_version": reidDistVersion, "blas_kernel": blasCoreName()
        ]
        try writeAtomically(
            try JSONSerialization.data(withJSONObject: info, options: [.prettyPrinted, .sortedKeys]),
            to: dir + "/run.json")
        let ranked = RankedListsFile(
            title: "this evaluation",
            worst: rankedLists(query: q, gallery: g, metric: e.metric, result: r, indices: r.queries(.worst, 4)),
            best: rankedLists(query: q, gallery: g, metric: e.metric, result: r, indices: r.queries(.best, 4)))
        try writeAtomically(try JSONEncoder().encode(ranked), to: dir + "/" + RunReport.folder + "/ranked.json")
        return try RunReport.write(runDir: dir)
    }
}

/// What `evaluate --json` writes (and its readers read): the protocol's figures, where and how.
public struct EvaluationSummary: Codable, Equatable {
    public var rank1: Double, rank5: Double, rank10: Double, rank20: Double, mAP: Double, mINP: Double
    public var validQueries: Int
    public var cmc: [Double]
    public var seconds: Double
    /// MPI ranks that extracted the features.
    public var ranks: Int
    /// The checkpoint and what it was trained on; the data evaluated on.
    public var model: String, dataRoot: String, layout: String

    public init(_ e: Evaluation, ranks: Int, model: String, data: DataSettings) {
        let r = e.ranking
        rank1 = r.rank(1)
        rank5 = r.rank(5)
        rank10 = r.rank(10)
        rank20 = r.rank(20)
        mAP = r.mAP
        mINP = r.mINP
        validQueries = r.validQueries
        cmc = r.cmc
        seconds = e.seconds
        self.ranks = ranks
        self.model = model
        dataRoot = data.root
        layout = data.layout.rawValue
    }

    enum CodingKeys: String, CodingKey {
        case rank1, rank5, rank10, rank20, mAP, mINP, cmc, seconds, ranks, model, layout
        case validQueries = "valid_queries"
        case dataRoot = "data_root"
    }

    /// As a file: pretty-printed, keys sorted.
    public func json() throws -> Data {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try enc.encode(self)
    }

    public static func read(_ path: String) throws -> EvaluationSummary {
        try JSONDecoder().decode(EvaluationSummary.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    }
}

/// OpenBLAS's threads and the model's own loops (`EngineOptions.threads`).
public func useThreads(_ n: Int, for model: GroupedMultiBranchNet) {
    setBLASThreads(n)
    model.ws.options.threads = Swift.max(1, n)
}

extension Config {
    /// The engine options this configuration asks for, on `threads` threads.
    public func engineOptions(threads: Int) -> EngineOptions {
        EngineOptions(threads: threads, convAlgorithm: model.convAlgorithm)
    }
}
