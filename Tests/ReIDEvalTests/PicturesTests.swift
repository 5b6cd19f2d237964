// Ranked-list pictures and the JPEG codec they use.
import Foundation
import ReIDImage
import XCTest

@testable import ReIDCore
@testable import ReIDEval

final class PicturesTests: XCTestCase {
    func testJPEGRoundTripAndBadFiles() throws {
        var img = RGBImage(width: 20, height: 30, fill: (200, 30, 30))
        img.fill(x: 0, y: 0, width: 10, height: 30, (10, 10, 220))
        let back = try RGBImage(jpeg: try img.jpegData(quality: 95), path: "mem")
        XCTAssertEqual(back.width, 20)
        XCTAssertEqual(back.height, 30)
        XCTAssertEqual(Int(back.pixels[(15 * 20 + 15) * 3]), 200, accuracy: 8)
        XCTAssertEqual(Int(back.pixels[(15 * 20 + 2) * 3 + 2]), 220, accuracy: 8)
        let data = try img.jpegData()
        XCTAssertThrowsError(try RGBImage(jpeg: data.prefix(data.count / 2), path: "cut.jpg")) {
            XCTAssert("\($0)".hasPrefix("cut.jpg: not a readable JPEG"), "\($0)")
        }
        XCTAssertThrowsError(try RGBImage(jpeg: Data("not a jpeg".utf8), path: "text.jpg")) {
            XCTAssert("\($0)".contains("text.jpg"), "\($0)")
        }
        let r = img.resized(width: 10, height: 15)
        XCTAssertEqual(r.pixels.count, 10 * 15 * 3)
    }

    func testPicturesShowTheKeptTopImagesFramedByCorrectness() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pics-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        func save(_ name: String, _ shade: UInt8) throws -> String {
            let p = dir.appendingPathComponent(name).path
            try RGBImage(width: 16, height: 32, fill: (shade, shade, shade)).jpegData().write(
                to: URL(fileURLWithPath: p))
            return p
        }
        let q = FeatureSet(features: Tensor([1, 2], [1, 0]), pids: [1], camids: [1], paths: [try save("q.jpg", 128)])
        // Gallery 0: same id + camera (removed); 1: right; 2: wrong; 3: junk (skipped).
        let g = FeatureSet(
            features: Tensor([4, 2], [1, 0, 0.9, 0.1, 0.5, 0.5, 1, 0]), pids: [1, 1, 2, -1], camids: [1, 2, 3, 4],
            paths: [try save("g0.jpg", 0), try save("g1.jpg", 60), try save("g2.jpg", 250), try save("g3.jpg", 90)])
        let d = distanceMatrix(q, g, metric: .cosine)
        var pics = RankedListPictures()
        pics.topK = 3
        let files = try pics.write(
            query: q, gallery: g, distances: d.ptr, count: 1, to: dir.appendingPathComponent("out").path)
        XCTAssertEqual(files.count, 1)
        let img = try RGBImage(file: files[0])
        let cw = pics.cellWidth + 2 * pics.border
        XCTAssertEqual(img.width, cw * 4 + pics.gap)
        XCTAssertEqual(img.height, pics.cellHeight + 2 * pics.border)
        func pixel(_ x: Int, _ y: Int) -> (Int, Int, Int) {
            let i = (y * img.width + x) * 3
            return (Int(img.pixels[i]), Int(img.pixels[i + 1]), Int(img.pixels[i + 2]))
        }
        let first = pixel(cw + pics.gap + 1, 1), second = pixel(2 * cw + pics.gap + 1, 1)
        XCTAssert(first.1 > 150 && first.0 < 80, "first kept image (right) framed green: \(first)")
        XCTAssert(second.0 > 150 && second.1 < 80, "second kept image (wrong) framed red: \(second)")
        let third = pixel(3 * cw + pics.gap + 10, 20)
        XCTAssert(third.0 > 240 && third.1 > 240, "only two kept images: the third cell stays white: \(third)")
        XCTAssertThrowsError(
            try pics.write(
                query: FeatureSet(features: Tensor([1, 2], [1, 0]), pids: [1], camids: [1]),
                gallery: g, distances: d.ptr, count: 1, to: dir.path)
        ) {
            XCTAssert("\($0)".contains("no __metadata__ 'paths'"), "\($0)")
        }
    }

    func testQueriesByAPAndRankedListsMarkJunkAndSameCamera() throws {
        // Query 1 (0, 1): nearest g2 (junk), then g1 (its id, its camera: removed), then g0 (another
        // id), then g3 (its id, another camera): AP 1/2. Query 0 finds g0 first: AP 1. Query 2: none.
        let q = FeatureSet(
            features: Tensor([3, 2], [1, 0, 0, 1, 0.7, 0.7]), pids: [1, 2, 9], camids: [1, 1, 1],
            paths: ["q0", "q1", "q2"])
        let g = FeatureSet(
            features: Tensor([4, 2], [1, 0, 0.1, 1, 0, 1, 1, -0.05]), pids: [1, 2, -1, 2], camids: [2, 1, 3, 2],
            paths: ["g0", "g1", "g2", "g3"])
        let r = try rank(query: q, gallery: g)
        XCTAssertEqual(r.queryAP[0], 1)
        XCTAssertEqual(r.queryAP[1]!, 0.5, accuracy: 1e-9)
        XCTAssertNil(r.queryAP[2])
        XCTAssertEqual(r.queries(.worst, 5), [1, 0])
        XCTAssertEqual(r.queries(.best, 1), [0])
        XCTAssertEqual(r.queries(.file, 5), [0, 1])
        let lists = rankedLists(query: q, gallery: g, metric: .cosine, result: r, indices: [1], k: 4)
        XCTAssertEqual(lists[0].top.map(\.path), ["g2", "g1", "g0", "g3"])
        XCTAssertEqual(lists[0].top.map(\.mark), [.junk, .sameCamera, .wrong, .correct])
    }
}
