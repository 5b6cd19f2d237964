// The one evaluation path, for `train` (every eval.every epochs) and `evaluate`: query and
// gallery features with the model (under MPI each rank extracts a share of the batches), then
// the protocol on rank 0.
import Foundation
import ReIDCore
import ReIDData
import ReIDEval

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
