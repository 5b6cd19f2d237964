// `reid-dist bench plan`: how a training step should scale to N nodes, from the
// step measured here on one node, the gradient bytes, and a link's rate and
// latency. A model, stated with its assumptions, checked against the simulated
// cluster (Cluster/sim-cluster.sh; docs/cluster.md) before it is trusted for 8-64 nodes.
//
//   all-reduce of S bytes on N nodes (ring):  T(S) = 2(N-1)/N * S/(e*B) + 2(N-1)*L + c
//     B link rate, e the share of it TCP through the stack achieves, L one-way latency,
//     c a fixed cost per all-reduce (measured: about 24 ms for any size up to 1 MB on this
//     machine's veth links)
//   exposed all-reduce per step: the first-layers bucket cannot overlap (backward ends with
//     it); the rest overlaps with backward after the head and layer4, so
//     exposed = T(S_tail) + max(0, T(S - S_tail) - (1 - S_tail/S) * T_backward)
//   step(N) = step(1) + exposed; images/s = N * batch / step(N).
//   with a triplet loss mined over the global batch (loss.triplet_scope: global), each step also
//   all-gathers the pooled features and labels of the N x batch images (ring):
//     G = (N-1) * batch * (C+1) * 4 bytes / (e*B) + (N-1)*L + c, between forward and backward:
//     exposed whole (the "mining" column; not in the step and images/s columns)
// Imbalance between ranks and the data loader are left out (measured apart in training).
import ArgumentParser
import Foundation
import ReIDCore
import ReIDDist

struct BenchPlan: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Estimate images/s and the exposed all-reduce on N nodes from a step measured on this one.")
    @Option(help: "Case: \(benchCases.map(\.name).joined(separator: ", ")).") var `case` = "r50-256x128-b16"
    @Option(help: "Nodes to tabulate (comma-separated).") var nodes = "1,2,4,8,16,32,64"
    @Option(help: "Link rate per node: e.g. 1gbit, 10gbit, 25gbit.") var rate = "10gbit"
    @Option(parsing: .unconditional, help: "One-way link latency in microseconds.") var latencyUs = 50.0
    @Option(
        parsing: .unconditional,
        help: "Share of the link rate TCP achieves (e); 0.5 fits the simulated 1 Gbit/s links here.") var efficiency =
        1.0
    @Option(
        parsing: .unconditional,
        help: "Fixed cost per all-reduce in ms (c); 24 on this machine's veth links, under 1 on real NICs.")
    var fixedMs = 1.0
    @Option(parsing: .unconditional, help: "Gradient bucket size in MB (train.bucket_mb).") var bucketMb = 25.0
    @Option(parsing: .unconditional, help: "Threads per rank for the measured step.") var threads = 1
    @Option(
        parsing: .unconditional,
        help: "Use this step time (ms) and backward share instead of measuring: MS,BACKWARD_FRACTION.") var step:
        String?
    @Option(help: "Write the table as JSON.") var json: String?

    func validate() throws {
        guard benchCases.contains(where: { $0.name == `case` }) else {
            throw ValidationError("unknown case '\(`case`)'")
        }
        guard (try? Self.bitsPerSecond(rate)) != nil else {
            throw ValidationError("--rate \(rate): expected a number with gbit, mbit or kbit")
        }
        guard efficiency > 0 && efficiency <= 1 else { throw ValidationError("--efficiency must be in (0, 1]") }
    }

    static func bitsPerSecond(_ s: String) throws -> Double {
        let l = s.lowercased()
        for (suffix, m) in [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)] where l.hasSuffix(suffix) {
            if let v = Double(l.dropLast(suffix.count)), v > 0 { return v * m }
        }
        throw ValidationError("--rate \(s)")
    }

    /// Ring all-reduce time of `bytes` on `n` nodes (the header's T(S)).
    static func allreduce(_ bytes: Double, nodes n: Int, bytesPerSecond: Double, latency: Double, fixed: Double)
        -> Double
    {
        guard n > 1 else { return 0 }
        let k = Double(n - 1)
        return 2 * k / Double(n) * bytes / bytesPerSecond + 2 * k * latency + fixed
    }

    func run() throws {
        let c = benchCases.first { $0.name == `case` }!
        let net = GroupedMultiBranchNet(
            ModelSpec(depth: c.depth, width: c.width, classes: c.classes), options: EngineOptions(threads: threads))
        let bytes = Double(net.arena.paramCount * 4)
        var stepS: Double, backwardShare: Double
        if let step {
            let parts = step.split(separator: ",").compactMap { Double($0) }
            guard parts.count == 2 else { throw ValidationError("--step MS,BACKWARD_FRACTION, e.g. 250,0.6") }
            stepS = parts[0] / 1e3
            backwardShare = parts[1]
        } else {
            setBLASThreads(threads)
            (stepS, backwardShare) = try measure(c, net)
        }
        let bw = try Self.bitsPerSecond(rate) / 8 * efficiency, lat = latencyUs * 1e-6, fixed = fixedMs * 1e-3
        // The first-layers bucket (at most 1 MB, GradientSync) and the rest.
        let tail = min(Double(min(Int(bucketMb * 1_048_576) / 4, 262_144) * 4), bytes)
        print(
            String(
                format: "%@: %.1f MB of gradients; one node: %.0f ms/step (backward %.0f%%), %d thread(s)", c.name,
                bytes / 1e6,
                stepS * 1e3, backwardShare * 100, threads))
        print(
            String(
                format:
                    "links %@ x efficiency %.2f = %.2f GB/s, latency %.0f us, %.1f ms per all-reduce; buckets of %.0f MB",
                rate, efficiency, bw / 1e9, latencyUs, fixedMs, bucketMb))
        let featureBytes = Double(c.batch * (net.spec.featureChannels + 1) * 4) // one rank's share of the all-gather
        print("nodes   all-reduce   exposed   step      images/s   scaling   mining all-gather (global triplet)")
        var rows: [[String: Any]] = []
        let single = Double(c.batch) / stepS
        for n in nodes.split(separator: ",").compactMap({ Int($0) }) where n >= 1 {
            let whole = Self.allreduce(bytes, nodes: n, bytesPerSecond: bw, latency: lat, fixed: fixed)
            let tTail = Self.allreduce(tail, nodes: n, bytesPerSecond: bw, latency: lat, fixed: fixed)
            let tRest = Self.allreduce(bytes - tail, nodes: n, bytesPerSecond: bw, latency: lat, fixed: fixed)
            let exposed = n == 1 ? 0 : tTail + max(0, tRest - (1 - tail / bytes) * backwardShare * stepS)
            let stepN = stepS + exposed, ips = Double(n * c.batch) / stepN
            let gather = n == 1 ? 0 : Double(n - 1) * featureBytes / bw + Double(n - 1) * lat + fixed
            print(
                String(
                    format: "%5d  %8.1f ms  %6.1f ms  %6.0f ms  %9.1f   %5.1f%%   %6.2f ms (%.2f MB in)", n,
                    whole * 1e3, exposed * 1e3, stepN * 1e3, ips,
                    ips / (single * Double(n)) * 100, gather * 1e3, Double(n - 1) * featureBytes / 1e6))
            rows.append([
                "nodes": n, "allreduce_ms": whole * 1e3, "exposed_ms": exposed * 1e3, "step_ms": stepN * 1e3,
                "images_per_second": ips, "scaling_efficiency": ips / (single * Double(n)),
                "mining_allgather_ms": gather * 1e3
            ])
        }
        if let json {
            try writeAtomically(
                try JSONSerialization.data(
                    withJSONObject: ["case": c.name, "rate": rate, "rows": rows], options: [.prettyPrinted, .sortedKeys]
                ), to: json)
        }
    }

    /// Median step and the backward's share of it, one process, after 2 warm-up steps.
    func measure(_ c: BenchCase, _ net: GroupedMultiBranchNet) throws -> (Double, Double) {
        let opt = Optimizer(.sgd, paramCount: net.arena.paramCount, momentum: 0.9)
        let x = Tensor([c.batch, 3, c.height, c.imageWidth])
        var rng = RNG(key: 2)
        for i in 0..<x.count { x.ptr[i] = Float(rng.normal()) }
        let labels = (0..<c.batch).map { _ in rng.below(c.classes) }
        let step = TrainingStep(
            model: net, optimizer: opt, averaging: LocalGradients(arena: net.arena), labelSmoothing: 0.1)
        var rows: [(Double, Double)] = []
        for i in 0..<6 {
            let r = try step.run(lr: 0.01, context: "plan step \(i + 1)") { _ in (x, labels) }
            if i >= 2 { rows.append((r.seconds, r.total(.backward) / r.seconds)) }
        }
        return rows.sorted { $0.0 < $1.0 }[rows.count / 2]
    }
}
