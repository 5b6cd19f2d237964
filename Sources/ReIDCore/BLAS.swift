// Row-major sgemm and thread control over OpenBLAS.
import CBLAS

/// C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C, all row-major.
/// `lda`, `ldb`, `ldc` default to the packed leading dimensions.
@inline(__always)
public func sgemm(
    transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
    alpha: Float = 1, a: UnsafePointer<Float>, lda: Int? = nil,
    b: UnsafePointer<Float>, ldb: Int? = nil,
    beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int? = nil
) {
    let la = lda ?? (transA ? m : k), lb = ldb ?? (transB ? k : n), lc = ldc ?? n
    cblas_sgemm(
        CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
        Int32(m), Int32(n), Int32(k), alpha, a, Int32(la), b, Int32(lb), beta, c, Int32(lc))
}

/// Sets OpenBLAS's thread count (one per rank when ranks fill the cores).
public func setBLASThreads(_ n: Int) { openblas_set_num_threads(Int32(n)) }
public func blasThreads() -> Int { Int(openblas_get_num_threads()) }
public func blasCoreName() -> String { String(cString: openblas_get_corename()) }
/// OpenBLAS's build: version and options (for the run report).
public func blasConfig() -> String { String(cString: openblas_get_config()) }
