// Market-1501 and DukeMTMC-reID folder layouts: bounding_box_train/,
// query/, bounding_box_test/ (the gallery), file names beginning
// `<id>_c<camera>` (Market: 0002_c1s1_000451_03.jpg; Duke: 0005_c2_f0046985.jpg).
// Id -1 is junk and dropped everywhere; id 0 (distractors) stays in the gallery;
// training ids are relabelled 0..<classes in sorted order.
import Foundation

public struct DataError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

public enum Layout: String, CaseIterable, Codable { case market, duke }

public struct Sample: Equatable {
    public let path: String
    public let pid: Int          // original id (0 for distractors)
    public let camera: Int       // 1-based, as in the file name
    public var label: Int        // training label (0..<classes), -1 outside training
}

public struct Split {
    public let name: String, folder: String
    public var samples: [Sample]
    /// Image files in the folder, junk included.
    public let fileCount: Int
    public var ids: Int { Set(samples.map(\.pid)).count }
}

public struct ReIDDataset {
    public let root: String, layout: Layout
    public let train: Split, query: Split, gallery: Split
    public var classes: Int { train.ids }
    public var warnings: [String] = []

    public static let folders = (train: "bounding_box_train", query: "query", gallery: "bounding_box_test")

    /// Official sizes: training images, training ids, query images, gallery images (files, junk included).
    public static let official: [Layout: (Int, Int, Int, Int)] = [
        .market: (12_936, 751, 3_368, 19_732),
        .duke: (16_522, 702, 2_228, 17_661),
    ]

    /// Parses `<id>_c<camera>` at the start of a file name: an id of up to 9 digits (or -1,
    /// junk) and a camera number of any length (`c12` is camera 12). Nil when the name does
    /// not have that form; an error (the reason, without the path) when it has it wrongly.
    public static func parse(_ name: String) throws -> (pid: Int, camera: Int)? {
        let chars = Array(name.utf8)
        var i = 0
        let neg = chars.first == UInt8(ascii: "-")
        if neg { i += 1 }
        func digits() -> (value: Int, count: Int) {
            var v = 0, n = 0
            while i < chars.count, chars[i] >= 48, chars[i] <= 57 { if n < 18 { v = v * 10 + Int(chars[i] - 48) }; i += 1; n += 1 }
            return (v, n)
        }
        let id = digits()
        guard id.count > 0, i + 1 < chars.count, chars[i] == UInt8(ascii: "_"), chars[i + 1] == UInt8(ascii: "c") else { return nil }
        i += 2
        let cam = digits()
        guard cam.count > 0 else { return nil }
        guard id.count <= 9 else { throw DataError("the id has \(id.count) digits; at most 9") }
        guard cam.count <= 9 else { throw DataError("the camera number has \(cam.count) digits; at most 9") }
        if neg && id.value != 1 { throw DataError("id -\(id.value): the only negative id is -1 (junk)") }
        return (neg ? -id.value : id.value, cam.value)
    }

    /// A file name as it can be printed: invalid UTF-8 and control characters escaped.
    public static func printable(_ name: String) -> String {
        name.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F || $0 == "\u{FFFD}" ? "\\u{\(String($0.value, radix: 16))}" : String($0) }.joined()
    }

    /// Loads the three splits. Every fault names the path at fault.
    public init(root: String, layout: Layout) throws {
        self.root = root; self.layout = layout
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDir), isDir.boolValue else {
            throw DataError("\(root): data.root is not a folder")
        }
        func load(_ name: String, _ folder: String, training: Bool) throws -> Split {
            let dir = (root as NSString).appendingPathComponent(folder)
            var d: ObjCBool = false
            guard FileManager.default.fileExists(atPath: dir, isDirectory: &d), d.boolValue else {
                throw DataError("\(dir): missing \(name) folder (expected the \(layout.rawValue) layout: \(Self.folders.train)/, \(Self.folders.query)/, \(Self.folders.gallery)/)")
            }
            let files = try FileManager.default.contentsOfDirectory(atPath: dir)
                .filter { $0.lowercased().hasSuffix(".jpg") || $0.lowercased().hasSuffix(".jpeg") }.sorted()
            var out: [Sample] = []
            for f in files {
                let path = (dir as NSString).appendingPathComponent(Self.printable(f))
                let parsed: (pid: Int, camera: Int)?
                do { parsed = try Self.parse(f) } catch { throw DataError("\(path): \(error)") }
                guard let (pid, cam) = parsed else {
                    throw DataError("\(path): file name does not start with <id>_c<camera>")
                }
                if pid == -1 { continue }                        // junk
                if training && pid == 0 { continue }             // distractors never train
                if name == "query" && pid == 0 { continue }
                out.append(Sample(path: (dir as NSString).appendingPathComponent(f), pid: pid, camera: cam, label: -1))
            }
            guard !out.isEmpty else { throw DataError("\(dir): no usable .jpg images in the \(name) split") }
            return Split(name: name, folder: dir, samples: out, fileCount: files.count)
        }
        var tr = try load("train", Self.folders.train, training: true)
        let ids = Array(Set(tr.samples.map(\.pid))).sorted()
        let label = Dictionary(uniqueKeysWithValues: ids.enumerated().map { ($1, $0) })
        for i in tr.samples.indices { tr.samples[i].label = label[tr.samples[i].pid]! }
        train = tr
        query = try load("query", Self.folders.query, training: false)
        gallery = try load("gallery", Self.folders.gallery, training: false)
        checkOfficialCounts()
    }

    /// When the folder's name claims an official set (Market-1501..., DukeMTMC...), compare counts.
    mutating func checkOfficialCounts() {
        let name = (root as NSString).lastPathComponent.lowercased()
        let claims = (layout == .market && (name.contains("market-1501") || name.contains("market1501")))
            || (layout == .duke && name.contains("dukemtmc"))
        guard claims, let (ti, tid, q, g) = Self.official[layout] else { return }
        let got = (train.fileCount, train.ids, query.fileCount, gallery.fileCount)
        if got != (ti, tid, q, g) {
            warnings.append("\(root) looks like the official \(layout.rawValue) set but has \(got.0) training images of \(got.1) ids, "
                + "\(got.2) query and \(got.3) gallery images (official: \(ti) of \(tid), \(q), \(g)); continuing")
        }
    }
}
