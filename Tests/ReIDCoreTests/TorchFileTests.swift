// torch.save files read with no Python: both formats equal the same weights in
// safetensors tensor by tensor (a transposed view included); a pickle that would
// call os.system is refused naming the global and runs nothing; truncated files
// are refused with a reason.
import Foundation
import XCTest

@testable import ReIDCore
@testable import ReIDTorch

final class TorchFileTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures")
    func fixture(_ name: String) -> String { Self.fixtures.appendingPathComponent(name).path }

    func compareWithSafetensors(_ file: String) throws {
        let records = try TorchFile.read(fixture(file))
        let reference = try SafeTensorsFile(path: fixture("resnet18w4.safetensors"))
        XCTAssertEqual(Set(records.map(\.name)), Set(reference.tensors.keys), file)
        XCTAssertEqual(records.count, 122, file) // 20 convs, 20 batch norms x 5 tensors, fc weight and bias
        for r in records {
            let info = try reference.info(r.name)
            XCTAssertEqual(r.shape, info.shape, r.name)
            if r.dtype == .I64 {
                XCTAssertEqual(
                    try SafeTensorsFile(data: SafeTensors.encode([r])).int64s(r.name), try reference.int64s(r.name),
                    r.name)
            } else {
                XCTAssertEqual(
                    try SafeTensorsFile(data: SafeTensors.encode([r])).floats(r.name), try reference.floats(r.name),
                    r.name)
            }
        }
        XCTAssertTrue(TorchFile.looks(fixture(file)))
    }

    func testZipFormatEqualsSafetensors() throws { try compareWithSafetensors("resnet18w4.pth") }
    func testLegacyFormatEqualsSafetensors() throws { try compareWithSafetensors("resnet18w4-legacy.pth") }

    func testAPickleThatWouldRunCodeIsRefused() throws {
        try? FileManager.default.removeItem(atPath: "/tmp/reid-dist-pwned")
        XCTAssertThrowsError(try TorchFile.read(fixture("malicious.pth"))) { e in
            XCTAssert(
                "\(e)".contains("refusing the pickle global 'posix.system'")
                    || "\(e)".contains("refusing the pickle global 'os.system'"), "\(e)")
            XCTAssert("\(e)".contains("malicious.pth"), "\(e)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/tmp/reid-dist-pwned"))
        // The same in a bare pickle: builtins.eval through STACK_GLOBAL (protocol 4).
        var evil: [UInt8] = [0x80, 0x04, 0x8C, 8] + Array("builtins".utf8) + [0x8C, 4] + Array("eval".utf8) + [0x93]
        evil += [0x8C, 5] + Array("1+1+1".utf8) + [0x85, 0x52, 0x2E]
        var u = Unpickler(evil, path: "evil.pkl")
        XCTAssertThrowsError(try u.load()) {
            XCTAssert("\($0)".contains("refusing the pickle global 'builtins.eval'"), "\($0)")
        }
        // An opcode a state dict never uses (INST) is refused too.
        var inst = Unpickler([0x80, 0x02, 0x69] + Array("os\nsystem\n".utf8), path: "inst.pkl")
        XCTAssertThrowsError(try inst.load()) { XCTAssert("\($0)".contains("refusing pickle opcode 0x69"), "\($0)") }
    }

    func testTruncatedFilesAreRefused() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("reid-torch-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for name in ["resnet18w4.pth", "resnet18w4-legacy.pth"] {
            let whole = try Data(contentsOf: URL(fileURLWithPath: fixture(name)))
            for cut in [whole.count - 1, whole.count / 2, 5000, 100] {
                let path = dir + "/cut-\(cut)-" + name
                try whole.prefix(cut).write(to: URL(fileURLWithPath: path))
                XCTAssertThrowsError(try TorchFile.read(path), "\(name) cut at \(cut)") { e in
                    XCTAssert("\(e)".contains(path), "\(e)")
                }
            }
        }
        try Data("not a torch file".utf8).write(to: URL(fileURLWithPath: dir + "/text.pth"))
        XCTAssertThrowsError(try TorchFile.read(dir + "/text.pth")) {
            XCTAssert("\($0)".contains("not a torch.save file"), "\($0)")
        }
    }
}
