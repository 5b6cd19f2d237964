// `reid-dist bench convs`: every 3x3 convolution shape of the benchmark
// networks, under each algorithm: time of forward and backward, effective
// GFLOP/s (FLOPs from the shapes: 3 passes x 2 x Cout x Cin x 9 x N x Ho x Wo),
// and the error of forward, input gradient and weight gradient against float64
// (largest |error| / largest |value|, on one image of the shape), beside
// PyTorch's own float32 error on the same kind of case when --torch-python is given.
import ArgumentParser
import Foundation
import ReIDCore
import ReIDDist

struct ConvShape: Hashable {
    let cin: Int, cout: Int, stride: Int, n: Int, h: Int, w: Int
    var name: String { "\(cin)->\(cout) s\(stride) \(n)x\(h)x\(w)" }
    var ho: Int { (h + 2 - 3) / stride + 1 }
    var wo: Int { (w + 2 - 3) / stride + 1 }
    /// Forward + input gradient + weight gradient.
    var flops: Double { 3 * 2 * Double(cout * cin * 9) * Double(n * ho * wo) }
}

/// The 3x3 convolutions of a ResNet (torchvision v1.5: the stride on the 3x3), by input shape.
func resnet3x3Shapes(depth: Int, width: Int, height: Int, imageWidth: Int, batch: Int, lastStride: Int = 1)
    -> [ConvShape]
{
    // from the network's one description (ResNet.graph): every 3x3 convolution with its input's size
    let shapes = ResNet.graph(depth: depth, width: width, lastStride: lastStride)
        .convolutions(height: height, width: imageWidth)
        .filter { $0.conv.kernel == 3 }
        .map { ConvShape(cin: $0.conv.cin, cout: $0.conv.cout, stride: $0.conv.stride, n: batch, h: $0.h, w: $0.w) }
    var seen = Set<ConvShape>()
    return shapes.filter { seen.insert($0).inserted }
}

/// Normal values that Python can make bit for bit (Cluster/python/conv_error_torch.py):
/// splitmix64 from `seed`, two uniforms (top 53 bits) per Box-Muller pair, the cosine branch,
/// times `scale`, rounded to float32.
func sharedNormals(_ p: UnsafeMutablePointer<Float>, _ n: Int, seed: UInt64, scale: Double = 1) {
    var state = seed
    func next() -> Double {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return (Double(z >> 11) + 0.5) / 9_007_199_254_740_992.0
    }
    for i in 0..<n {
        let u1 = next(), u2 = next()
        p[i] = Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2) * scale)
    }
}

struct BenchConvs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convs",
        abstract: "Per 3x3 convolution shape: time, GFLOP/s and float64 error of each algorithm.")

    @Option(parsing: .unconditional, help: "Threads for OpenBLAS and the engine's loops.") var threads =
        availableCores()
    @Option(parsing: .unconditional, help: "Timed repetitions per shape and algorithm (median).") var reps = 3
    @Option(help: "Cases (comma-separated): \(benchCases.map(\.name).joined(separator: ",")), or 'all'.") var cases =
        "all"
    @Flag(help: "Skip the float64 error columns.") var noErrors = false
    @Option(
        help: "A Python with torch: PyTorch's float32 error on the same shapes (Cluster/python/conv_error_torch.py).")
    var torchPython: String?
    @Option(help: "Write the table as JSON to this file.") var json: String?

    func validate() throws {
        guard threads >= 1, reps >= 1 else { throw ValidationError("--threads and --reps must be at least 1") }
        let known = Set(benchCases.map(\.name))
        for c in selected where !known.contains(c) {
            throw ValidationError("unknown case '\(c)'; known: \(known.sorted().joined(separator: ", "))")
        }
    }
    var selected: [String] { cases == "all" ? benchCases.map(\.name) : cases.split(separator: ",").map(String.init) }

    func run() throws {
        setBLASThreads(threads)
        let gf = measureSGEMM()
        print(
            String(format: "OpenBLAS %@ kernel, %d thread(s), sgemm 2048^3 %.1f GFLOP/s", blasCoreName(), threads, gf))
        var shapes: [(String, ConvShape)] = []
        for name in selected {
            let c = benchCases.first { $0.name == name }!
            for s in resnet3x3Shapes(
                depth: c.depth, width: c.width, height: c.height, imageWidth: c.imageWidth, batch: c.batch)
            where !shapes.contains(where: { $0.1 == s }) { shapes.append((name, s)) }
        }
        let torch = try torchPython.map { try torchErrors($0, shapes.map(\.1)) } ?? [:]
        print(
            "(fused: the Winograd passes run block by block in cache; their transforms count as GEMM time, not data%)")
        print(
            "case                shape                  algorithm fused       fwd ms   bwd ms  GFLOP/s  data%  err fwd   err dX    err dW"
                + (torch.isEmpty ? "" : "    torch fwd/dX/dW"))
        var rows: [[String: Any]] = []
        for (caseName, s) in shapes {
            for a in s.stride == 1 ? [ConvAlgorithm.gemm, .winograd, .winograd4] : [.gemm] {
                let options = EngineOptions(threads: threads, convAlgorithm: a)
                let (fwd, bwd, dataShare) = time(s, options)
                let err = noErrors ? [] : errors(s, options)
                let t = torch[s.name] ?? []
                let fused =
                    a == .winograd ? Winograd.fusedPasses(cin: s.cin, cout: s.cout, options.winogradFusion) : []
                print(
                    String(
                        format: "%-19@ %-22@ %-9@ %-10@ %7.2f %8.2f %8.1f %5.0f%%", caseName, s.name, a.rawValue,
                        fused.isEmpty ? "-" : fused.joined(separator: ","), fwd * 1e3, bwd * 1e3,
                        s.flops / (fwd + bwd) / 1e9, dataShare * 100)
                        + err.map { String(format: "  %.2e", $0) }.joined()
                        + (t.isEmpty ? "" : "  " + t.map { String(format: "%.1e", $0) }.joined(separator: "/")))
                rows.append([
                    "case": caseName, "cin": s.cin, "cout": s.cout, "stride": s.stride, "n": s.n, "h": s.h, "w": s.w,
                    "algorithm": a.rawValue, "fused_passes": fused, "forward_ms": fwd * 1e3, "backward_ms": bwd * 1e3,
                    "gflops": s.flops / (fwd + bwd) / 1e9, "data_movement_share": dataShare, "error_vs_float64": err,
                    "torch_error_vs_float64": t
                ])
            }
        }
        if let json {
            let report: [String: Any] = [
                "sgemm_gflops": gf, "threads": threads, "openblas_core": blasCoreName(), "convs": rows
            ]
            try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys]).write(
                to: URL(fileURLWithPath: json))
            print("wrote \(json)")
        }
    }

    /// Median forward and backward (dW and dX) seconds, and the share of im2col/transforms in both.
    func time(_ s: ConvShape, _ options: EngineOptions) -> (Double, Double, Double) {
        let arena = Arena()
        let conv = Conv2d(arena, "c", cin: s.cin, cout: s.cout, kernel: 3, stride: s.stride, pad: 1)
        arena.allocate(seed: 1)
        let ws = Workspace(options), profile = Profile()
        let x = Tensor([s.cin, s.n, s.h, s.w]), dy = Tensor([s.cout, s.n, s.ho, s.wo]),
            dx = Tensor([s.cin, s.n, s.h, s.w])
        for i in 0..<x.count { x.ptr[i] = Float(i % 17) * 0.1 - 0.8 }
        for i in 0..<dy.count { dy.ptr[i] = Float(i % 13) * 0.1 - 0.6 }
        var f: [Double] = [], b: [Double] = []
        ws.profile = profile
        for r in 0..<(reps + 1) {
            let t0 = Profile.now()
            conv.forward(x, ws)
            let t1 = Profile.now()
            conv.backward(dy.ptr, dX: dx.ptr, ws)
            let t2 = Profile.now()
            if r > 0 {
                f.append(t1 - t0)
                b.append(t2 - t1)
            } // the first is a warm-up
        }
        let p = profile.seconds
        let share =
            p[Profile.Part.im2col.rawValue]
            / max(p[Profile.Part.gemm.rawValue] + p[Profile.Part.im2col.rawValue], 1e-12)
        return (f.sorted()[f.count / 2], b.sorted()[b.count / 2], share)
    }

    /// Largest |error| / largest |value| of forward, dX, dW against float64, on one image.
    func errors(_ full: ConvShape, _ options: EngineOptions) -> [Double] {
        let s = ConvShape(cin: full.cin, cout: full.cout, stride: full.stride, n: 1, h: full.h, w: full.w)
        let arena = Arena()
        let conv = Conv2d(arena, "c", cin: s.cin, cout: s.cout, kernel: 3, stride: s.stride, pad: 1)
        arena.allocate(seed: 7)
        // The same values as Cluster/python/conv_error_torch.py makes (one image: CNHW = NCHW order).
        let x = Tensor([s.cin, 1, s.h, s.w]), dy = Tensor([s.cout, 1, s.ho, s.wo])
        sharedNormals(x.ptr, x.count, seed: 1)
        sharedNormals(dy.ptr, dy.count, seed: 2)
        sharedNormals(
            arena.value + conv.weight, s.cout * s.cin * 9, seed: 3, scale: (2.0 / Double(s.cout * 9)).squareRoot())
        let ws = Workspace(options)
        let y = conv.forward(x, ws).array
        let dx = Tensor(x.shape)
        conv.backward(dy.ptr, dX: dx.ptr, ws)
        let wt = (0..<(s.cout * s.cin * 9)).map { Double(arena.value[conv.weight + $0]) }
        let (y64, dx64, dw64) = direct64(s, x: x.array.map(Double.init), w: wt, dy: dy.array.map(Double.init))
        func rel(_ got: [Float], _ want: [Double]) -> Double {
            zip(got, want).map { abs(Double($0) - $1) }.max()! / max(want.map(abs).max()!, 1e-30)
        }
        return [rel(y, y64), rel(dx.array, dx64), rel((0..<wt.count).map { arena.grad[conv.weight + $0] }, dw64)]
    }

    /// Direct convolution, its input gradient and weight gradient in float64 (one image, pad 1).
    func direct64(_ s: ConvShape, x: [Double], w: [Double], dy: [Double]) -> ([Double], [Double], [Double]) {
        var y = [Double](repeating: 0, count: s.cout * s.ho * s.wo), dx = [Double](repeating: 0, count: x.count)
        var dw = [Double](repeating: 0, count: w.count)
        y.withUnsafeMutableBufferPointer { yp in
            dx.withUnsafeMutableBufferPointer { dxp in
                dw.withUnsafeMutableBufferPointer { dwp in
                    for co in 0..<s.cout {
                        for ci in 0..<s.cin {
                            for ki in 0..<3 {
                                for kj in 0..<3 {
                                    let k = ((co * s.cin + ci) * 3 + ki) * 3 + kj, wk = w[k]
                                    var acc = 0.0
                                    for oy in 0..<s.ho {
                                        let iy = oy * s.stride - 1 + ki
                                        guard iy >= 0, iy < s.h else { continue }
                                        for ox in 0..<s.wo {
                                            let ix = ox * s.stride - 1 + kj
                                            guard ix >= 0, ix < s.w else { continue }
                                            let i = (ci * s.h + iy) * s.w + ix, o = (co * s.ho + oy) * s.wo + ox
                                            yp[o] += wk * x[i]
                                            dxp[i] += wk * dy[o]
                                            acc += x[i] * dy[o]
                                        }
                                    }
                                    dwp[k] = acc
                                }
                            }
                        }
                    }
                }
            }
        }
        return (y, dx, dw)
    }

    /// PyTorch's float32 error against its own float64 on the same shapes (one image each).
    func torchErrors(_ py: String, _ shapes: [ConvShape]) throws -> [String: [Double]] {
        let script = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent()
            .appendingPathComponent("../../../Cluster/python/conv_error_torch.py").standardized.path
        let path = FileManager.default.fileExists(atPath: script) ? script : "Cluster/python/conv_error_torch.py"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: py)
        p.arguments = [path] + shapes.map { "\($0.cin),\($0.cout),\($0.stride),\($0.h),\($0.w)" }
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0, let rows = try JSONSerialization.jsonObject(with: data) as? [[Double]],
            rows.count == shapes.count
        else {
            throw ConfigError("--torch-python: \(path) failed (exit \(p.terminationStatus))")
        }
        return Dictionary(uniqueKeysWithValues: zip(shapes.map(\.name), rows))
    }
}
