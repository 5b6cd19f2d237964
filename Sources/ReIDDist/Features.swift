// Feature extraction: a split's images through the network in inference mode,
// optionally averaged with their mirror images, as a FeatureSet.
import Foundation
import ReIDCore
import ReIDData
import ReIDEval

public func extractFeatures(model: GroupedMultiBranchNet, split: Split, height: Int, width: Int, batchSize: Int,
                            flip: Bool, seed: UInt64, skipBadImages: Bool = false, producer: String,
                            progress: ((Int, Int) -> Void)? = nil) throws -> FeatureSet {
    let loader = ImageLoader(samples: split.samples, height: height, width: width, augment: .none, seed: seed,
                             skipBadImages: skipBadImages)
    let n = split.samples.count
    let batches = stride(from: 0, to: n, by: batchSize).map { Array($0..<Swift.min($0 + batchSize, n)) }
    let dim = model.spec.featureChannels
    var rows: [Float] = [], kept: [Int] = []
    rows.reserveCapacity(n * dim)
    let pre = Prefetcher(steps: 0..<batches.count) { s in try loader.batch(batches[s], epoch: 0, step: s, training: false) }
    for s in 0..<batches.count {
        let b = try pre.next(s)
        let f = model.features(b.images)
        if flip {
            let m = try loader.batch(b.indices, epoch: 0, step: s, training: false, mirror: true)
            let g = model.features(m.images)
            for i in 0..<f.count { f.ptr[i] += g.ptr[i] }
            for r in 0..<f.shape[0] {                      // re-normalise the average
                let row = f.ptr + r * dim
                let norm = Swift.max(vdot(row, row, dim).squareRoot(), 1e-12)
                for j in 0..<dim { row[j] /= norm }
            }
        }
        rows += f.buffer
        kept += b.indices
        progress?(s + 1, batches.count)
    }
    let t = Tensor([kept.count, dim], rows)
    return FeatureSet(features: t, pids: kept.map { Int64(split.samples[$0].pid) }, camids: kept.map { Int64(split.samples[$0].camera) },
                      paths: kept.map { split.samples[$0].path }, metadata: ["producer": producer, "split": split.name])
}
