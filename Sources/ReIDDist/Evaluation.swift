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
