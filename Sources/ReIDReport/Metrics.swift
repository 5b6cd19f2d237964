// The records of a run folder's metrics.jsonl, one JSON object a line, as types shared by the
// writers (the trainer's RunOutputs, `evaluate --report`) and the readers (the report, the study,
// the tests). Keys are snake_case; fields a version did not write yet are optional, so older run
// folders still read. A non-finite number is written as the string "nan", "inf" or "-inf".
import Foundation

/// A logged window of training steps ("train").
public struct TrainRecord: Codable, Equatable, Sendable {
    public var kind = "train"
    /// 1-based epoch and step within it; optimizer steps over the run.
    public var epoch: Int, step: Int, globalStep: Int
    /// The epoch's mean loss so far, and the last step's.
    public var loss: Double, stepLoss: Double?
    /// Training accuracy of the epoch so far (mean over heads), learning rate.
    public var acc: Double, lr: Double
    public var imagesPerSecond: Double?
    /// The last step's wait for its batch.
    public var dataWaitS: Double?
    public var ranks: Int?
    /// Over the window, with several ranks: the exposed all-reduce, and the wait for the slowest rank.
    public var allreduceExposedS: Double?, rankWaitS: Double?
    /// The triplet loss's mean, and its anchors' mean hardest positive and negative distances.
    public var tripletLoss: Double?, tripletDAp: Double?, tripletDAn: Double?
    /// This rank's all-gather of the features for global mining, this step.
    public var featureAllgatherS: Double?

    public init(epoch: Int, step: Int, globalStep: Int, loss: Double, acc: Double, lr: Double) {
        self.epoch = epoch
        self.step = step
        self.globalStep = globalStep
        self.loss = loss
        self.acc = acc
        self.lr = lr
    }

    enum CodingKeys: String, CodingKey {
        case kind, epoch, step, loss, acc, lr, ranks
        case globalStep = "global_step"
        case stepLoss = "step_loss"
        case imagesPerSecond = "images_per_second"
        case dataWaitS = "data_wait_s"
        case allreduceExposedS = "allreduce_exposed_s"
        case rankWaitS = "rank_wait_s"
        case tripletLoss = "triplet_loss"
        case tripletDAp = "triplet_d_ap"
        case tripletDAn = "triplet_d_an"
        case featureAllgatherS = "feature_allgather_s"
    }
}

/// An evaluation ("eval").
public struct EvalRecord: Codable, Equatable, Sendable {
    public var kind = "eval"
    /// Epochs trained when it ran (0: an evaluation of a checkpoint on its own), and the global step.
    public var epoch: Int?, globalStep: Int
    public var rank1: Double, rank5: Double, rank10: Double, mAP: Double, mINP: Double
    public var seconds: Double?
    /// The CMC curve's first (at most) 50 ranks.
    public var cmc: [Double]?

    public init(
        epoch: Int?, globalStep: Int, rank1: Double, rank5: Double, rank10: Double, mAP: Double, mINP: Double,
        seconds: Double?, cmc: [Double]
    ) {
        self.epoch = epoch
        self.globalStep = globalStep
        self.rank1 = rank1
        self.rank5 = rank5
        self.rank10 = rank10
        self.mAP = mAP
        self.mINP = mINP
        self.seconds = seconds
        self.cmc = Array(cmc.prefix(50))
    }

    enum CodingKeys: String, CodingKey {
        case kind, epoch, rank1, rank5, rank10, mAP, mINP, seconds, cmc
        case globalStep = "global_step"
    }
}

/// A multi-rank run's account of its gradient all-reduce, at its end ("comm").
public struct CommRecord: Codable, Equatable, Sendable {
    public var kind = "comm"
    public var allreduceExposedS: Double, rankImbalanceS: Double, runS: Double
    public var ranks: Int?
    public var averaging: String?

    public init(allreduceExposedS: Double, rankImbalanceS: Double, runS: Double, ranks: Int, averaging: String) {
        self.allreduceExposedS = allreduceExposedS
        self.rankImbalanceS = rankImbalanceS
        self.runS = runS
        self.ranks = ranks
        self.averaging = averaging
    }

    enum CodingKeys: String, CodingKey {
        case kind, ranks, averaging
        case allreduceExposedS = "allreduce_exposed_s"
        case rankImbalanceS = "rank_imbalance_s"
        case runS = "run_s"
    }
}

/// One line of metrics.jsonl.
public enum MetricsRecord: Equatable, Sendable {
    case train(TrainRecord)
    case eval(EvalRecord)
    case comm(CommRecord)
    /// A kind this version does not know (written by a later one): kept out of the way.
    case other(kind: String)
}

public enum MetricsFile {
    public static let name = "metrics.jsonl"

    /// One record as a line (with its newline).
    public static func line<R: Encodable>(_ record: R) throws -> Data {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        enc.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try enc.encode(record) + Data("\n".utf8)
    }

    /// The records of `path`; a line that is not a record of its kind is an error naming the file,
    /// the line and the key.
    public static func read(_ path: String) throws -> [MetricsRecord] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ReportError("\(path): missing or unreadable")
        }
        return try parse(text, path: path)
    }

    public static func parse(_ text: String, path: String) throws -> [MetricsRecord] {
        let dec = JSONDecoder()
        dec.nonConformingFloatDecodingStrategy = .convertFromString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        struct Kind: Decodable { var kind: String? }
        var out: [MetricsRecord] = []
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
            let data = Data(line.utf8)
            func decode<T: Decodable>(_ type: T.Type) throws -> T {
                do { return try dec.decode(type, from: data) } catch {
                    throw ReportError("\(path):\(n + 1): \(Self.countProblem(data) ?? Self.describe(error))")
                }
            }
            switch try decode(Kind.self).kind {
            case "train": out.append(.train(try decode(TrainRecord.self)))
            case "eval": out.append(.eval(try decode(EvalRecord.self)))
            case "comm": out.append(.comm(try decode(CommRecord.self)))
            case let kind: out.append(.other(kind: kind ?? ""))
            }
        }
        return out
    }

    /// The keys that hold counts, and whether one holds a number no run reaches (1e300, 2.5, -1):
    /// Foundation's decoder reports those only as "not valid JSON".
    static let countKeys = ["epoch", "step", "global_step", "ranks"]
    static func countProblem(_ line: Data) -> String? {
        guard let obj = (try? JSONSerialization.jsonObject(with: line)) as? [String: Any] else { return nil }
        for k in countKeys {
            guard let n = obj[k] as? NSNumber, String(cString: n.objCType) != "c" else { continue }
            let v = n.doubleValue
            if !(v.isFinite && v == v.rounded() && v >= 0 && v <= 1e15) {
                return "'\(k)' is \(v), not a count a run reaches"
            }
        }
        return nil
    }

    /// A decoding error in words: the key and what was wrong with it.
    static func describe(_ error: Error) -> String {
        guard let e = error as? DecodingError else { return "\(error)" }
        func key(_ c: DecodingError.Context) -> String {
            c.codingPath.isEmpty ? "the line" : "'" + c.codingPath.map(\.stringValue).joined(separator: ".") + "'"
        }
        switch e {
        case .keyNotFound(let k, _): return "no '\(k.stringValue)'"
        case .typeMismatch(_, let c), .valueNotFound(_, let c): return "\(key(c)): \(c.debugDescription)"
        case .dataCorrupted(let c):
            return c.codingPath.isEmpty ? "not a JSON object" : "\(key(c)): \(c.debugDescription)"
        @unknown default: return "\(error)"
        }
    }

    /// Every "train", "eval" or "comm" record of a run folder (none when it has no metrics.jsonl).
    public static func records(runDir: String) -> [MetricsRecord] {
        (try? read((runDir as NSString).appendingPathComponent(name))) ?? []
    }
}

extension Array where Element == MetricsRecord {
    public var train: [TrainRecord] { compactMap { if case .train(let r) = $0 { r } else { nil } } }
    public var evals: [EvalRecord] { compactMap { if case .eval(let r) = $0 { r } else { nil } } }
    public var comm: [CommRecord] { compactMap { if case .comm(let r) = $0 { r } else { nil } } }
}
