// Finite-difference gradient checking (Caffe's GradientChecker, adapted):
// central differences at step h; where the two one-sided slopes disagree the
// entry sits on a kink (ReLU at 0, a max-pool switch) and is skipped and counted, and a
// tolerance scaled by the magnitudes compared. A fixed seed picks the entries.
import XCTest

@testable import ReIDCore

struct GradCheck {
    var h: Float = 1e-2
    var rtol: Double = 2e-2
    var atol: Double = 2e-3
    var samples = 24
    var seed: UInt64 = 7

    /// Compares `analytic(i)` with the numerical derivative of `loss` w.r.t.
    /// the value at `ptr[i]`, for up to `samples` indices of `count`.
    func check(
        _ what: String, _ ptr: UnsafeMutablePointer<Float>, count: Int,
        analytic: (Int) -> Float, loss: () -> Double,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        var rng = RNG(key: seed, UInt64(count))
        let idx = count <= samples ? Array(0..<count) : (0..<samples).map { _ in rng.below(count) }
        var skipped = 0, worst = 0.0
        for i in idx {
            let orig = ptr[i]
            ptr[i] = orig + h
            let lp = loss()
            ptr[i] = orig - h
            let lm = loss()
            ptr[i] = orig
            let l0 = loss()
            let n1 = (lp - lm) / (2 * Double(h))
            // One-sided slopes disagree across a kink (ReLU at 0, a max-pool switch).
            let fwd = (lp - l0) / Double(h), bwd = (l0 - lm) / Double(h)
            if abs(fwd - bwd) > rtol * Swift.max(abs(fwd), abs(bwd)) + 4 * atol {
                skipped += 1
                continue
            }
            let a = Double(analytic(i))
            let err = abs(a - n1)
            worst = Swift.max(worst, err / (Swift.max(abs(a), abs(n1)) + atol / rtol))
            XCTAssertLessThanOrEqual(
                err, rtol * Swift.max(abs(a), abs(n1)) + atol,
                "\(what)[\(i)]: analytic \(a) vs numeric \(n1)", file: file, line: line)
        }
        XCTAssertLessThanOrEqual(
            skipped * 4, idx.count, "\(what): \(skipped) of \(idx.count) entries sat on kinks", file: file, line: line)
    }
}

extension GradCheck {
    /// Whole-tensor check for deep networks, where single entries cross ReLU
    /// kinks too often: the directional derivative along v, a unit vector, by
    /// central differences, against g.v. Two directions: the analytic gradient
    /// itself (a wrong value, sign or scale shows as g.v != true slope) and a
    /// random one. Errors are measured against |g|, the largest g.v can be.
    /// The slope is Richardson-extrapolated from steps h and h/2.
    func checkDirectional(
        _ what: String, _ ptr: UnsafeMutablePointer<Float>, count: Int,
        analytic g: [Float], loss: () -> Double,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        let gnorm = Double(g.reduce(0) { $0 + $1 * $1 }).squareRoot()
        var rng = RNG(key: seed, UInt64(count), 77)
        let random = (0..<count).map { _ in Float(rng.normal()) }
        for (dirName, dir) in [("gradient", g), ("random", random)] {
            let norm = Double(dir.reduce(0) { $0 + $1 * $1 }).squareRoot()
            if norm == 0 { continue }
            let v = dir.map { Float(Double($0) / norm) }
            let orig = Array(UnsafeBufferPointer(start: ptr, count: count))
            func slope(_ step: Float) -> Double {
                for i in 0..<count { ptr[i] = orig[i] + step * v[i] }
                let lp = loss()
                for i in 0..<count { ptr[i] = orig[i] - step * v[i] }
                let lm = loss()
                ptr.update(from: orig, count: count)
                return (lp - lm) / (2 * Double(step))
            }
            // Richardson extrapolation cancels the h^2 term of central differences.
            let numeric = (4 * slope(h / 2) - slope(h)) / 3
            var a = 0.0
            for i in 0..<count { a += Double(g[i]) * Double(v[i]) }
            XCTAssertLessThanOrEqual(
                abs(a - numeric), rtol * gnorm + atol,
                "\(what) along the \(dirName) direction: analytic \(a) vs numeric \(numeric) (|g| = \(gnorm))",
                file: file, line: line)
        }
    }
}

/// A fixed random tensor.
func randomTensor(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
    let t = Tensor(shape)
    var rng = RNG(key: seed)
    for i in 0..<t.count { t.ptr[i] = Float(rng.normal()) * scale }
    return t
}

/// sum(out * r) in Double: the scalar whose gradient w.r.t. out is r.
func weightedSum(_ out: UnsafePointer<Float>, _ r: UnsafePointer<Float>, _ n: Int) -> Double {
    var s = 0.0
    for i in 0..<n { s += Double(out[i]) * Double(r[i]) }
    return s
}
