// How the engine computes, as one value: chosen once (from the configuration's `train.threads` and
// `model.conv_algorithm`, or from `bench`'s flags), held by the model's Workspace and read by every
// layer through it. Nothing in the core is a process-wide switch: two models in one process (or two
// tests running side by side) may compute differently, and a test builds the variant it compares.
//
// The tuning values below the public ones are the measured defaults of a decision already taken;
// they are options only so that tests reach each code path (a fused pass on a small layer, a
// transformed input kept or redone) without layers of production size.
import CKernels

public struct EngineOptions: Sendable, Equatable {
    /// Worker threads of the engine's own loops (channels, rows, tiles, products). OpenBLAS's own
    /// threads are set apart (`setBLASThreads`): they are the library's, not the engine's.
    public var threads: Int
    /// 3x3 stride-1 convolutions: `auto` (per layer shape), `gemm`, `winograd` or `winograd4`.
    public var convAlgorithm: ConvAlgorithm
    /// The highest vector path the C kernels may take; they take the processor's best when it is lower.
    public var kernelPath: KernelPath
    /// Which Winograd F(2x2) passes run block by block in cache (`Winograd.Fusion`).
    public var winogradFusion: Winograd.Fusion
    /// Bytes of column matrices and transformed inputs that convolutions may keep from forward for
    /// backward; past it, backward redoes the transform. 144 MB: with F(4x4), whose whole-batch
    /// passes keep the thin first layers' transformed inputs too, ResNet-50's peak at 256x128, batch
    /// 16, was 1837 MB at 224 MB, 1819 at 184 and 1786 at 144 (`reid-dist bench`, 2-core Zen 3;
    /// speed within the machine's noise, docs/performance.md).
    public var cacheBudget: Int

    /// Winograd GEMMs sum their dot products over channels in chunks of at most this many (`gemmChunked`).
    var winogradChunk = 128
    /// The fewest tiles in a block of a fused Winograd pass (`FusedBlocks`).
    var fusedMinTiles = 64
    /// A layer whose F(2x2) forward and weight gradient both run fused redoes its input's transform in
    /// backward, instead of keeping it from forward, when it would take more than this many bytes:
    /// past the last-level cache, writing V in forward and reading it back costs more than
    /// transforming x again (`reid-dist bench`, 2-core EPYC, 32 MB L3, forward + backward of layer1:
    /// ResNet-18, whose layers' V is 67 MB, 255-267 -> 237-242 ms; ResNet-18 w32, 8 MB, 23-24 -> 28 ms).
    var recomputeAbove = 16 << 20
    /// Layers with at most this many input channels (and no stride-1 3x3) run blocked (ConvBlocked.swift).
    var blockedMaxInputChannels = 4
    /// Output columns per block of a blocked layer (8,192 for the weight gradient measured the same).
    var blockColumns = 2048
    /// Whether the direct 7x7 convolution also runs on the portable path. Off: without AVX2 the blocked
    /// GEMM is faster (ResNet-18 w32's stem on an AVX-512 EPYC, forward + backward: 5.0 + 5.5 ms on
    /// AVX-512, 5.6 + 8.0 on AVX2+FMA, 11.6 + 11.9 portable; the blocked GEMM about 9 + 9).
    var directOnPortable = false

    public init(
        threads: Int = 1, convAlgorithm: ConvAlgorithm = .auto, kernelPath: KernelPath = .avx512,
        winogradFusion: Winograd.Fusion = .default, cacheBudget: Int = 144 << 20
    ) {
        self.threads = Swift.max(1, threads)
        self.convAlgorithm = convAlgorithm
        self.kernelPath = kernelPath
        self.winogradFusion = winogradFusion
        self.cacheBudget = cacheBudget
    }

    /// A copy with `change` applied: `options.with { $0.threads = 2 }`.
    public func with(_ change: (inout EngineOptions) -> Void) -> EngineOptions {
        var o = self
        change(&o)
        return o
    }

    /// The path the C kernels take: `kernelPath`, or the processor's best when that is lower.
    public var effectiveKernelPath: KernelPath { KernelPath(cValue: reid_kernels_usable_path(kernelPath.cValue)) }

    /// `kernelPath` as the C kernels' argument (each clamps it to the processor's best).
    var path: Int32 { kernelPath.cValue }

    /// Whether blocked 7x7 layers run as direct convolutions (for `bench` to print).
    public var directStemRuns: Bool { directOnPortable || effectiveKernelPath != .portable }
}

/// The C kernels' vector paths, in CKernels' order (best last).
public enum KernelPath: String, CaseIterable, Sendable {
    case portable, avx2, avx512

    /// The best path this processor runs.
    public static var best: KernelPath { KernelPath(cValue: reid_kernels_best_path()) }

    /// "AVX-512", "AVX2+FMA" or "portable C (4-wide vectors)".
    public var name: String { String(cString: reid_kernels_path_name(cValue)) }

    var cValue: Int32 {
        switch self {
        case .portable: Int32(REID_PATH_PORTABLE)
        case .avx2: Int32(REID_PATH_AVX2)
        case .avx512: Int32(REID_PATH_AVX512)
        }
    }

    init(cValue: Int32) {
        switch cValue {
        case Int32(REID_PATH_AVX512): self = .avx512
        case Int32(REID_PATH_AVX2): self = .avx2
        default: self = .portable
        }
    }
}
