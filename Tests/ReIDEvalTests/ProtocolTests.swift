// The evaluation protocol: hand-worked cases, torchreid's numbers on a
// fixture, blockwise = one-shot, re-ranking, and bad feature files.
import Foundation
import XCTest

@testable import ReIDCore
@testable import ReIDEval

final class ProtocolTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures")

    /// One query (id 1, camera 1) over 8 gallery images, worked by hand.
    ///   index: 0    1    2    3    4    5    6    7
    ///   dist:  0.1  0.2  0.2  0.3  0.4  0.5  0.5  0.9
    ///   id:    1    7    1    -1   0    1    1    1
    ///   cam:   1    2    3    2    4    2    5    1
    /// 0: same id+camera, removed. 3: junk, ignored. Kept order (ties by index):
    ///   1 (wrong), 2 (right), 4 (distractor, wrong), 5 (right), 6 (right); 7 removed.
    /// Correct at positions 2, 4, 5: AP = (1/2 + 2/4 + 3/5)/3 = 0.5333..., INP = 3/5.
    func testHandWorkedQueryWithTiesJunkDistractorsAndSameCamera() {
        let r = evaluateDistances(
            [0.1, 0.2, 0.2, 0.3, 0.4, 0.5, 0.5, 0.9], queryPids: [1], queryCams: [1],
            galleryPids: [1, 7, 1, -1, 0, 1, 1, 1], galleryCams: [1, 2, 3, 2, 4, 2, 5, 1], maxRank: 5)
        XCTAssertEqual(r.cmc, [0, 1, 1, 1, 1])
        XCTAssertEqual(r.mAP, (0.5 + 0.5 + 0.6) / 3, accuracy: 1e-12)
        XCTAssertEqual(r.mINP, 0.6, accuracy: 1e-12)
        XCTAssertEqual(r.validQueries, 1)
    }

    /// Ties go to the lower gallery index: a wrong image listed first wins the tie.
    func testTiesRankTheLowerIndexFirst() {
        let first = evaluateDistances(
            [0.5, 0.5], queryPids: [1], queryCams: [1], galleryPids: [2, 1], galleryCams: [1, 2], maxRank: 2)
        XCTAssertEqual(first.cmc, [0, 1])
        XCTAssertEqual(first.mAP, 0.5, accuracy: 1e-12)
        let second = evaluateDistances(
            [0.5, 0.5], queryPids: [1], queryCams: [1], galleryPids: [1, 2], galleryCams: [2, 1], maxRank: 2)
        XCTAssertEqual(second.cmc, [1, 1])
        XCTAssertEqual(second.mAP, 1, accuracy: 1e-12)
    }

    /// A query whose only matches share its camera is not counted.
    func testQueryWithoutValidMatchIsNotCounted() {
        // Query 0: id 3 cam 1, its only match is cam 1 -> invalid. Query 1: id 4, match at position 1.
        let r = evaluateDistances(
            [
                0.1, 0.2,
                0.3, 0.1
            ], queryPids: [3, 4], queryCams: [1, 1],
            galleryPids: [3, 4], galleryCams: [1, 2], maxRank: 2)
        XCTAssertEqual(r.validQueries, 1)
        XCTAssertEqual(r.totalQueries, 2)
        XCTAssertEqual(r.cmc, [1, 1])
        XCTAssertEqual(r.mAP, 1)
        XCTAssertEqual(r.mINP, 1)
    }

    func loadFixture() throws -> SafeTensorsFile {
        try SafeTensorsFile(path: Self.fixtures.appendingPathComponent("eval_torchreid.safetensors").path)
    }

    func sets(_ f: SafeTensorsFile) throws -> (FeatureSet, FeatureSet) {
        func make(_ p: String) throws -> FeatureSet {
            let info = try f.info(p + "f")
            return FeatureSet(
                features: Tensor(info.shape, try f.floats(p + "f")), pids: try f.int64s(p + "p"),
                camids: try f.int64s(p + "c"), path: p)
        }
        return (try make("q"), try make("g"))
    }

    /// torchreid's eval_market1501 on the same distances (its gallery without junk).
    func testAgreesWithTorchreidOnTheSameDistances() throws {
        let f = try loadFixture()
        let (q, g) = try sets(f)
        let r = evaluateDistances(
            try f.floats("euclidean.dist"), queryPids: q.pids, queryCams: q.camids,
            galleryPids: g.pids, galleryCams: g.camids, maxRank: 50)
        let cmc = try f.info("euclidean.cmc")
        XCTAssertEqual(cmc.dtype, .F64)
        var ref = [Double](repeating: 0, count: cmc.count)
        try ref.withUnsafeMutableBytes { try f.read("euclidean.cmc", into: $0.baseAddress!) }
        for k in 0..<50 { XCTAssertEqual(r.cmc[k], ref[k], accuracy: 1e-6, "CMC@\(k + 1)") }
        XCTAssertEqual(r.mAP, try double(f, "euclidean.mAP"), accuracy: 1e-6)
        XCTAssertEqual(r.mINP, try double(f, "euclidean.mINP"), accuracy: 1e-6)
        XCTAssert(r.rank(1) > 0.2 && r.rank(1) < 0.9, "fixture is informative: rank-1 \(r.rank(1))")
    }

    func double(_ f: SafeTensorsFile, _ name: String) throws -> Double {
        var x = [Double](repeating: 0, count: 1)
        try x.withUnsafeMutableBytes { try f.read(name, into: $0.baseAddress!) }
        return x[0]
    }

    /// Features in, blockwise: identical for every block size, and equal to the
    /// protocol on the full distance matrix.
    func testBlockwiseRankingEqualsOneShot() throws {
        let (q, g) = try sets(try loadFixture())
        for metric in Metric.allCases {
            let full = distanceMatrix(q, g, metric: metric)
            let oneShot = evaluateDistances(
                full.array, queryPids: q.pids, queryCams: q.camids,
                galleryPids: g.pids, galleryCams: g.camids)
            for rows in [1, 7, 60, 1000] {
                XCTAssertEqual(
                    try rank(query: q, gallery: g, metric: metric, blockRows: rows), oneShot, "\(metric) block \(rows)")
            }
        }
    }

    /// Re-ranking against torchreid's re_ranking (k1=20, k2=6, lambda=0.3).
    func testRerankingAgreesWithTorchreid() throws {
        let f = try loadFixture()
        let (q, gAll) = try sets(f)
        let g = gAll.droppingJunk()
        let rr = try Reranker(query: q, gallery: g, metric: .euclidean)
        let out = Tensor([q.count, g.count])
        rr.distances(q0: 0, rows: q.count, into: out.ptr)
        let ref = try f.floats("euclidean.rerank.dist")
        XCTAssertEqual(ref.count, out.count)
        let err = zip(out.array, ref).map { abs($0 - $1) }.max()!
        XCTAssertLessThan(err, 1e-4, "largest difference from torchreid's re-ranked distances")
        let r = try rankReranked(query: q, gallery: gAll, metric: .euclidean)
        XCTAssertEqual(r.mAP, try double(f, "euclidean.rerank.mAP"), accuracy: 1e-6)
        var cmc = [Double](repeating: 0, count: 50)
        try cmc.withUnsafeMutableBytes { try f.read("euclidean.rerank.cmc", into: $0.baseAddress!) }
        XCTAssertEqual(r.rank(1), cmc[0], accuracy: 1e-6)
        XCTAssertGreaterThan(r.mAP, try double(f, "euclidean.mAP"), "re-ranking helps on clustered data")
    }

    // MARK: bad input

    func writeFile(_ records: [TensorRecord], _ name: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("eval-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let p = dir.appendingPathComponent(name).path
        try SafeTensors.write(records, to: p)
        return p
    }

    func expectError(_ records: [TensorRecord], _ fragment: String, file: StaticString = #filePath, line: UInt = #line)
        throws
    {
        let p = try writeFile(records, "bad.safetensors")
        XCTAssertThrowsError(try FeatureSet(path: p), file: file, line: line) { e in
            XCTAssert("\(e)".contains(p) && "\(e)".contains(fragment), "got: \(e)", file: file, line: line)
        }
    }

    func testBadFeatureFilesAreRejectedByName() throws {
        let ids = TensorRecord("pids", int64s: [1, 2], shape: [2]),
            cams = TensorRecord("camids", int64s: [1, 1], shape: [2])
        try expectError([TensorRecord("features", int64s: [1, 2], shape: [2, 1]), ids, cams], "must be F32")
        try expectError(
            [TensorRecord("features", floats: [1, 2, 3], shape: [3, 1]), ids, cams], "'features' has 3 rows")
        try expectError(
            [TensorRecord("features", floats: [1, .nan], shape: [2, 1]), ids, cams], "row 1 column 0 is nan")
        try expectError(
            [
                TensorRecord("features", floats: [], shape: [0, 4]),
                TensorRecord("pids", int64s: [], shape: [0]), TensorRecord("camids", int64s: [], shape: [0])
            ], "empty")
        try expectError([TensorRecord("features", floats: [1, 2], shape: [2, 1]), ids], "no 'camids'")
        let a = try writeFile(
            [
                TensorRecord("features", floats: [1, 2], shape: [1, 2]), TensorRecord("pids", int64s: [1], shape: [1]),
                TensorRecord("camids", int64s: [1], shape: [1])
            ], "a.safetensors")
        let b = try writeFile(
            [
                TensorRecord("features", floats: [1, 2, 3], shape: [1, 3]),
                TensorRecord("pids", int64s: [1], shape: [1]),
                TensorRecord("camids", int64s: [2], shape: [1])
            ], "b.safetensors")
        XCTAssertThrowsError(try rank(query: FeatureSet(path: a), gallery: FeatureSet(path: b))) { e in
            XCTAssert("\(e)".contains("2-dimensional") && "\(e)".contains("b.safetensors"), "\(e)")
        }
    }

    func testFeatureFileRoundTrip() throws {
        let set = FeatureSet(
            features: Tensor([2, 3], [1, 2, 3, 4, 5, 6]), pids: [5, -1], camids: [1, 2],
            paths: ["a/0005_c1s1_000001_00.jpg", "b/-1_c2s1_000002_00.jpg"])
        let p = FileManager.default.temporaryDirectory.appendingPathComponent("rt-\(getpid()).safetensors").path
        try set.write(to: p, producer: "test")
        let back = try FeatureSet(path: p)
        XCTAssertEqual(back.features.array, [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(back.pids, [5, -1])
        XCTAssertEqual(back.paths, set.paths)
        XCTAssertEqual(back.metadata["producer"], "test")
        XCTAssertEqual(back.droppingJunk().count, 1)
    }
}
