// Batch samplers. Each epoch's order is a pure function of (seed, epoch), so
// resuming, prefetching and (later) sharding over ranks draw the same batches.
import ReIDCore

public enum SamplerKind: String, Codable, CaseIterable { case identity, sequential }

public struct SamplerConfig: Codable, Equatable {
    public var kind: SamplerKind = .identity
    public var idsPerBatch = 16 // P
    public var instances = 4 // K
    public init(kind: SamplerKind = .identity, idsPerBatch: Int = 16, instances: Int = 4) {
        self.kind = kind
        self.idsPerBatch = idsPerBatch
        self.instances = instances
    }
    public var batchSize: Int { idsPerBatch * instances }
}

/// torchreid's RandomIdentitySampler: each identity's images are shuffled
/// and cut into groups of K (an identity with fewer than K images is topped
/// up by drawing with repetition; a last group shorter than K is dropped);
/// then, while at least P identities have groups left, P of them are drawn
/// and each gives its next group. Batches are consecutive runs of P*K.
public func identityBatches(
    labels: [Int], config: SamplerConfig, seed: UInt64, epoch: Int,
    among ids: [Int]? = nil
) -> [[Int]] {
    let p = config.idsPerBatch, k = config.instances
    var rng = RNG(key: seed, UInt64(epoch), 0x5A11)
    var byId: [Int: [Int]] = [:]
    for (i, l) in labels.enumerated() { byId[l, default: []].append(i) }
    let pool = (ids ?? byId.keys.sorted()).filter { byId[$0] != nil }
    var groups: [Int: [[Int]]] = [:]
    for id in pool {
        var idx = byId[id]!
        if idx.count < k { idx = (0..<k).map { _ in idx[rng.below(idx.count)] } }
        rng.shuffle(&idx)
        groups[id] = stride(from: 0, to: idx.count - k + 1, by: k).map { Array(idx[$0..<($0 + k)]) }
    }
    var available = pool.filter { !(groups[$0]?.isEmpty ?? true) }
    var batches: [[Int]] = []
    while available.count >= p {
        // Draw P distinct identities (partial Fisher-Yates over `available`).
        var chosen: [Int] = []
        for i in 0..<p {
            let j = i + rng.below(available.count - i)
            available.swapAt(i, j)
            chosen.append(available[i])
        }
        var batch: [Int] = []
        for id in chosen { batch += groups[id]!.removeFirst() }
        batches.append(batch)
        available = available.filter { !groups[$0]!.isEmpty }
    }
    return batches
}

/// Every image in file order, in batches of P*K (a last batch of fewer than
/// two images, which batch norm cannot train on, is dropped).
public func sequentialBatches(count: Int, batchSize: Int) -> [[Int]] {
    stride(from: 0, to: count, by: batchSize).map { Array($0..<Swift.min($0 + batchSize, count)) }.filter {
        $0.count >= 2
    }
}

/// The training identities (labels 0..<classes) permuted by (seed, epoch) and
/// dealt round-robin into `ranks` disjoint shards that cover them all.
public func identityShards(classes: Int, ranks: Int, seed: UInt64, epoch: Int) -> [[Int]] {
    var ids = Array(0..<classes)
    var rng = RNG(key: seed, UInt64(epoch), 0x5EA4D)
    rng.shuffle(&ids)
    return (0..<ranks).map { r in stride(from: r, to: classes, by: ranks).map { ids[$0] } }
}
