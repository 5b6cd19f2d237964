// swift-tools-version:5.10
// reid-dist: data-parallel person re-identification training on CPU clusters.
//
// Targets, arrows pointing down (the README's "How the code is organised"):
//   reid-dist (executable)  -> ReIDDist, ReIDEval, ReIDData, ReIDCore, ArgumentParser (wiring only)
//   ReIDDist                -> the trainer, configs (Yams), checkpoints, communicators; ReIDData, ReIDEval, ReIDCore
//   CMPIShim (C)            -> CMPI (Open MPI via pkg-config `ompi`): the only code that includes mpi.h
//   ReIDData                -> datasets, augmentation, samplers, synthetic data; ReIDImage, ReIDCore
//   ReIDEval                -> ReIDCore, ReIDImage
//   ReIDONNX                -> the inference graph as ONNX (SwiftProtobuf, generated onnx.pb.swift); ReIDCore
//   ReIDTorch               -> torchvision .pth state dicts, no Python (ZIPFoundation, restricted unpickler); ReIDCore
//   ReIDReport              -> the run report (HTML/SVG from a run folder); ReIDEval, ReIDImage, ReIDCore
//   ReIDImage               -> CJPEG (libjpeg-turbo, errors caught in C), CPNG (libpng's simplified API)
//   ReIDCore                -> CBLAS (OpenBLAS's cblas.h), CKernels (C: direct 7x7 stem per vector path; AVX-512 Winograd transforms)
// The core knows nothing of MPI, files beyond safetensors, or the command line.
import PackageDescription

// Release builds keep Swift's checks (-O, whole module): an overflow or an index out of range
// traps instead of reading outside a buffer. Every target parses outside data somewhere
// (safetensors in the core, .pth, YAML, lists, images, feature files), and -Ounchecked bought
// nothing measurable in the engine (docs/performance.md, "Checked builds").
let fast: [SwiftSetting] = [.unsafeFlags(["-wmo"], .when(configuration: .release))]

let package = Package(
    name: "reid-dist",
    products: [
        .executable(name: "reid-dist", targets: ["reid-dist"]),
        .library(name: "ReIDCore", targets: ["ReIDCore"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.20")
    ],
    targets: [
        .systemLibrary(
            name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),
        .target(name: "CJPEG", linkerSettings: [.linkedLibrary("jpeg")]),
        .target(name: "CPNG", linkerSettings: [.linkedLibrary("png16")]),
        .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi", providers: [.apt(["libopenmpi-dev"])]),
        // -mf16c: float16 gradient conversions in hardware (every x86-64 of this fleet has F16C).
        .target(name: "CMPIShim", dependencies: ["CMPI"], cSettings: [.unsafeFlags(["-O2", "-mf16c"])]),
        // Kernels compiled for AVX-512, AVX2+FMA and portable C in one binary, chosen at run time.
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3"])]),
        .target(name: "ReIDCore", dependencies: ["CBLAS", "CKernels"], swiftSettings: fast),
        .target(name: "ReIDImage", dependencies: ["ReIDCore", "CJPEG", "CPNG"], swiftSettings: fast),
        .target(name: "ReIDEval", dependencies: ["ReIDCore", "ReIDImage"], swiftSettings: fast),
        .target(name: "ReIDData", dependencies: ["ReIDCore", "ReIDImage"], swiftSettings: fast),
        .target(name: "ReIDReport", dependencies: ["ReIDCore", "ReIDImage", "ReIDEval"], swiftSettings: fast),
        // ONNX export: the message types generated once from onnx.proto (Cluster/dev/gen-onnx-proto.sh).
        .target(
            name: "ReIDONNX", dependencies: ["ReIDCore", .product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        // torch.save files (zip and legacy) through a restricted unpickler that never runs code.
        .target(name: "ReIDTorch", dependencies: ["ReIDCore", "ZIPFoundation"], swiftSettings: fast),
        .target(
            name: "ReIDDist",
            dependencies: [
                "ReIDTorch", "ReIDCore", "ReIDImage", "ReIDData", "ReIDEval", "ReIDReport", "CMPIShim", "Yams"
            ], swiftSettings: fast),
        .executableTarget(
            name: "reid-dist",
            dependencies: [
                "ReIDCore", "ReIDImage", "ReIDEval", "ReIDData", "ReIDDist", "ReIDReport", "ReIDONNX",
                .product(name: "ArgumentParser", package: "swift-argument-parser")
            ],
            swiftSettings: fast),
        .testTarget(name: "ReIDCoreTests", dependencies: ["ReIDCore", "ReIDTorch"]),
        .testTarget(name: "ReIDEvalTests", dependencies: ["ReIDEval", "ReIDCore", "ReIDImage"]),
        .testTarget(name: "ReIDDataTests", dependencies: ["ReIDData", "ReIDCore", "ReIDImage"]),
        .testTarget(
            name: "ReIDDistTests",
            dependencies: ["ReIDDist", "ReIDONNX", "ReIDData", "ReIDCore", "ReIDEval", "ReIDImage", "ReIDReport"]),
        .testTarget(
            name: "ReIDReportTests", dependencies: ["ReIDReport", "ReIDDist", "ReIDData", "ReIDEval", "ReIDCore"]),
        .testTarget(name: "FuzzTests", dependencies: ["ReIDDist", "ReIDData", "ReIDCore", "ReIDImage", "ReIDTorch"])
    ]
)
