// The batch-hard triplet loss: its gradient against finite differences in every form (hinge and
// soft margin, Euclidean and cosine), the anchors it counts, and what mining over a batch split
// among ranks changes. (mpirun against simulated ranks, global and local: MPITests.)
import XCTest

@testable import ReIDCore

final class TripletLossTests: XCTestCase {
    let labels = [0, 0, 1, 1, 2, 2, 3, 3, 0, 1]

    func testGradientsMatchFiniteDifferences() {
        for loss in [
            TripletLoss(margin: 0.3), TripletLoss(margin: 2, distance: .cosine), TripletLoss(soft: true),
            TripletLoss(soft: true, distance: .cosine)
        ] {
            let n = labels.count, dim = 6
            let f = randomTensor([n, dim], seed: 5), grad = Tensor([n, dim])
            let a = loss(f.ptr, n: n, dim: dim, labels: labels, grad: grad.ptr, scale: 1)
            XCTAssertEqual(a.count, n)
            XCTAssertGreaterThan(a.mean, 0)
            let gc = GradCheck(h: 1e-3, rtol: 2e-2, atol: 1e-4, samples: 60)
            gc.check(
                "\(loss)", f.ptr, count: n * dim, analytic: { grad.ptr[$0] },
                loss: { loss(f.ptr, n: n, dim: dim, labels: self.labels).mean })
        }
    }

    /// An anchor is never its own positive: an identity with one image in the batch has no
    /// anchor; a batch of one identity has no negatives, hence no loss and no gradient.
    func testAnchorsNeedAPositiveAndANegative() {
        let f = randomTensor([4, 3], seed: 1), grad = Tensor([4, 3])
        let a = TripletLoss()(f.ptr, n: 4, dim: 3, labels: [7, 7, 8, 9], grad: grad.ptr)
        XCTAssertEqual(a.valid, [true, true, false, false])
        let none = TripletLoss()(f.ptr, n: 4, dim: 3, labels: [1, 1, 1, 1], grad: grad.ptr)
        XCTAssertEqual(none.count, 0)
        XCTAssertEqual(none.mean, 0)
        XCTAssertEqual(grad.array, [Float](repeating: 0, count: 12))
    }

    /// With each identity on one rank (as the identity sampler deals them), mining over the gathered
    /// batch finds the hardest positives each rank finds alone, and hardest negatives that are
    /// never farther (chosen among more images): what global mining changes is the negatives.
    func testGlobalMiningFindsNearerNegativesOnly() {
        let ranks = 2, perRank = 6, dim = 5, n = ranks * perRank
        let labels = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3] // rank 0: ids 0-1, rank 1: ids 2-3
        let f = randomTensor([n, dim], seed: 9)
        let loss = TripletLoss(margin: 0.5)
        let global = loss(f.ptr, n: n, dim: dim, labels: labels)
        var nearer = 0
        for r in 0..<ranks {
            let local = loss(
                f.ptr + r * perRank * dim, n: perRank, dim: dim,
                labels: Array(labels[(r * perRank)..<((r + 1) * perRank)]))
            for i in 0..<perRank {
                XCTAssertEqual(local.dap[i], global.dap[r * perRank + i], "positives stay on their rank")
                XCTAssertLessThanOrEqual(
                    global.dan[r * perRank + i], local.dan[i], "more negatives: never a farther hardest one")
                if global.dan[r * perRank + i] < local.dan[i] { nearer += 1 }
            }
        }
        XCTAssertGreaterThan(nearer, 0, "some anchor's hardest negative is on the other rank")
        XCTAssertEqual(global.count, n)
    }
}
