// What `bench --json` writes, as types: the run's settings, sgemm, per-stage times, each case's
// training step, the thread scaling and the PyTorch comparison. The keys are the snake_case ones
// the JSON always had (MPITests reads them back and checks them against the printed figures).
import Foundation

struct BenchReport: Codable, Equatable {
    var openblasCore: String, openblasCoretype: String, threads: Int
    var convAlgorithm: String, winogradFusion: String
    var engineVectorPath: String, stemKernel: String, winogradTransforms: String, winograd4Transforms: String
    var sgemmGflops: Double
    /// Per case: each stage's best forward and backward time.
    var stages: [String: [StageTime]]?
    var trainStep: [StepFigures] = []
    var scaling: [ScalingRow]?
    var peakRssMb: Double = 0
    var torch: TorchComparison?

    struct StageTime: Codable, Equatable {
        var stage: String, forwardMs: Double, backwardMs: Double
        enum CodingKeys: String, CodingKey {
            case stage
            case forwardMs = "forward_ms"
            case backwardMs = "backward_ms"
        }
    }

    /// One case's median training step; with several ranks, the all-reduce's account.
    struct StepFigures: Codable, Equatable {
        var caseName: String, batch: Int, ranks: Int, msPerStep: Double, imagesPerSecond: Double
        var allreduceWaitFraction: Double, allreduceBlockingMs: Double, allreduceInFlightMs: Double
        var allreduceExposedMs: Double, allreduceHiddenFraction: Double, rankImbalanceMs: Double
        /// Share of the step's time per part: gemm, im2col (and transforms), batchnorm, pool, other.
        var timeFraction: [String: Double]
        enum CodingKeys: String, CodingKey {
            case batch, ranks
            case caseName = "case"
            case msPerStep = "ms_per_step"
            case imagesPerSecond = "images_per_second"
            case allreduceWaitFraction = "allreduce_wait_fraction"
            case allreduceBlockingMs = "allreduce_blocking_ms"
            case allreduceInFlightMs = "allreduce_in_flight_ms"
            case allreduceExposedMs = "allreduce_exposed_ms"
            case allreduceHiddenFraction = "allreduce_hidden_fraction"
            case rankImbalanceMs = "rank_imbalance_ms"
            case timeFraction = "time_fraction"
        }
    }

    struct ScalingRow: Codable, Equatable {
        var caseName: String, oneThreadImagesPerSecond: Double, threads: Int, imagesPerSecond: Double
        var efficiency: Double
        enum CodingKeys: String, CodingKey {
            case threads, efficiency
            case caseName = "case"
            case oneThreadImagesPerSecond = "one_thread_images_per_second"
            case imagesPerSecond = "images_per_second"
        }
    }

    /// Cluster/python/torch_baseline.py's rows (each memory layout) and the ratios to its best.
    struct TorchComparison: Codable, Equatable {
        var rows: [TorchRow]?, ratios: [Ratio]?, error: String?
    }

    struct TorchRow: Codable, Equatable {
        var caseName: String, layout: String?, precision: String?, batch: Int?, msPerStep: Double?
        var imagesPerSecond: Double
        enum CodingKeys: String, CodingKey {
            case layout, precision, batch
            case caseName = "case"
            case msPerStep = "ms_per_step"
            case imagesPerSecond = "images_per_second"
        }
    }

    struct Ratio: Codable, Equatable {
        var caseName: String, reidDist: Double, torch: Double, ratio: Double
        enum CodingKeys: String, CodingKey {
            case torch, ratio
            case caseName = "case"
            case reidDist = "reid_dist"
        }
    }

    enum CodingKeys: String, CodingKey {
        case threads, stages, scaling, torch
        case openblasCore = "openblas_core"
        case openblasCoretype = "OPENBLAS_CORETYPE"
        case convAlgorithm = "conv_algorithm"
        case winogradFusion = "winograd_fusion"
        case engineVectorPath = "engine_vector_path"
        case stemKernel = "stem_kernel"
        case winogradTransforms = "winograd_transforms"
        case winograd4Transforms = "winograd4_transforms"
        case sgemmGflops = "sgemm_gflops"
        case trainStep = "train_step"
        case peakRssMb = "peak_rss_mb"
    }

    func json() throws -> Data {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try enc.encode(self)
    }
}
