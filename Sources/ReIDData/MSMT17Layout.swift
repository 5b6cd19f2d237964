// MSMT17 (Wei et al., CVPR 2018), V1 or V2 as distributed:
//   <root>/train/ and <root>/test/ (V2: mask_train_v2/, mask_test_v2/)
//   <root>/list_train.txt, list_val.txt, list_query.txt, list_gallery.txt
// Each list line is `<path relative to the image folder> <pid>`, e.g.
// `0000/0000_000_01_0303morning_0015_0.jpg 0`; the camera is the third `_`
// field of the file name (01..15). Training uses list_train and list_val
// together by default, as torchreid does (data.msmt17_merge_val). Ids are the
// lists' own: 0 is a person here (MSMT17 has no distractors or junk), and test
// ids are numbered apart from training ids. Evaluation uses the Market protocol
// (same-camera images of the query's id are removed from its gallery).
import Foundation
import ReIDCore

struct MSMT17Layout: LayoutReader {
    func folders(_ root: String) throws -> (train: String, test: String) {
        for (tr, te) in [("train", "test"), ("mask_train_v2", "mask_test_v2")] {
            let a = (root as NSString).appendingPathComponent(tr), b = (root as NSString).appendingPathComponent(te)
            if FileManager.default.fileExists(atPath: a) && FileManager.default.fileExists(atPath: b) { return (a, b) }
        }
        throw DataError("\(root): no train/ and test/ folders (MSMT17 V1) nor mask_train_v2/ and mask_test_v2/ (V2)")
    }

    func read(root: String, options: DatasetOptions) throws -> (train: Split, query: Split, gallery: Split) {
        let (trainDir, testDir) = try folders(root)
        func list(_ file: String, _ dir: String, _ name: String) throws -> [Sample] {
            let path = (root as NSString).appendingPathComponent(file)
            let lines: [(number: Int, text: String)]
            do { lines = try InputFile.lines(path, what: "an MSMT17 list file") } catch let e as InputFileError {
                throw DataError("\(e) (an MSMT17 list file)")
            }
            var out: [Sample] = [], seen: [String: Int] = [:]
            for (number, raw) in lines {
                let n = number - 1
                let line = raw.trimmingCharacters(in: .whitespacesAndNewlines)
                if line.isEmpty { continue }
                let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                guard fields.count == 2, let pid = Int(fields[1]), pid >= 0 else {
                    throw DataError(
                        "\(path):\(n + 1): expected `<image path> <id>`, got '\(ReIDDataset.printable(line))'")
                }
                let rel = String(fields[0])
                let parts = (rel as NSString).lastPathComponent.split(separator: "_")
                guard parts.count >= 3, let cam = Int(parts[2]) else {
                    throw DataError(
                        "\(path):\(n + 1): cannot read the camera from '\(ReIDDataset.printable(rel))' (the third _ field, e.g. 0000_000_01_...)"
                    )
                }
                if let first = seen[rel] {
                    throw DataError("\(path):\(n + 1): '\(rel)' is listed again (first on line \(first))")
                }
                seen[rel] = n + 1
                let image = (dir as NSString).appendingPathComponent(rel)
                guard FileManager.default.fileExists(atPath: image) else {
                    throw DataError("\(path):\(n + 1): \(image) does not exist")
                }
                out.append(Sample(path: image, pid: pid, camera: cam))
            }
            return out
        }
        var train = try list("list_train.txt", trainDir, "train")
        if options.msmt17MergeVal { train += try list("list_val.txt", trainDir, "val") }
        let query = try list("list_query.txt", testDir, "query"),
            gallery = try list("list_gallery.txt", testDir, "gallery")
        return (
            Split(name: "train", folder: trainDir, samples: train, fileCount: train.count),
            Split(name: "query", folder: testDir, samples: query, fileCount: query.count),
            Split(name: "gallery", folder: testDir, samples: gallery, fileCount: gallery.count)
        )
    }

    func official(root: String, options: DatasetOptions) -> (name: String, counts: OfficialCounts)? {
        guard (root as NSString).lastPathComponent.lowercased().contains("msmt17"), options.msmt17MergeVal else {
            return nil
        }
        return ("MSMT17", OfficialCounts(train: 32_621, trainIds: 1_041, query: 11_659, gallery: 82_161))
    }
}
