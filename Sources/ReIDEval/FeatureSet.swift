// Feature files: safetensors with `features` F32 (N, D), `pids` I64 (N),
// `camids` I64 (N), and `__metadata__` holding at least `paths` (a JSON list
// of image paths) and `producer` (what made them). Anyone can write them
// with numpy + safetensors; reid-dist writes them from a model.
import Foundation
import ReIDCore

public struct FeatureFileError: Error, CustomStringConvertible {
    public let description: String
    init(_ path: String, _ reason: String) { description = "\(path): \(reason)" }
}

public final class FeatureSet {
    public let path: String
    public let count: Int, dim: Int
    public let features: Tensor // (N, D), row-major
    public let pids: [Int64], camids: [Int64]
    public let paths: [String]
    public let metadata: [String: String]

    public init(
        features: Tensor, pids: [Int64], camids: [Int64], paths: [String] = [],
        metadata: [String: String] = [:], path: String = "<memory>"
    ) {
        precondition(features.shape.count == 2 && pids.count == features.shape[0] && camids.count == pids.count)
        self.path = path
        self.features = features
        count = features.shape[0]
        dim = features.shape[1]
        self.pids = pids
        self.camids = camids
        self.paths = paths
        self.metadata = metadata
    }

    /// Loads and checks a feature file; every fault names the file.
    public convenience init(path: String) throws {
        let f: SafeTensorsFile
        do { f = try SafeTensorsFile(path: path) } catch let e as SafeTensorsError {
            throw FeatureFileError(e.path, e.reason)
        }
        func fail(_ r: String) -> FeatureFileError { FeatureFileError(path, r) }
        guard let fi = f.tensors["features"] else { throw fail("no 'features' tensor (expected F32 [N, D])") }
        guard fi.dtype == .F32 else { throw fail("'features' is \(fi.dtype.rawValue); it must be F32") }
        guard fi.shape.count == 2 else { throw fail("'features' has shape \(fi.shape); it must be [N, D]") }
        let n = fi.shape[0], d = fi.shape[1]
        guard n > 0 else { throw fail("'features' is empty (0 rows)") }
        guard d > 0 else { throw fail("'features' has 0 columns") }
        for key in ["pids", "camids"] {
            guard let t = f.tensors[key] else { throw fail("no '\(key)' tensor (expected I64 [\(n)])") }
            guard t.dtype == .I64 || t.dtype == .I32 else {
                throw fail("'\(key)' is \(t.dtype.rawValue); it must be I64")
            }
            guard t.shape == [n] else { throw fail("'\(key)' has shape \(t.shape) but 'features' has \(n) rows") }
        }
        let feats = Tensor([n, d], zero: false)
        do { try f.readFloats("features", into: feats.ptr) } catch let e as SafeTensorsError {
            throw FeatureFileError(e.path, e.reason)
        }
        for i in 0..<(n * d) where !feats.ptr[i].isFinite {
            throw fail("'features' row \(i / d) column \(i % d) is \(feats.ptr[i]) (NaN or infinite)")
        }
        var paths: [String] = []
        if let p = f.metadata["paths"] {
            guard let data = p.data(using: .utf8), let list = try? JSONSerialization.jsonObject(with: data) as? [String]
            else {
                throw fail("__metadata__ 'paths' is not a JSON list of strings")
            }
            guard list.count == n else {
                throw fail("__metadata__ 'paths' lists \(list.count) images but 'features' has \(n) rows")
            }
            paths = list
        }
        self.init(
            features: feats, pids: try f.int64s("pids"), camids: try f.int64s("camids"),
            paths: paths, metadata: f.metadata, path: path)
    }

    /// Writes this set as a feature file (atomically).
    public func write(to path: String, producer: String) throws {
        var meta = metadata
        meta["producer"] = producer
        if !paths.isEmpty {
            let data = try JSONSerialization.data(withJSONObject: paths)
            meta["paths"] = String(decoding: data, as: UTF8.self)
        }
        try SafeTensors.write(
            [
                TensorRecord(
                    "features", floats: features.buffer.withMemoryRebound(to: Float.self) { UnsafeBufferPointer($0) },
                    shape: [count, dim]),
                TensorRecord("pids", int64s: pids, shape: [count]),
                TensorRecord("camids", int64s: camids, shape: [count])
            ], metadata: meta, to: path)
    }

    /// This set without its junk images (id -1), which never take part in evaluation.
    public func droppingJunk() -> FeatureSet {
        let keep = (0..<count).filter { pids[$0] != -1 }
        if keep.count == count { return self }
        let f = Tensor([keep.count, dim], zero: false)
        for (r, i) in keep.enumerated() { (f.ptr + r * dim).update(from: features.ptr + i * dim, count: dim) }
        return FeatureSet(
            features: f, pids: keep.map { pids[$0] }, camids: keep.map { camids[$0] },
            paths: paths.isEmpty ? [] : keep.map { paths[$0] }, metadata: metadata, path: path)
    }
}
