// The table of every configuration key: its type, default, range and meaning. `reid-dist
// config-keys` prints it as docs/configuration.md's table (a test compares them); Config.swift
// reads and checks values against it.
import Foundation
import ReIDCore
import ReIDData
import ReIDEval

/// A configuration value.
public enum ConfigValue: Equatable, CustomStringConvertible {
    case int(Int)
    case double(Double)
    case bool(Bool)
    case string(String)
    case ints([Int])
    public var description: String {
        switch self {
        case .int(let v): return "\(v)"
        case .double(let v): return "\(v)"
        case .bool(let v): return "\(v)"
        case .string(let v): return v.isEmpty ? "\"\"" : v
        case .ints(let v): return "[\(v.map(String.init).joined(separator: ", "))]"
        }
    }
}

public struct ConfigKey {
    public enum Kind {
        case int, double, bool, string, ints
        case choice([String])
    }
    public let name: String, kind: Kind, defaultValue: ConfigValue, doc: String
    /// The values a numeric key accepts, checked when it is set (before anything is allocated
    /// from it); every double must also be finite.
    public var range: ClosedRange<Double>? = nil

    /// The range as the key table shows it.
    var rangeText: String? {
        guard let r = range else { return nil }
        func f(_ v: Double) -> String {
            if v == v.rounded(), abs(v) < 1e15 {
                var digits = String(Int(v)), out = ""
                guard v >= 10_000 else { return digits }
                while digits.count > 3 {
                    out = "," + digits.suffix(3) + out
                    digits.removeLast(3)
                }
                return digits + out
            }
            return "\(v)"
        }
        return "\(f(r.lowerBound)) to \(f(r.upperBound))"
    }
}

/// The table of keys in docs/configuration.md, as `reid-dist config-keys` prints it.
public var configKeysMarkdown: String {
    (["| key | default | meaning |", "| --- | --- | --- |"]
        + configKeys.map {
            "| `\($0.name)` | `\($0.defaultValue)` | \($0.doc)\($0.rangeText.map { " (\($0))" } ?? "") |"
        }).joined(separator: "\n")
}

/// Every key, its type, default and meaning (docs/configuration.md's table is printed from this).
public let configKeys: [ConfigKey] = [
    .init(
        name: "data.root", kind: .string, defaultValue: .string(""),
        doc:
            "the dataset: a folder (market, duke: bounding_box_train/, query/, bounding_box_test/; cuhk03: labeled/ and detected/; msmt17: train/, test/ and list_*.txt; list: train.csv, query.csv, gallery.csv) or, for list, one .csv/.tsv with a split column"
    ),
    .init(
        name: "data.layout", kind: .choice(Layout.allCases.map(\.rawValue)), defaultValue: .string("market"),
        doc:
            "market (0002_c1s1_000451_03.jpg), duke (0005_c2_f0046985.jpg), cuhk03 (CUHK03-NP PNGs), msmt17 (list files) or list (CSV/TSV: path,pid,camid); see docs/data.md"
    ),
    .init(
        name: "data.cuhk03_images", kind: .choice(["detected", "labeled"]), defaultValue: .string("detected"),
        doc: "CUHK03-NP: the detected or the hand-labeled boxes"),
    .init(
        name: "data.msmt17_merge_val", kind: .bool, defaultValue: .bool(true),
        doc: "MSMT17: train on list_train and list_val together (torchreid's default); false: list_train alone"),
    .init(name: "data.height", kind: .int, defaultValue: .int(256), doc: "input height in pixels", range: 32...8192),
    .init(name: "data.width", kind: .int, defaultValue: .int(128), doc: "input width in pixels", range: 16...8192),
    .init(
        name: "data.skip_bad_images", kind: .bool, defaultValue: .bool(false),
        doc:
            "skip unreadable training images with a counted warning instead of stopping (query and gallery images must all be readable)"
    ),
    .init(
        name: "data.check_images", kind: .bool, defaultValue: .bool(true),
        doc:
            "read every image's header before training (in parallel), so a damaged file stops the run at its start, not at the first evaluation"
    ),
    .init(
        name: "data.max_pixels", kind: .int, defaultValue: .int(40_000_000),
        doc: "largest image decoded, in pixels; a larger one is refused from its header before it takes memory",
        range: 1...1_000_000_000),
    .init(
        name: "augment.flip", kind: .double, defaultValue: .double(0.5), doc: "probability of a horizontal flip",
        range: 0...1),
    .init(
        name: "augment.pad", kind: .int, defaultValue: .int(10),
        doc: "zero padding before the random crop, pixels (0: off)", range: 0...1024),
    .init(
        name: "augment.erasing", kind: .double, defaultValue: .double(0.5),
        doc: "probability of random erasing (area 0.02-0.4, aspect 0.3-3.3)", range: 0...1),
    .init(
        name: "sampler.kind", kind: .choice(["identity", "sequential"]), defaultValue: .string("identity"),
        doc: "identity: P ids x K images per batch; sequential: file order, no shuffling"),
    .init(
        name: "sampler.ids_per_batch", kind: .int, defaultValue: .int(16),
        doc: "P, identities per batch (global over all ranks)", range: 1...65_536),
    .init(name: "sampler.instances", kind: .int, defaultValue: .int(4), doc: "K, images per identity", range: 1...4096),
    .init(name: "model.depth", kind: .choice(["18", "34", "50"]), defaultValue: .int(50), doc: "ResNet depth"),
    .init(
        name: "model.width", kind: .int, defaultValue: .int(64), doc: "stem width (64 is torchvision's)",
        range: 1...1024),
    .init(name: "model.last_stride", kind: .int, defaultValue: .int(1), doc: "stride of layer4: 1 or 2", range: 1...2),
    .init(
        name: "model.groups", kind: .int, defaultValue: .int(4),
        doc: "G, channel groups of the pooled feature (must divide its channels)", range: 1...8192),
    .init(
        name: "model.branches", kind: .int, defaultValue: .int(2), doc: "B, classifier branches per group",
        range: 1...64),
    .init(
        name: "model.conv_algorithm", kind: .choice(ConvAlgorithm.allCases.map(\.rawValue)),
        defaultValue: .string("auto"),
        doc:
            "3x3 stride-1 convolutions: winograd4 (F(4x4,3x3), 4x fewer multiplications), winograd (F(2x2,3x3), 2.25x fewer), gemm (im2col + GEMM), or auto (per layer shape: F(4x4) from 64 tiles); the weights mean the same either way"
    ),
    .init(
        name: "model.pretrained", kind: .string, defaultValue: .string(""),
        doc:
            "ImageNet ResNet weights with torchvision names: torchvision's own .pth (zip or legacy format, read without Python) or safetensors (e.g. timm's); empty: random init"
    ),
    .init(
        name: "model.init", kind: .string, defaultValue: .string(""),
        doc:
            "a whole state dict (safetensors, the reference's names) to start from, e.g. for exact comparisons with the PyTorch reference; empty: none"
    ),
    .init(
        name: "loss.kind", kind: .choice(LossSpec.Kind.allCases.map(\.rawValue)), defaultValue: .string("ce"),
        doc:
            "ce: the grouped multi-branch cross-entropy; triplet: batch-hard triplet on the pooled feature alone; ce+triplet: both, weighted (BNNeck: triplet before the group batch norms, cross-entropy after); the inference feature is the same for all"
    ),
    .init(
        name: "loss.label_smoothing", kind: .double, defaultValue: .double(0.1),
        doc: "label smoothing epsilon of each cross-entropy", range: 0...0.999),
    .init(
        name: "loss.ce_weight", kind: .double, defaultValue: .double(1),
        doc: "weight of the cross-entropy in ce+triplet", range: 0...1000),
    .init(
        name: "loss.triplet_weight", kind: .double, defaultValue: .double(1),
        doc: "weight of the triplet loss in ce+triplet", range: 0...1000),
    .init(
        name: "loss.triplet_margin", kind: .double, defaultValue: .double(0.3),
        doc: "margin of the triplet hinge max(0, margin + d_ap - d_an)", range: 0...100),
    .init(
        name: "loss.triplet_soft_margin", kind: .bool, defaultValue: .bool(false),
        doc: "soft margin log(1 + exp(d_ap - d_an)) instead of the hinge"),
    .init(
        name: "loss.triplet_distance", kind: .choice(TripletLoss.Distance.allCases.map(\.rawValue)),
        defaultValue: .string("euclidean"),
        doc: "distance between pooled features: euclidean or cosine (1 - cosine similarity)"),
    .init(
        name: "loss.triplet_scope", kind: .choice(LossSpec.Scope.allCases.map(\.rawValue)),
        defaultValue: .string("global"),
        doc:
            "where each anchor's hardest positive and negative are mined: global (the P x K images of all ranks, one all-gather per step) or local (its rank's own images)"
    ),
    .init(name: "optim.name", kind: .choice(["adam", "sgd"]), defaultValue: .string("adam"), doc: "optimizer"),
    .init(
        name: "optim.lr", kind: .double, defaultValue: .double(3.5e-4), doc: "base learning rate", range: 1e-12...100),
    .init(name: "optim.momentum", kind: .double, defaultValue: .double(0.9), doc: "SGD momentum", range: 0...0.999999),
    .init(name: "optim.nesterov", kind: .bool, defaultValue: .bool(false), doc: "SGD Nesterov momentum"),
    .init(
        name: "optim.weight_decay", kind: .double, defaultValue: .double(5e-4),
        doc: "L2 weight decay added to the gradient", range: 0...1),
    .init(name: "schedule.epochs", kind: .int, defaultValue: .int(120), doc: "training epochs", range: 1...1_000_000),
    .init(
        name: "schedule.kind", kind: .choice(["multistep", "cosine"]), defaultValue: .string("multistep"),
        doc: "decay after warm-up"),
    .init(
        name: "schedule.warmup_epochs", kind: .int, defaultValue: .int(10), doc: "linear warm-up epochs",
        range: 0...1_000_000),
    .init(
        name: "schedule.warmup_factor", kind: .double, defaultValue: .double(0.01),
        doc: "learning-rate factor at the start of warm-up", range: 1e-12...1),
    .init(
        name: "schedule.milestones", kind: .ints, defaultValue: .ints([40, 70]),
        doc: "epochs at which multistep multiplies by gamma", range: 1...1_000_000),
    .init(
        name: "schedule.gamma", kind: .double, defaultValue: .double(0.1), doc: "multistep factor", range: 1e-12...1e6),
    .init(
        name: "train.seed", kind: .int, defaultValue: .int(1), doc: "seed of initialisation, sampling and augmentation",
        range: 0...9_007_199_254_740_992),
    .init(
        name: "train.run_dir", kind: .string, defaultValue: .string("runs/default"),
        doc: "folder for metrics.jsonl, config.yaml and checkpoints/"),
    .init(
        name: "train.checkpoint_every", kind: .int, defaultValue: .int(10),
        doc: "epochs between checkpoints (the last epoch is always saved)", range: 1...1_000_000),
    .init(
        name: "train.checkpoint_minutes", kind: .double, defaultValue: .double(0),
        doc: "also checkpoint the exact step every this many minutes, mid-epoch included (0: only at epoch ends)",
        range: 0...1_000_000),
    .init(
        name: "train.keep_checkpoints", kind: .int, defaultValue: .int(3),
        doc: "most recent checkpoints kept (plus the best by mAP)", range: 1...10_000),
    .init(
        name: "train.eval_every", kind: .int, defaultValue: .int(40),
        doc: "epochs between evaluations (0: only at the end)", range: 0...1_000_000),
    .init(
        name: "train.log_every", kind: .int, defaultValue: .int(20), doc: "steps between progress lines",
        range: 1...1_000_000_000),
    .init(
        name: "train.bucket_mb", kind: .double, defaultValue: .double(25),
        doc:
            "gradient all-reduce bucket size in MB, at most a quarter of the gradients; overlapped with backward (0: one blocking all-reduce after backward)",
        range: 0...65_536),
    .init(
        name: "train.grad_dtype", kind: .choice(WireType.allCases.map(\.rawValue)), defaultValue: .string("float32"),
        doc:
            "gradients' type in the all-reduce between ranks: float32, or bfloat16 / float16 (half the bytes; summed in float, weights and optimizer stay float32)"
    ),
    .init(
        name: "train.trace", kind: .string, defaultValue: .string(""),
        doc:
            "write a Chrome trace-event JSON of the first 50 steps (forward, backward, each bucket's all-reduce, optimizer; per rank) to this file"
    ),
    .init(
        name: "train.check_replicas_every", kind: .int, defaultValue: .int(0),
        doc: "steps between cross-rank checksums of the parameters (0: only at start)", range: 0...1_000_000_000),
    .init(
        name: "train.step_timeout_s", kind: .double, defaultValue: .double(0),
        doc:
            "end the job when a training step (or the epoch-end batch-norm all-reduce) takes longer than this (a stalled rank, a dead link, a hung file system); 0: 30 x the median step, at least 120 s",
        range: 0...31_536_000),
    .init(
        name: "train.heartbeat_timeout_s", kind: .double, defaultValue: .double(60),
        doc:
            "under MPI, while a rank waits on the others (steps, epoch ends, evaluations, checkpoints) it pings them every third of this; a rank that answers none for this long (stopped, or its link is down) ends the job; 0: no pings",
        range: 0...31_536_000),
    .init(
        name: "train.threads", kind: .int, defaultValue: .int(0),
        doc:
            "BLAS and engine threads per rank (0: the cores this process may run on, shared among the ranks on its node)",
        range: 0...4096),
    .init(
        name: "eval.metric", kind: .choice(["cosine", "euclidean"]), defaultValue: .string("cosine"),
        doc: "distance for ranking"),
    .init(
        name: "eval.flip", kind: .bool, defaultValue: .bool(true), doc: "average each feature with its mirror image's"),
    .init(
        name: "eval.batch_size", kind: .int, defaultValue: .int(16),
        doc:
            "images per batch when extracting features (ResNet-50 256x128: 16 takes 1.4 GB, 64 takes 4.9 GB and is no faster)",
        range: 1...4096),
    .init(name: "eval.rerank", kind: .bool, defaultValue: .bool(false), doc: "k-reciprocal re-ranking in evaluation")
]
