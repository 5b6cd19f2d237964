// Folder layouts: bounding_box_train/, query/, bounding_box_test/ (the
// gallery), one image per file, id and camera in the file name.
//   market  Market-1501: 0002_c1s1_000451_03.jpg  (<id>_c<camera>s<sequence>_<frame>_<box>)
//   duke    DukeMTMC-reID: 0005_c2_f0046985.jpg    (<id>_c<camera>_f<frame>)
//   cuhk03  CUHK03-NP (Zhong et al.'s new protocol): <root>/detected/ or
//           <root>/labeled/ (data.cuhk03_images), PNGs named 0001_c1_1.png
// Ids: -1 junk, 0 distractors (Market's gallery), others people. Camera
// numbers may have any number of digits (c12 is camera 12).
import Foundation

struct FolderLayout: LayoutReader {
    enum Kind { case market, duke, cuhk03 }
    let kind: Kind
    static let market = FolderLayout(kind: .market), duke = FolderLayout(kind: .duke),
        cuhk03 = FolderLayout(kind: .cuhk03)

    /// Parses `<id>_c<camera>` at the start of a file name: an id of up to 9 digits (or -1,
    /// junk) and a camera number of any length (`c12` is camera 12). Nil when the name does
    /// not have that form; an error (the reason, without the path) when it has it wrongly.
    static func parseIdCamera(_ name: String) throws -> (pid: Int, camera: Int)? {
        try parse(name, after: nil)
    }

    /// The same, then what must follow the camera: Market's `s<sequence>`, Duke's `_f<frame>`.
    static func parse(_ name: String, after suffix: String?) throws -> (pid: Int, camera: Int)? {
        let chars = Array(name.utf8)
        var i = 0
        let neg = chars.first == UInt8(ascii: "-")
        if neg { i += 1 }
        func digits() -> (value: Int, count: Int) {
            var v = 0, n = 0
            while i < chars.count, chars[i] >= 48, chars[i] <= 57 {
                if n < 18 { v = v * 10 + Int(chars[i] - 48) }
                i += 1
                n += 1
            }
            return (v, n)
        }
        let id = digits()
        guard id.count > 0, i + 1 < chars.count, chars[i] == UInt8(ascii: "_"), chars[i + 1] == UInt8(ascii: "c") else {
            return nil
        }
        i += 2
        let cam = digits()
        guard cam.count > 0 else { return nil }
        if let suffix {
            let rest = Array(suffix.utf8)
            guard chars.count >= i + rest.count + 1, Array(chars[i..<(i + rest.count)]) == rest,
                chars[i + rest.count] >= 48, chars[i + rest.count] <= 57
            else { return nil }
        }
        guard id.count <= 9 else { throw DataError("the id has \(id.count) digits; at most 9") }
        guard cam.count <= 9 else { throw DataError("the camera number has \(cam.count) digits; at most 9") }
        if neg && id.value != 1 { throw DataError("id -\(id.value): the only negative id is -1 (junk)") }
        return (neg ? -id.value : id.value, cam.value)
    }

    var pattern: String {
        switch kind {
        case .market: return "<id>_c<camera>s<sequence>_... (Market-1501, e.g. 0002_c1s1_000451_03.jpg)"
        case .duke: return "<id>_c<camera>_f<frame>... (DukeMTMC-reID, e.g. 0005_c2_f0046985.jpg)"
        case .cuhk03: return "<id>_c<camera>_... (CUHK03-NP, e.g. 0001_c1_1.png)"
        }
    }

    func base(_ root: String, _ options: DatasetOptions) -> String {
        kind == .cuhk03 ? (root as NSString).appendingPathComponent(options.cuhk03Images.rawValue) : root
    }

    func read(root: String, options: DatasetOptions) throws -> (train: Split, query: Split, gallery: Split) {
        let top = base(root, options)
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: top, isDirectory: &isDir), isDir.boolValue else {
            throw DataError(
                kind == .cuhk03
                    ? "\(top): missing; CUHK03-NP has labeled/ and detected/ folders (data.cuhk03_images chooses)"
                    : "\(top): data.root is not a folder")
        }
        let f = ReIDDataset.folders
        return (
            try load("train", f.train, top, training: true), try load("query", f.query, top, training: false),
            try load("gallery", f.gallery, top, training: false)
        )
    }

    func load(_ name: String, _ folder: String, _ top: String, training: Bool) throws -> Split {
        let dir = (top as NSString).appendingPathComponent(folder)
        var d: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &d), d.boolValue else {
            let f = ReIDDataset.folders
            throw DataError(
                "\(dir): missing \(name) folder (expected the \(kind) layout: \(f.train)/, \(f.query)/, \(f.gallery)/)")
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter(ReIDDataset.isImage).sorted()
        var out: [Sample] = []
        for file in files {
            try ReIDDataset.checkUTF8Name(file, in: dir)
            let path = (dir as NSString).appendingPathComponent(ReIDDataset.printable(file))
            let parsed: (pid: Int, camera: Int)?
            do {
                switch kind {
                case .market: parsed = try Self.parse(file, after: "s") ?? Self.parseIdCamera(file)
                case .duke: parsed = try Self.parse(file, after: "_f")
                case .cuhk03: parsed = try Self.parseIdCamera(file)
                }
            } catch { throw DataError("\(path): \(error)") }
            guard let (pid, cam) = parsed else {
                throw DataError("\(path): file name does not start with \(pattern)")
            }
            if pid == -1 { continue } // junk
            if (training || name == "query") && pid == 0 { continue } // distractors: gallery only
            out.append(Sample(path: (dir as NSString).appendingPathComponent(file), pid: pid, camera: cam))
        }
        guard !out.isEmpty else { throw DataError("\(dir): no usable .jpg or .png images in the \(name) split") }
        return Split(name: name, folder: dir, samples: out, fileCount: files.count)
    }

    func official(root: String, options: DatasetOptions) -> (name: String, counts: OfficialCounts)? {
        let name = (root as NSString).lastPathComponent.lowercased()
        switch kind {
        case .market where name.contains("market-1501") || name.contains("market1501"):
            return (
                "the official Market-1501", OfficialCounts(train: 12_936, trainIds: 751, query: 3_368, gallery: 19_732)
            )
        case .duke where name.contains("dukemtmc"):
            return (
                "the official DukeMTMC-reID",
                OfficialCounts(train: 16_522, trainIds: 702, query: 2_228, gallery: 17_661)
            )
        case .cuhk03 where name.contains("cuhk03"):
            return options.cuhk03Images == .detected
                ? ("CUHK03-NP detected", OfficialCounts(train: 7_365, trainIds: 767, query: 1_400, gallery: 5_332))
                : ("CUHK03-NP labeled", OfficialCounts(train: 7_368, trainIds: 767, query: 1_400, gallery: 5_328))
        default: return nil
        }
    }
}
