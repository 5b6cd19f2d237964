// Every dataset layout end to end on synthetic data written in it, and the
// faults each reader must name: malformed list lines, missing files, duplicate
// paths, damaged PNGs, identities shared between training and test.
import Foundation
import ReIDCore
import ReIDImage
import XCTest

@testable import ReIDData

final class LayoutTests: XCTestCase {
    func scratchDir(_ name: String) -> String {
        let p = FileManager.default.temporaryDirectory.appendingPathComponent("reid-layout-\(name)-\(getpid())").path
        try? FileManager.default.removeItem(atPath: p)
        return p
    }

    func synth(_ layout: Layout, _ name: String) throws -> (String, SynthSummary) {
        let root = scratchDir(name)
        var c = SynthConfig()
        c.layout = layout
        c.trainIds = 12
        c.testIds = 8
        c.seed = 5
        return (root, try writeSynthetic(c, to: root))
    }

    func testEveryLayoutLoadsWhatSynthWrote() throws {
        for (k, layout) in Layout.allCases.enumerated() {
            let (root, s) = try synth(layout, "set\(k)") // a name claiming no official set (that warns)
            for images in DatasetOptions.CUHK03Images.allCases where layout == .cuhk03 || images == .detected {
                let ds = try ReIDDataset(root: root, layout: layout, options: DatasetOptions(cuhk03Images: images))
                XCTAssertEqual(ds.train.samples.count, s.train, "\(layout)")
                XCTAssertEqual(ds.classes, 12, "\(layout)")
                XCTAssertEqual(ds.query.samples.count, s.query, "\(layout)")
                XCTAssertEqual(
                    ds.gallery.samples.count, s.gallery - s.junk, "\(layout): junk dropped, distractors kept")
                XCTAssertEqual(Set(ds.train.samples.map(\.label)), Set(0..<12))
                XCTAssert(ds.warnings.isEmpty, "\(ds.warnings)")
                // Every image decodes, JPEG or PNG.
                for sample in ds.query.samples.prefix(3) + ds.gallery.samples.prefix(3) {
                    XCTAssertEqual(try RGBImage(file: sample.path).width, 64)
                }
            }
        }
    }

    func testMSMT17ListsIdsAndCameras() throws {
        let (root, s) = try synth(.msmt17, "lists")
        let ds = try ReIDDataset(root: root, layout: .msmt17)
        XCTAssert(ds.query.samples.contains { $0.pid == 0 }, "id 0 is a person in MSMT17, kept in the query")
        XCTAssert(ds.train.samples.allSatisfy { (1...6).contains($0.camera) })
        let apart = try ReIDDataset(root: root, layout: .msmt17, options: DatasetOptions(msmt17MergeVal: false))
        XCTAssertLessThan(apart.train.samples.count, s.train, "list_val kept apart")
        // Faults: a malformed line, a missing image, a duplicate line; each names the list file and line.
        let list = root + "/list_query.txt"
        let text = try String(contentsOfFile: list, encoding: .utf8)
        try (text + "nonsense\n").write(toFile: list, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ReIDDataset(root: root, layout: .msmt17)) {
            XCTAssert("\($0)".contains("list_query.txt:\(s.query + 1): expected `<image path> <id>`"), "\($0)")
        }
        try (text + "0000/0000_999_01_0303morning_9999_0.jpg 0\n").write(
            toFile: list, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ReIDDataset(root: root, layout: .msmt17)) {
            XCTAssert("\($0)".contains("0000_999_01_0303morning_9999_0.jpg does not exist"), "\($0)")
        }
        let first = text.split(separator: "\n")[0]
        try (text + first + "\n").write(toFile: list, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ReIDDataset(root: root, layout: .msmt17)) {
            XCTAssert("\($0)".contains("is listed again (first on line 1)"), "\($0)")
        }
    }

    func testListLayoutFaultsNameTheFileAndLine() throws {
        let (root, _) = try synth(.list, "list")
        let q = root + "/query.csv"
        let text = try String(contentsOfFile: q, encoding: .utf8)
        let lines = text.split(separator: "\n").count
        for (bad, fragment) in [
            ("images/query/x.jpg,12", "2 fields, the header has 3"),
            ("images/query/nothere.jpg,5,1", "nothere.jpg does not exist"),
            ("images/query/img_00001.jpg,-7,1", "pid '-7' is not -1"),
            ("images/query/img_00001.jpg,5,one", "camid 'one' is not an integer")
        ] {
            try (text + bad + "\n").write(toFile: q, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try ReIDDataset(root: root, layout: .list)) {
                XCTAssert("\($0)".contains("\(q):\(lines + 1): ") && "\($0)".contains(fragment), "\($0)")
            }
        }
        try "file,pid\n".write(toFile: q, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ReIDDataset(root: root, layout: .list)) {
            XCTAssert("\($0)".contains("\(q):1: the header must name the columns path, pid, camid"), "\($0)")
        }
        // One file with a split column, tab-separated, paths relative to it; and a training id
        // that is also a test id is a counted warning.
        try text.write(toFile: q, atomically: true, encoding: .utf8)
        var all = ["path\tpid\tcamid\tsplit"]
        for split in ["train", "query", "gallery"] {
            for l in try String(contentsOfFile: root + "/\(split).csv", encoding: .utf8).split(separator: "\n")
                .dropFirst()
            {
                all.append(l.replacingOccurrences(of: ",", with: "\t") + "\t\(split)")
            }
        }
        let trainRow = all[1].split(separator: "\t").map(String.init)
        let source: String = trainRow[0]
        let copy: String = source.replacingOccurrences(of: "train", with: "gallery").replacingOccurrences(
            of: "img_", with: "copy_")
        all.append(copy + "\t" + trainRow[1] + "\t9\tgallery")
        try FileManager.default.copyItem(atPath: root + "/" + source, toPath: root + "/" + copy)
        try all.joined(separator: "\n").write(toFile: root + "/all.tsv", atomically: true, encoding: .utf8)
        let ds = try ReIDDataset(root: root + "/all.tsv", layout: .list)
        XCTAssertEqual(ds.classes, 12)
        XCTAssert(
            ds.warnings.contains { $0.contains("1 identity appears in both the training and the test splits") },
            "\(ds.warnings)")
        all.append(all[2])
        try all.joined(separator: "\n").write(toFile: root + "/all.tsv", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ReIDDataset(root: root + "/all.tsv", layout: .list)) {
            XCTAssert("\($0)".contains("is listed again (first at \(root)/all.tsv:3)"), "\($0)")
        }
    }

    func testCUHK03PNGsAndTheirFaults() throws {
        let (root, _) = try synth(.cuhk03, "pngs")
        let ds = try ReIDDataset(root: root, layout: .cuhk03)
        XCTAssert(ds.train.samples.allSatisfy { $0.path.hasSuffix(".png") && $0.path.contains("/detected/") })
        let victim = ds.gallery.samples[2].path
        let bytes = try Data(contentsOf: URL(fileURLWithPath: victim))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: victim))
        XCTAssertThrowsError(try RGBImage(file: victim)) {
            XCTAssert("\($0)".hasPrefix(victim + ": not a readable PNG"), "\($0)")
        }
        XCTAssertThrowsError(try ReIDDataset(root: root + "/detected", layout: .cuhk03)) {
            XCTAssert("\($0)".contains("data.cuhk03_images chooses"), "\($0)")
        }
    }

    func testDukeNamesAreNotMarketNames() throws {
        XCTAssertNotNil(try FolderLayout.parse("0005_c2_f0046985.jpg", after: "_f"))
        XCTAssertNil(try FolderLayout.parse("0002_c1s1_000451_03.jpg", after: "_f"))
        XCTAssertNotNil(try FolderLayout.parse("0002_c1s1_000451_03.jpg", after: "s"))
        let (root, _) = try synth(.market, "marketasduke")
        XCTAssertThrowsError(try ReIDDataset(root: root, layout: .duke)) {
            XCTAssert("\($0)".contains("does not start with <id>_c<camera>_f<frame>"), "\($0)")
        }
    }

    /// List files as Windows and spreadsheets write them, and text that is not a list.
    func testListFilesAsTheWorldWritesThem() throws {
        let (root, s) = try synth(.list, "crlf")
        for split in ["train", "query", "gallery"] {
            let f = root + "/\(split).csv"
            let text = try String(contentsOfFile: f, encoding: .utf8)
            // CRLF endings and a UTF-8 byte-order mark
            try (Data([0xEF, 0xBB, 0xBF]) + Data(text.replacingOccurrences(of: "\n", with: "\r\n").utf8)).write(
                to: URL(fileURLWithPath: f))
        }
        let ds = try ReIDDataset(root: root, layout: .list)
        XCTAssertEqual(ds.train.samples.count, s.train)
        XCTAssertEqual(ds.query.samples.count, s.query)
        let q = root + "/query.csv"
        let good = try Data(contentsOf: URL(fileURLWithPath: q))
        func expect(_ bytes: Data, _ fragment: String, line: UInt = #line) throws {
            try bytes.write(to: URL(fileURLWithPath: q))
            let t0 = Date()
            XCTAssertThrowsError(try ReIDDataset(root: root, layout: .list), line: line) {
                XCTAssert("\($0)".contains(fragment), "\($0)", line: line)
                XCTAssertLessThan("\($0)".utf8.count, 500, line: line)
            }
            XCTAssertLessThan(Date().timeIntervalSince(t0), 5, line: line)
        }
        try expect(Data("path,pid,pid,camid\r\n".utf8), "\(q):1: the column 'pid' is named twice")
        try expect(good + Data("images/query/a\0.jpg,3,1\n".utf8), "line \(s.query + 2): a NUL byte")
        try expect(
            good + Data(String(repeating: "x", count: 1 << 20).utf8), "line \(s.query + 2): longer than 16384 bytes")
        try expect(good + Data([0x66, 0xFF, 0xFE, 0x2C, 0x31, 0x2C, 0x31, 0x0A]), "line \(s.query + 2): not UTF-8 text")
        // MSMT17 lists with CRLF endings
        let (m, ms) = try synth(.msmt17, "msmt-crlf")
        for f in ["list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt"] {
            let text = try String(contentsOfFile: m + "/" + f, encoding: .utf8)
            try text.replacingOccurrences(of: "\n", with: "\r\n").write(
                toFile: m + "/" + f, atomically: true, encoding: .utf8)
        }
        XCTAssertEqual(try ReIDDataset(root: m, layout: .msmt17).query.samples.count, ms.query)
    }

    /// Special files named like images are refused by their kind, at once (a FIFO used to block for ever).
    func testFilesThatAreNotRegularFilesAreRefusedByKind() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("reid-special-\(getpid())").path
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir + "/x.jpg", withIntermediateDirectories: true)
        XCTAssertEqual(mkfifo(dir + "/fifo.jpg", 0o644), 0)
        let t0 = Date()
        XCTAssertThrowsError(try RGBImage.checkHeader(file: dir + "/fifo.jpg")) {
            XCTAssert("\($0)".contains("fifo.jpg: is a FIFO (named pipe), not a regular file"), "\($0)")
        }
        XCTAssertThrowsError(try RGBImage(file: dir + "/fifo.jpg")) {
            XCTAssert("\($0)".contains("is a FIFO"), "\($0)")
        }
        XCTAssertThrowsError(try RGBImage.checkHeader(file: dir + "/x.jpg")) {
            XCTAssert("\($0)".contains("x.jpg: is a directory, not a regular file"), "\($0)")
        }
        XCTAssertThrowsError(try RGBImage.checkHeader(file: "/dev/zero")) {
            XCTAssert("\($0)".contains("is a device"), "\($0)")
        }
        XCTAssertThrowsError(try InputFile.lines(dir + "/fifo.jpg")) {
            XCTAssert("\($0)".contains("is a FIFO"), "\($0)")
        }
        XCTAssertLessThan(Date().timeIntervalSince(t0), 5)
        let bad = checkImageHeaders([dir + "/fifo.jpg", dir + "/x.jpg"], threads: 2)
        XCTAssertEqual(bad.count, 2)
    }

    /// A file name whose bytes are not UTF-8 is refused naming it, not reported as unreadable.
    func testFileNamesThatAreNotUTF8AreRefusedWithThatReason() throws {
        let (root, _) = try synth(.market, "latin1")
        let name = Array("\(root)/bounding_box_train/0001_c1s1_00".utf8) + [0xE9] + Array(".jpg".utf8) + [0]
        let fd = name.withUnsafeBytes {
            open($0.baseAddress!.assumingMemoryBound(to: CChar.self), O_CREAT | O_WRONLY, 0o644)
        }
        XCTAssertGreaterThanOrEqual(fd, 0)
        close(fd)
        XCTAssertThrowsError(try ReIDDataset(root: root, layout: .market)) {
            XCTAssert("\($0)".contains("the file name is not UTF-8"), "\($0)")
        }
    }
}
