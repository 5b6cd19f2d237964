// Resizing equals Pillow's Image.resize(size, Image.BILINEAR) bit for bit: the fixtures were
// written by Tests/Fixtures/make_resize_fixtures.py (Pillow 10.4.0) from images both sides compute
// from one formula; 23 sizes, shrinking by up to 31x, enlarging, one side only, identity.
// (Pillow 13 may run its vertical pass first, one grey level away on 3 of the cases.)
import Foundation
import ReIDImage
import XCTest

@testable import ReIDCore

final class ResizeTests: XCTestCase {
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/resize_pillow.safetensors").path

    /// make_resize_fixtures.py's source image.
    func source(_ w: Int, _ h: Int) -> RGBImage {
        var img = RGBImage(width: w, height: h)
        for y in 0..<h {
            for x in 0..<w {
                for c in 0..<3 {
                    img.pixels[(y * w + x) * 3 + c] = UInt8(
                        (x * 37 + y * 91 + c * 53 + (x * y) % 29 * 7 + (x ^ (y * 3)) % 17) % 256)
                }
            }
        }
        return img
    }

    func testResizeEqualsPillow() throws {
        let f = try SafeTensorsFile(path: Self.fixture)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.fixture)))
        XCTAssertGreaterThanOrEqual(f.tensors.count, 20)
        var shrinkBy = 0.0, worst = 0
        for (name, t) in f.tensors.sorted(by: { $0.key < $1.key }) {
            let sizes = name.split(separator: "-").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: ">")) }
            let a = sizes[0].split(separator: "x").map { Int($0)! }, b = sizes[1].split(separator: "x").map { Int($0)! }
            XCTAssertEqual(t.shape, [b[1], b[0], 3], name)
            let pillow = Array(bytes[(f.dataStart + t.begin)..<(f.dataStart + t.end)])
            let mine = source(a[0], a[1]).resized(width: b[0], height: b[1])
            let diff = zip(mine.pixels, pillow).map { abs(Int($0) - Int($1)) }.max() ?? 0
            worst = max(worst, diff)
            XCTAssertEqual(
                diff, 0,
                "\(name): \(zip(mine.pixels, pillow).filter { $0 != $1 }.count) values differ, by up to \(diff)")
            shrinkBy = max(shrinkBy, Double(a[0]) / Double(b[0]))
        }
        XCTAssertGreaterThan(shrinkBy, 3, "the fixtures shrink by more than 3x")
        print(
            "resize: \(f.tensors.count) sizes equal Pillow's (largest difference \(worst) grey levels), shrinking by up to \(Int(shrinkBy))x"
        )
    }

    /// The antialiasing matters: shrinking a 1-pixel checkerboard 4x gives its mean grey, where
    /// plain bilinear sampling would give pure black or white.
    func testShrinkingAveragesAsAnAntialiasedFilter() {
        var img = RGBImage(width: 64, height: 64)
        for y in 0..<64 {
            for x in 0..<64 { for c in 0..<3 { img.pixels[(y * 64 + x) * 3 + c] = (x + y) % 2 == 0 ? 255 : 0 } }
        }
        let small = img.resized(width: 16, height: 16)
        XCTAssert(small.pixels.allSatisfy { (120...135).contains($0) }, "\(small.pixels.prefix(12))")
    }
}
