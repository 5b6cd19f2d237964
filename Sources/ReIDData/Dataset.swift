// A re-identification dataset: three splits (training, query, gallery) of
// images with person ids and camera numbers, read by one of the layouts:
//   market, duke  Market-1501 / DukeMTMC-reID folders (FolderLayouts.swift)
//   cuhk03        CUHK03-NP, labeled/ or detected/ folders of PNGs (same file)
//   msmt17        MSMT17 V1/V2 with its list files (MSMT17Layout.swift)
//   list          CSV/TSV lists, the way to bring any dataset (ListLayout.swift)
// Id -1 is junk and dropped everywhere; where the layout has distractors (id
// 0 in Market's naming) they stay in the gallery only; training ids are
// relabelled 0..<classes in sorted order.
import Foundation

public struct DataError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

public enum Layout: String, CaseIterable, Codable { case market, duke, msmt17, cuhk03, list }

/// Layout-specific choices (configuration keys data.cuhk03_images, data.msmt17_merge_val).
public struct DatasetOptions: Equatable {
    public enum CUHK03Images: String, CaseIterable { case detected, labeled }
    public var cuhk03Images: CUHK03Images = .detected
    /// MSMT17: train on list_train plus list_val (torchreid's default), or list_train alone.
    public var msmt17MergeVal = true
    public init(cuhk03Images: CUHK03Images = .detected, msmt17MergeVal: Bool = true) {
        self.cuhk03Images = cuhk03Images
        self.msmt17MergeVal = msmt17MergeVal
    }
}

public struct Sample: Equatable {
    public let path: String
    public let pid: Int // original id (0 for distractors in layouts that have them)
    public let camera: Int // as in the file name or list (1-based in the public sets)
    public var label: Int // training label (0..<classes), -1 outside training
    public init(path: String, pid: Int, camera: Int, label: Int = -1) {
        self.path = path
        self.pid = pid
        self.camera = camera
        self.label = label
    }
}

public struct Split {
    public let name: String, folder: String
    public var samples: [Sample]
    /// Image files (or list entries) of the split, junk included.
    public let fileCount: Int
    public var ids: Int { Set(samples.map(\.pid)).count }
    public init(name: String, folder: String, samples: [Sample], fileCount: Int) {
        self.name = name
        self.folder = folder
        self.samples = samples
        self.fileCount = fileCount
    }
}

/// How a layout finds its three splits.
protocol LayoutReader {
    /// The splits with original ids (training not yet relabelled), junk dropped,
    /// distractors dropped from training and queries.
    func read(root: String, options: DatasetOptions) throws -> (train: Split, query: Split, gallery: Split)
    /// The official counts of the public set, and how to tell that a folder claims to be it.
    func official(root: String, options: DatasetOptions) -> (name: String, counts: OfficialCounts)?
}

/// Training images, training ids, query images, gallery images, as the dataset's authors give them.
public struct OfficialCounts: Equatable, CustomStringConvertible {
    public var train: Int, trainIds: Int, query: Int, gallery: Int
    public var description: String {
        "\(train) training images of \(trainIds) ids, \(query) query and \(gallery) gallery images"
    }
}

public struct ReIDDataset {
    public let root: String, layout: Layout, options: DatasetOptions
    public let train: Split, query: Split, gallery: Split
    public var classes: Int { train.ids }
    public var warnings: [String] = []

    public static let folders = (train: "bounding_box_train", query: "query", gallery: "bounding_box_test")

    static func reader(_ layout: Layout) -> LayoutReader {
        switch layout {
        case .market: return FolderLayout.market
        case .duke: return FolderLayout.duke
        case .cuhk03: return FolderLayout.cuhk03
        case .msmt17: return MSMT17Layout()
        case .list: return ListLayout()
        }
    }

    /// Loads the three splits. Every fault names the path (and line) at fault.
    public init(root: String, layout: Layout, options: DatasetOptions = DatasetOptions()) throws {
        self.root = root
        self.layout = layout
        self.options = options
        guard FileManager.default.fileExists(atPath: root) else { throw DataError("\(root): data.root does not exist") }
        let reader = Self.reader(layout)
        var (tr, q, g) = try reader.read(root: root, options: options)
        for s in [tr, q, g] where s.samples.isEmpty {
            throw DataError("\(s.folder): no usable images in the \(s.name) split")
        }
        let ids = Array(Set(tr.samples.map(\.pid))).sorted()
        let label = Dictionary(uniqueKeysWithValues: ids.enumerated().map { ($1, $0) })
        for i in tr.samples.indices { tr.samples[i].label = label[tr.samples[i].pid]! }
        train = tr
        query = q
        gallery = g
        if let (name, want) = reader.official(root: root, options: options) {
            let got = OfficialCounts(
                train: train.fileCount, trainIds: train.ids, query: query.fileCount, gallery: gallery.fileCount)
            if got != want {
                warnings.append("\(root) looks like \(name) but has \(got) (official: \(want)); continuing")
            }
        }
        // Identities shared by training and test (a leak) are counted, not fatal: MSMT17 numbers
        // its test ids apart from its training ids, so there the overlap is meaningless.
        if layout != .msmt17 {
            let shared = Set(train.samples.map(\.pid)).intersection(
                query.samples.map(\.pid) + gallery.samples.map(\.pid))
            if !shared.isEmpty {
                warnings.append(
                    "\(shared.count) identit\(shared.count == 1 ? "y appears" : "ies appear") in both the training and the test splits "
                        + "(first: \(shared.sorted().prefix(3).map(String.init).joined(separator: ", "))): test results would be optimistic"
                )
            }
        }
    }

    /// A file name as it can be printed: invalid UTF-8 and control characters escaped.
    public static func printable(_ name: String) -> String {
        name.unicodeScalars.map {
            $0.value < 0x20 || $0.value == 0x7F || $0 == "\u{FFFD}" ? "\\u{\(String($0.value, radix: 16))}" : String($0)
        }.joined()
    }

    /// Refuses a file name listed from `folder` whose bytes were not UTF-8: they reach Swift as
    /// U+FFFD, which names no file, so the file would later be reported as unreadable.
    public static func checkUTF8Name(_ name: String, in folder: String) throws {
        guard name.unicodeScalars.contains("\u{FFFD}") else { return }
        let path = (folder as NSString).appendingPathComponent(printable(name))
        throw DataError("\(path): the file name is not UTF-8 (\\u{fffd} marks the bytes that are not); rename it")
    }

    /// Image files this reader decodes, by extension.
    public static func isImage(_ name: String) -> Bool {
        let l = name.lowercased()
        return l.hasSuffix(".jpg") || l.hasSuffix(".jpeg") || l.hasSuffix(".png")
    }
}

extension ReIDDataset {
    /// Market's `<id>_c<camera>` parse (FolderLayout.market), kept under its old name.
    public static func parse(_ name: String) throws -> (pid: Int, camera: Int)? { try FolderLayout.parseIdCamera(name) }
}
