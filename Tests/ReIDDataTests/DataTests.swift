// Datasets, augmentation and samplers.
import Foundation
import ReIDImage
import XCTest

@testable import ReIDCore
@testable import ReIDData

func tempDir(_ name: String) -> String {
    let p = FileManager.default.temporaryDirectory.appendingPathComponent("reid-\(name)-\(getpid())").path
    try? FileManager.default.removeItem(atPath: p)
    try! FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
    return p
}

final class DatasetTests: XCTestCase {
    func testFileNamesParse() {
        XCTAssertEqual(try ReIDDataset.parse("0002_c1s1_000451_03.jpg")!.pid, 2)
        XCTAssertEqual(try ReIDDataset.parse("0002_c1s1_000451_03.jpg")!.camera, 1)
        XCTAssertEqual(try ReIDDataset.parse("-1_c3s2_000100_01.jpg")!.pid, -1)
        XCTAssertEqual(try ReIDDataset.parse("0005_c2_f0046985.jpg")!.camera, 2)
        XCTAssertEqual(try ReIDDataset.parse("0000_c6s1_000000_00.jpg")!.pid, 0)
        XCTAssertEqual(try ReIDDataset.parse("0002_c12s1_000451_03.jpg")!.camera, 12, "camera numbers of any length")
        XCTAssertEqual(try ReIDDataset.parse("0002_c15_0451.png")!.camera, 15)
        XCTAssertNil(try ReIDDataset.parse("Thumbs.jpg"))
        XCTAssertNil(try ReIDDataset.parse("0002-c1.jpg"))
        XCTAssertThrowsError(try ReIDDataset.parse("-2_c1s1_000451_03.jpg")) {
            XCTAssert("\($0)".contains("the only negative id is -1"), "\($0)")
        }
        XCTAssertThrowsError(try ReIDDataset.parse("12345678901_c1s1.jpg")) {
            XCTAssert("\($0)".contains("11 digits; at most 9"), "\($0)")
        }
        XCTAssertEqual(ReIDDataset.printable("a\u{1}b"), "a\\u{1}b")
    }

    func testSyntheticMarketAndDukeLoadWithJunkDistractorsAndRelabelling() throws {
        for layout in [Layout.market, .duke] {
            let root = tempDir("ds-\(layout)")
            var c = SynthConfig()
            c.layout = layout
            c.trainIds = 6
            c.testIds = 4
            c.seed = 3
            let s = try writeSynthetic(c, to: root)
            let ds = try ReIDDataset(root: root, layout: layout)
            XCTAssertEqual(ds.classes, 6)
            XCTAssertEqual(ds.train.samples.count, s.train)
            XCTAssertEqual(Set(ds.train.samples.map(\.label)), Set(0..<6))
            // Labels follow the sorted original ids.
            let order = ds.train.samples.map { ($0.pid, $0.label) }.sorted { $0.0 < $1.0 }
            XCTAssert(zip(order, order.dropFirst()).allSatisfy { $0.0 == $1.0 ? $0.1 == $1.1 : $0.1 < $1.1 })
            XCTAssertFalse(ds.gallery.samples.contains { $0.pid == -1 }, "junk dropped")
            XCTAssertEqual(ds.gallery.samples.filter { $0.pid == 0 }.count, s.distractors, "distractors kept")
            XCTAssertEqual(ds.gallery.fileCount, s.gallery)
            XCTAssertEqual(ds.query.samples.count, s.query)
            XCTAssert(ds.warnings.isEmpty)
            if layout == .duke { XCTAssert(ds.train.samples[0].path.contains("_f")) }
        }
    }

    func testOfficialLookingFolderWithWrongCountsWarns() throws {
        let root = tempDir("x") + "/Market-1501-v15.09.15"
        var c = SynthConfig()
        c.trainIds = 3
        c.testIds = 2
        _ = try writeSynthetic(c, to: root)
        let ds = try ReIDDataset(root: root, layout: .market)
        XCTAssertEqual(ds.warnings.count, 1)
        XCTAssert(
            ds.warnings[0].contains("the official Market-1501")
                && ds.warnings[0].contains("official: 12936 training images of 751 ids"), ds.warnings[0])
    }

    func testBadDataErrorsNameThePath() throws {
        XCTAssertThrowsError(try ReIDDataset(root: "/nonexistent/data", layout: .market)) {
            XCTAssert("\($0)".contains("/nonexistent/data"))
        }
        let root = tempDir("bad")
        var c = SynthConfig()
        c.trainIds = 3
        c.testIds = 2
        _ = try writeSynthetic(c, to: root)
        try FileManager.default.removeItem(atPath: root + "/query")
        XCTAssertThrowsError(try ReIDDataset(root: root, layout: .market)) {
            XCTAssert("\($0)".contains(root + "/query: missing query folder"), "\($0)")
        }
        try FileManager.default.createDirectory(atPath: root + "/query", withIntermediateDirectories: true)
        XCTAssertThrowsError(try ReIDDataset(root: root, layout: .market)) {
            XCTAssert("\($0)".contains("no usable .jpg or .png images"), "\($0)")
        }
        XCTAssert(FileManager.default.createFile(atPath: root + "/query/holiday.jpg", contents: Data([1])))
        XCTAssertThrowsError(try ReIDDataset(root: root, layout: .market)) {
            XCTAssert("\($0)".contains("holiday.jpg: file name does not start"), "\($0)")
        }
        try FileManager.default.removeItem(atPath: root + "/query/holiday.jpg")
        // A truncated JPEG: an error naming it, or a counted skip when allowed.
        let train = try FileManager.default.contentsOfDirectory(atPath: root + "/bounding_box_train").sorted()
        let victim = root + "/bounding_box_train/" + train[0]
        let bytes = FileManager.default.contents(atPath: victim)!
        try bytes.prefix(bytes.count / 3).write(to: URL(fileURLWithPath: victim))
        try FileManager.default.copyItem(
            atPath: root + "/bounding_box_test/"
                + (try FileManager.default.contentsOfDirectory(atPath: root + "/bounding_box_test").sorted().last!),
            toPath: root + "/query/0001_c1s1_000001_00.jpg")
        let ds = try ReIDDataset(root: root, layout: .market)
        let strict = ImageLoader(samples: ds.train.samples, height: 32, width: 16, augment: .none, seed: 0)
        XCTAssertThrowsError(try strict.batch([0, 1], epoch: 0, step: 0, training: true)) {
            XCTAssert("\($0)".contains(victim), "\($0)")
        }
        let lenient = ImageLoader(
            samples: ds.train.samples, height: 32, width: 16, augment: .none, seed: 0, skipBadImages: true)
        let b = try lenient.batch([0, 1, 2], epoch: 0, step: 0, training: true)
        XCTAssertEqual(b.labels.count, 2)
        XCTAssertEqual(lenient.skipped.count, 1)
    }
}

final class AugmentTests: XCTestCase {
    func image() -> RGBImage {
        var img = RGBImage(width: 16, height: 32)
        for i in 0..<(16 * 32) {
            img.pixels[3 * i] = UInt8(i % 251)
            img.pixels[3 * i + 1] = UInt8((i * 7) % 256)
            img.pixels[3 * i + 2] = 128
        }
        return img
    }

    func render(_ aug: AugmentConfig, _ key: UInt64?, mirror: Bool = false) -> [Float] {
        let t = Tensor([3, 32, 16])
        var rng: RNG? = key.map { RNG(key: 7, $0) }
        imageToTensor(image(), t.ptr, aug: aug, rng: &rng, mirror: mirror)
        return t.array
    }

    func testNormalisationAndMirror() {
        let plain = render(.none, nil)
        XCTAssertEqual(plain[0], (0 / 255 - 0.485) / 0.229, accuracy: 1e-6)
        XCTAssertEqual(plain[5], (5 / 255 - 0.485) / 0.229, accuracy: 1e-6)
        XCTAssertEqual(plain[2 * 512 + 3], (128 / 255 - 0.406) / 0.225, accuracy: 1e-6)
        let m = render(.none, nil, mirror: true)
        XCTAssertEqual(m[0], plain[15])
        XCTAssertEqual(m[16 + 3], plain[16 + 12])
    }

    func testAugmentationIsAFunctionOfItsKey() {
        let aug = AugmentConfig(flip: 0.5, pad: 4, erasing: 0.5)
        XCTAssertEqual(render(aug, 1), render(aug, 1))
        let variants = Set((0..<12).map { render(aug, UInt64($0)) })
        XCTAssertGreaterThan(variants.count, 8, "different keys draw different flips, crops and erasures")
        XCTAssertEqual(render(aug, 3).count, 3 * 32 * 16)
    }

    func testPadCropShiftsAndErasingZeroes() {
        // Pad only: the output is the input shifted by (dy, dx) with black borders.
        let padded = render(AugmentConfig(flip: 0, pad: 4, erasing: 0), 5), plain = render(.none, nil)
        var matched = false
        for dy in -4...4 {
            for dx in -4...4 {
                var ok = true
                for y in 0..<32 {
                    for x in 0..<16 {
                        let sy = y + dy, sx = x + dx
                        let expect: Float =
                            (sy >= 0 && sy < 32 && sx >= 0 && sx < 16) ? plain[sy * 16 + sx] : (0 - 0.485) / 0.229
                        if abs(padded[y * 16 + x] - expect) > 1e-6 { ok = false }
                    }
                }
                if ok { matched = true }
            }
        }
        XCTAssert(matched, "pad+crop is a shift of the image")
        var erased = 0
        for key in 0..<10 {
            erased +=
                render(AugmentConfig(flip: 0, pad: 0, erasing: 1), UInt64(key)).filter { $0 == 0 }.count > 30 ? 1 : 0
        }
        XCTAssertEqual(erased, 10, "erasing with p=1 always blanks a rectangle")
    }
}

final class SamplerTests: XCTestCase {
    let labels: [Int] = (0..<10).flatMap { id in Array(repeating: id, count: id == 3 ? 2 : 5 + id % 3) }

    func testIdentityBatchesArePxK() {
        let cfg = SamplerConfig(kind: .identity, idsPerBatch: 4, instances: 3)
        let batches = identityBatches(labels: labels, config: cfg, seed: 1, epoch: 0)
        XCTAssertFalse(batches.isEmpty)
        for b in batches {
            XCTAssertEqual(b.count, 12)
            let ids = b.map { labels[$0] }
            XCTAssertEqual(Set(ids).count, 4)
            for id in Set(ids) { XCTAssertEqual(ids.filter { $0 == id }.count, 3) }
            for k in stride(from: 0, to: 12, by: 3) {
                XCTAssertEqual(Set(ids[k..<(k + 3)]).count, 1, "K images of one id together")
            }
        }
        // Identity 3 has 2 images: topped up by repetition to K.
        XCTAssert(batches.joined().contains { labels[$0] == 3 })
    }

    func testIdentityBatchesAreDeterministicAndChangeWithEpoch() {
        let cfg = SamplerConfig(kind: .identity, idsPerBatch: 2, instances: 2)
        XCTAssertEqual(
            identityBatches(labels: labels, config: cfg, seed: 4, epoch: 2),
            identityBatches(labels: labels, config: cfg, seed: 4, epoch: 2))
        XCTAssertNotEqual(
            identityBatches(labels: labels, config: cfg, seed: 4, epoch: 2),
            identityBatches(labels: labels, config: cfg, seed: 4, epoch: 3))
        // Coverage: with P=2, K=2 every identity is drawn.
        XCTAssertEqual(
            Set(identityBatches(labels: labels, config: cfg, seed: 4, epoch: 0).joined().map { labels[$0] }),
            Set(0..<10))
    }

    func testSequentialBatches() {
        XCTAssertEqual(sequentialBatches(count: 7, batchSize: 3), [[0, 1, 2], [3, 4, 5]])
        XCTAssertEqual(sequentialBatches(count: 8, batchSize: 3), [[0, 1, 2], [3, 4, 5], [6, 7]])
    }
}
