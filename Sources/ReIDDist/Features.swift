// Feature extraction: a split's images through the network in inference mode,
// optionally averaged with their mirror images, as a FeatureSet.
import Foundation
import ReIDCore
import ReIDData
import ReIDEval
import ReIDImage

public func extractFeatures(
    model: GroupedMultiBranchNet, split: Split, height: Int, width: Int, batchSize: Int,
    flip: Bool, skipBadImages: Bool = false, maxPixels: Int = RGBImage.defaultMaxPixels, producer: String,
    progress: ((Int, Int) -> Void)? = nil
) throws -> FeatureSet {
    let loader = ImageLoader(
        samples: split.samples, height: height, width: width, augment: .none, seed: 0,
        skipBadImages: skipBadImages, maxPixels: maxPixels)
    let n = split.samples.count
    let batches = stride(from: 0, to: n, by: batchSize).map { Array($0..<Swift.min($0 + batchSize, n)) }
    let dim = model.featureChannels
    var rows: [Float] = [], kept: [Int] = []
    rows.reserveCapacity(n * dim)
    let pre = Prefetcher(steps: 0..<batches.count) { s in
        try loader.batch(batches[s], epoch: 0, step: s, training: false, withMirror: flip)
    }
    for s in 0..<batches.count {
        let b = try pre.next(s)
        let f = model.features(b.images)
        if let mirrored = b.mirrored {
            let g = model.features(mirrored)
            for i in 0..<f.count { f.ptr[i] += g.ptr[i] }
            for r in 0..<f.shape[0] { // re-normalise the average
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
    return FeatureSet(
        features: t, pids: kept.map { Int64(split.samples[$0].pid) },
        camids: kept.map { Int64(split.samples[$0].camera) },
        paths: kept.map { split.samples[$0].path }, metadata: ["producer": producer, "split": split.name])
}

/// Cluster extraction: the split's batches (of `batchSize`, in order) are
/// dealt round-robin to the ranks; rank 0 receives every batch's features and
/// returns the whole set in the split's order (other ranks return nil). Each
/// batch holds the same images as in a single-process extraction, so the
/// features, and the numbers, are the same bit for bit. `progress(done, total)` reports this
/// rank's batches.
public func extractFeatures(
    model: GroupedMultiBranchNet, split: Split, height: Int, width: Int, batchSize: Int,
    flip: Bool, skipBadImages: Bool = false, maxPixels: Int = RGBImage.defaultMaxPixels, comm: Communicator,
    producer: String, progress: ((Int, Int) -> Void)? = nil
) throws -> FeatureSet? {
    if comm.size == 1 {
        return try extractFeatures(
            model: model, split: split, height: height, width: width, batchSize: batchSize,
            flip: flip, skipBadImages: skipBadImages, maxPixels: maxPixels, producer: producer,
            progress: progress)
    }
    let n = split.samples.count, ranks = comm.size, r = comm.rank
    let batches = stride(from: 0, to: n, by: batchSize).map { $0..<Swift.min($0 + batchSize, n) }
    let mineIdx = batches.indices.filter { $0 % ranks == r }
    var mine = split
    mine.samples = mineIdx.flatMap { split.samples[batches[$0]] }
    let dim = model.featureChannels
    let rowsMax = ((batches.count + ranks - 1) / ranks) * batchSize
    var send = [Float](repeating: 0, count: rowsMax * dim)
    if !mine.samples.isEmpty {
        let f = try extractFeatures(
            model: model, split: mine, height: height, width: width, batchSize: batchSize,
            flip: flip, skipBadImages: skipBadImages, maxPixels: maxPixels, producer: producer,
            progress: progress)
        guard f.count == mine.samples.count else {
            throw CommError(
                "rank \(r): \(mine.samples.count - f.count) images of its share of \(split.folder) could not be decoded; "
                    + "with several ranks every image must decode (skip them with one process)")
        }
        send.replaceSubrange(0..<(f.count * dim), with: f.features.buffer)
    }
    guard let all = try comm.gather(send, send.count, root: 0) else { return nil }
    let t = Tensor([n, dim], zero: false)
    all.withUnsafeBufferPointer { buf in
        let f = buf.baseAddress!
        var row = [Int](repeating: 0, count: ranks) // next row in each rank's block
        for (b, range) in batches.enumerated() {
            let k = b % ranks
            for i in range {
                (t.ptr + i * dim).update(from: f + (k * rowsMax + row[k]) * dim, count: dim)
                row[k] += 1
            }
        }
    }
    return FeatureSet(
        features: t, pids: split.samples.map { Int64($0.pid) }, camids: split.samples.map { Int64($0.camera) },
        paths: split.samples.map(\.path), metadata: ["producer": producer, "split": split.name])
}
