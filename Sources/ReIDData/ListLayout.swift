// Any dataset, from list files: the documented way to bring one. data.root is
// either a folder holding train.csv, query.csv and gallery.csv (or .tsv), or
// one .csv/.tsv file with a split column. The first line names the columns:
//   path,pid,camid            (one file per split)
//   path,pid,camid,split      (one file; split is train, query or gallery)
// in any order; TSV when the file ends in .tsv or its header has a tab. Paths
// are relative to the list file's folder (or absolute); images are JPEG or PNG
// with no naming rules. pid -1 is junk (dropped), 0 a distractor (gallery only);
// camid is any integer (same-camera matches are removed as in Market's protocol).
import Foundation
import ReIDCore

struct ListLayout: LayoutReader {
    struct Row { let path: String, pid: Int, camid: Int, split: String?, line: Int }

    func read(root: String, options: DatasetOptions) throws -> (train: Split, query: Split, gallery: Split) {
        var isDir: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: root, isDirectory: &isDir)
        var rows: [String: (file: String, rows: [Row])] = [:]
        if isDir.boolValue {
            for split in ["train", "query", "gallery"] {
                let candidates = ["csv", "tsv"].map { (root as NSString).appendingPathComponent("\(split).\($0)") }
                guard let file = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
                    throw DataError(
                        "\(root): no \(split).csv or \(split).tsv (the list layout: one file per split, or data.root naming one file with a split column)"
                    )
                }
                rows[split] = (file, try Self.parse(file, needSplit: false))
            }
        } else {
            let all = try Self.parse(root, needSplit: true)
            for split in ["train", "query", "gallery"] { rows[split] = (root, all.filter { $0.split == split }) }
        }
        var seen: [String: String] = [:]
        func split(_ name: String, training: Bool) throws -> Split {
            let (file, list) = rows[name]!
            let folder = (file as NSString).deletingLastPathComponent
            var out: [Sample] = []
            for r in list {
                let path = r.path.hasPrefix("/") ? r.path : (folder as NSString).appendingPathComponent(r.path)
                if let first = seen[path] {
                    throw DataError("\(file):\(r.line): \(path) is listed again (first at \(first))")
                }
                seen[path] = "\(file):\(r.line)"
                guard FileManager.default.fileExists(atPath: path) else {
                    throw DataError("\(file):\(r.line): \(path) does not exist")
                }
                if r.pid == -1 || ((training || name == "query") && r.pid == 0) { continue }
                out.append(Sample(path: path, pid: r.pid, camera: r.camid))
            }
            return Split(name: name, folder: file, samples: out, fileCount: list.count)
        }
        return (
            try split("train", training: true), try split("query", training: false),
            try split("gallery", training: false)
        )
    }

    /// The rows of one list file; every fault names the file and line.
    static func parse(_ file: String, needSplit: Bool) throws -> [Row] {
        let lines: [(number: Int, text: String)]
        do { lines = try InputFile.lines(file, what: "a list file") } catch let e as InputFileError {
            throw DataError("\(e)")
        }
        return try parse(lines: lines, file: file, needSplit: needSplit)
    }

    /// The same from the file's lines; `file` names it in errors.
    static func parse(lines: [(number: Int, text: String)], file: String, needSplit: Bool) throws -> [Row] {
        guard let (_, header) = lines.first else { throw DataError("\(file): empty list file") }
        let tab = file.lowercased().hasSuffix(".tsv") || header.contains("\t")
        let sep: Character = tab ? "\t" : ","
        let names = header.split(separator: sep, omittingEmptySubsequences: false).map {
            $0.trimmingCharacters(in: .whitespaces).lowercased()
        }
        func column(_ n: String) throws -> Int {
            guard let i = names.firstIndex(of: n) else {
                throw DataError(
                    "\(file):1: the header must name the columns path, pid, camid\(needSplit ? ", split" : "") (\(tab ? "tab" : "comma")-separated); got '\(ReIDDataset.printable(header))'"
                )
            }
            return i
        }
        if let dup = names.enumerated().first(where: { !$0.element.isEmpty && names[..<$0.offset].contains($0.element) }
        ) {
            throw DataError(
                "\(file):1: the column '\(dup.element)' is named twice in the header '\(ReIDDataset.printable(header))'"
            )
        }
        let cp = try column("path"), ci = try column("pid"), cc = try column("camid")
        let cs = needSplit ? try column("split") : nil
        var rows: [Row] = []
        for (k, line) in lines.dropFirst() {
            if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            let f = line.split(separator: sep, omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            let where_ = "\(file):\(k)"
            guard f.count == names.count else {
                throw DataError(
                    "\(where_): \(f.count) fields, the header has \(names.count): '\(ReIDDataset.printable(line))'")
            }
            guard !f[cp].isEmpty else { throw DataError("\(where_): empty path") }
            guard let pid = Int(f[ci]), pid >= -1, pid < 1_000_000_000 else {
                throw DataError(
                    "\(where_): pid '\(f[ci])' is not -1 (junk), 0 (distractor) or a positive id of at most 9 digits")
            }
            guard let cam = Int(f[cc]) else { throw DataError("\(where_): camid '\(f[cc])' is not an integer") }
            var split: String?
            if let cs {
                split = f[cs].lowercased()
                guard ["train", "query", "gallery"].contains(split!) else {
                    throw DataError("\(where_): split '\(f[cs])' is not train, query or gallery")
                }
            }
            rows.append(Row(path: f[cp], pid: pid, camid: cam, split: split, line: k))
        }
        return rows
    }

    func official(root: String, options: DatasetOptions) -> (name: String, counts: OfficialCounts)? { nil }
}
