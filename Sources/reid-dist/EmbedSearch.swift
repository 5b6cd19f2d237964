// `reid-dist embed` (features of any folder or list of images) and
// `reid-dist search` (the top-k gallery entries of each query, or of one new image).
import ArgumentParser
import Foundation
import ReIDCore
import ReIDData
import ReIDDist
import ReIDEval
import ReIDImage

/// Image files under a folder (recursive) or named by a list file (one path a line,
/// relative to the list's folder), in a stable order.
func imagePaths(_ source: String) throws -> [String] {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: source, isDirectory: &isDir) else {
        throw DataError("\(source): no such folder or list file")
    }
    if isDir.boolValue {
        guard let e = FileManager.default.enumerator(atPath: source) else {
            throw DataError("\(source): cannot list the folder")
        }
        var out: [String] = []
        while let rel = e.nextObject() as? String {
            guard ReIDDataset.isImage(rel) else { continue }
            try ReIDDataset.checkUTF8Name(rel, in: source)
            out.append((source as NSString).appendingPathComponent(rel))
        }
        return out.sorted()
    }
    let lines: [(number: Int, text: String)]
    do { lines = try InputFile.lines(source, what: "a list of image paths") } catch let e as InputFileError {
        throw DataError("\(e)")
    }
    let folder = (source as NSString).deletingLastPathComponent
    return lines.map { $0.text.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
        .map { $0.hasPrefix("/") ? $0 : (folder as NSString).appendingPathComponent($0) }
}

/// A progress line with rate and ETA, rewritten in place on a terminal.
struct ProgressLine {
    let total: Int, what: String, start = Profile.now()
    let tty = isatty(1) != 0
    var last = 0.0
    mutating func update(_ done: Int) {
        let now = Profile.now()
        guard done == total || now - last > (tty ? 0.2 : 5) else { return }
        last = now
        let rate = Double(done) / max(now - start, 1e-9), eta = Double(total - done) / max(rate, 1e-9)
        let line = String(
            format: "%@ %d/%d (%.0f%%), %.1f images/s, ETA %@", what, done, total,
            Double(done) / Double(max(total, 1)) * 100, rate, formatDuration(eta))
        if tty { print("\r" + line, terminator: done == total ? "\n" : "") } else { print(line) }
        fflush(stdout)
    }
}

struct Embed: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the features of any folder (recursive) or list of JPEG/PNG images to a feature file.",
        discussion: """
            No naming rules: ids and cameras are read from names that follow the Market/Duke form
            (<id>_c<camera>...), else -1. Paths go into the file's metadata, for `reid-dist search`.
            Under mpirun the images are dealt to the ranks in batches, as cluster evaluation does.
            """)
    @OptionGroup var options: ModelConfigOptions
    @Option(help: "Checkpoint folder, run folder, or model.safetensors.") var checkpoint: String
    @Option(help: "A folder of images (searched recursively) or a text file listing image paths.") var images: String
    @Option(help: "Output feature file (.safetensors).") var out: String
    @Option(parsing: .unconditional, help: "Images per batch.") var batch: Int?
    @Flag(
        inversion: .prefixedNo,
        help: "Average each feature with its mirror image's (default: as the model was evaluated).") var flip: Bool?
    @Flag(help: "Skip unreadable images (counted) instead of stopping at the first.") var skipBadImages = false

    func validate() throws { if let b = batch, b < 1 { throw ValidationError("--batch must be at least 1, got \(b)") } }

    func run() throws { try withCommunicator(embed) }

    func embed(_ comm: Communicator) throws {
        try checkOutputFolder(out, "--out")
        let loaded = try loadModel(options, checkpoint: checkpoint)
        let c = loaded.config
        let watchdog = heartbeatWatch("the feature extraction (embed)", c, comm)
        defer { watchdog?.close() }
        let threads = c.train.threadsPerRank(ranksOnNode: comm.localSize)
        useThreads(threads, for: loaded.model)
        var paths = try imagePaths(images)
        guard !paths.isEmpty else { throw DataError("\(images): no .jpg, .jpeg or .png images") }
        // Headers first (in parallel): a damaged file is named before any work, or skipped and counted.
        let bad = checkImageHeaders(paths, threads: max(2, threads), maxPixels: c.data.maxPixels)
        if !bad.isEmpty {
            guard skipBadImages else {
                throw DataError(
                    "\(bad[0].error)"
                        + (bad.count > 1
                            ? " (and \(bad.count - 1) more unreadable images; --skip-bad-images skips them)" : ""))
            }
            let skip = Set(bad.map(\.path))
            paths = paths.filter { !skip.contains($0) }
            guard !paths.isEmpty else {
                throw DataError(
                    "\(images): none of its \(bad.count) image(s) is readable (first: \(bad[0].error)); nothing written"
                )
            }
            if comm.isRoot { print("skipped \(bad.count) unreadable image(s), first: \(bad[0].error)") }
        }
        let samples = paths.map { p -> Sample in
            let parsed = (try? ReIDDataset.parse((p as NSString).lastPathComponent)) ?? nil
            return Sample(path: p, pid: parsed?.pid ?? -1, camera: parsed?.camera ?? -1)
        }
        let split = Split(name: "embed", folder: images, samples: samples, fileCount: samples.count)
        if comm.isRoot {
            let used = flip ?? c.eval.flip
            print(
                "features \(used ? "flip-averaged" : "not flip-averaged") (\(flip == nil ? "the model's eval.flip" : used ? "--flip" : "--no-flip"))"
            )
        }
        var progress = ProgressLine(total: samples.count, what: "embedding")
        let t0 = Profile.now()
        let f = try extractFeatures(
            model: loaded.model, split: split, height: c.data.height, width: c.data.width,
            batchSize: batch ?? c.eval.batchSize, flip: flip ?? c.eval.flip, skipBadImages: skipBadImages,
            maxPixels: c.data.maxPixels, comm: comm,
            producer: "reid-dist embed \(loaded.file)",
            progress: comm.isRoot
                ? { done, total in progress.update(min(samples.count, done * samples.count / max(total, 1))) } : nil)
        if comm.isRoot { progress.update(samples.count) }
        guard let f else {
            try comm.barrier()
            return
        }
        if f.count < samples.count {
            print("skipped \(samples.count - f.count) more image(s) whose header read but whose data did not decode")
        }
        guard f.count > 0 else { throw DataError("\(images): no image decoded; nothing written") }
        try f.write(to: out, producer: "reid-dist embed \(loaded.file)")
        print(
            String(
                format: "wrote %d x %d features to %@ (%.1f s, %.1f images/s%@)", f.count, f.dim, out,
                Profile.now() - t0,
                Double(f.count) / max(Profile.now() - t0, 1e-9), comm.size > 1 ? ", \(comm.size) ranks" : ""))
        try comm.barrier()
    }
}

struct Search: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "The top-k gallery entries of each query (feature files from embed, extract or evaluate), or of one new image.",
        discussion: """
            Queries are processed in blocks, so memory stays near (block x gallery) floats. Output:
            a table on the terminal, or --json / --csv files; --visualize draws each query beside
            its top-k.
            """)
    @Option(help: "Query feature file.") var query: String?
    @Option(help: "Instead of --query: one image, embedded with --checkpoint.") var image: String?
    @Option(help: "With --image: the model (checkpoint folder, run folder or model.safetensors).") var checkpoint:
        String?
    @Option(help: "Gallery feature file.") var gallery: String
    @Option(parsing: .unconditional, help: "Gallery entries per query.") var topk = 10
    @Option(help: "Distance: cosine (1 - cos) or euclidean (squared).") var metric: Metric = .cosine
    @Flag(help: "k-reciprocal re-ranking of the distances (needs whole feature files on both sides).") var rerank =
        false
    @Option(help: "Write the results as JSON to this file.") var json: String?
    @Option(help: "Write the results as CSV (query,rank,gallery,distance) to this file.") var csv: String?
    @Option(help: "Draw each query beside its top-k into this folder.") var visualize: String?
    @Option(parsing: .unconditional, help: "Queries per distance block.") var block = 512

    func validate() throws {
        guard (query == nil) != (image == nil) else {
            throw ValidationError("give --query FILE or --image PATH (with --checkpoint)")
        }
        if image != nil && checkpoint == nil {
            throw ValidationError("--image needs --checkpoint, the model to embed it with")
        }
        guard topk >= 1 else { throw ValidationError("--topk must be at least 1, got \(topk)") }
        guard block >= 1 else { throw ValidationError("--block must be at least 1, got \(block)") }
    }

    func run() throws {
        let threads = ProcessInfo.processInfo.activeProcessorCount
        setBLASThreads(threads)
        let g = try FeatureSet(path: gallery)
        let q: FeatureSet
        if let image, let checkpoint {
            let loaded = try LoadedModel.load(checkpoint: checkpoint, config: nil, overrides: [])
            useThreads(threads, for: loaded.model)
            let split = Split(
                name: "image", folder: image, samples: [Sample(path: image, pid: -1, camera: -1)], fileCount: 1)
            q = try extractFeatures(
                model: loaded.model, split: split, height: loaded.config.data.height, width: loaded.config.data.width,
                batchSize: 1, flip: loaded.config.eval.flip, maxPixels: loaded.config.data.maxPixels,
                producer: "reid-dist search")
        } else {
            q = try FeatureSet(path: query!)
        }
        let t0 = Profile.now()
        var hits: [[SearchHit]]
        if rerank {
            let rr = try Reranker(query: q, gallery: g, metric: metric, threads: threads)
            hits = try searchTopK(
                query: q, gallery: g, metric: metric, k: topk, blockRows: block, threads: threads
            ) { q0, n, out in
                rr.distances(q0: q0, rows: n, into: out)
            }
        } else {
            hits = try searchTopK(query: q, gallery: g, metric: metric, k: topk, blockRows: block, threads: threads)
        }
        let sec = Profile.now() - t0
        func name(_ set: FeatureSet, _ i: Int) -> String { i < set.paths.count ? set.paths[i] : "#\(i)" }
        if json == nil && csv == nil {
            for (i, row) in hits.enumerated().prefix(50) {
                print(name(q, i))
                for (r, h) in row.enumerated() {
                    print(String(format: "  %3d. %.4f  %@", r + 1, max(0, h.distance), name(g, h.index)))
                }
            }
            if hits.count > 50 { print("... \(hits.count - 50) more queries (use --json or --csv)") }
        }
        if let json {
            let rows: [[String: Any]] = hits.enumerated().map { i, row in
                [
                    "query": name(q, i),
                    "results": row.map {
                        [
                            "gallery": name(g, $0.index), "distance": Double($0.distance),
                            "pid": g.pids[$0.index], "camid": g.camids[$0.index]
                        ] as [String: Any]
                    }
                ]
            }
            try writeAtomically(
                try JSONSerialization.data(withJSONObject: rows, options: [.prettyPrinted, .sortedKeys]), to: json)
        }
        if let csv {
            func field(_ s: String) -> String {
                s.contains(",") || s.contains("\"") ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
            }
            var text = "query,rank,gallery,distance\n"
            for (i, row) in hits.enumerated() {
                for (r, h) in row.enumerated() {
                    text += "\(field(name(q, i))),\(r + 1),\(field(name(g, h.index))),\(h.distance)\n"
                }
            }
            try writeAtomically(Data(text.utf8), to: csv)
        }
        if let dir = visualize {
            var pics = RankedListPictures()
            pics.topK = min(topk, 20)
            let files = try pics.writeSearch(query: q, gallery: g, hits: hits.map { $0.map(\.index) }, to: dir)
            print("wrote \(files.count) pictures to \(dir)")
        }
        FileHandle.standardError.write(
            Data(
                String(
                    format: "searched %d queries x %d gallery (D=%d) in %.2f s; peak memory %.0f MB\n",
                    q.count, g.count, g.dim, sec, peakRSSMB()
                ).utf8))
    }
}
