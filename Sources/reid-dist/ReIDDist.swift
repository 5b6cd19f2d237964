// reid-dist: the command line. It only wires the libraries together.
import ArgumentParser
import Foundation
import ReIDCore
import ReIDDist

@main
struct ReIDDist: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reid-dist",
        abstract: "Data-parallel person re-identification training on CPU clusters.",
        version: reidDistVersion,
        subcommands: [
            Train.self, StudyCommand.self, Evaluate.self, Extract.self, Embed.self, Search.self, Export.self, Rank.self,
            Report.self, Synth.self, Bench.self, ConfigKeys.self
        ])

    static func main() {
        quietOpenBLASWorkers()
        main(nil)
    }
}

/// After each call OpenBLAS's idle worker threads spin for 2^28 cycles (about 0.1 s) before
/// they sleep, so they hold the cores that the engine's own parallel loops (im2col, batch norm,
/// pooling) need between GEMMs. OpenBLAS reads OPENBLAS_THREAD_TIMEOUT only when it is loaded:
/// when the user has not set it, the process sets the shortest spin (2^4 cycles) and replaces
/// itself with execv before anything else has run (same pid, so launchers do not notice).
/// Measured with 2 threads: ResNet-18 w32 74-80 -> 77-86 img/s, ResNet-50 3.48-3.56 -> 3.62-3.80.
/// One BLAS thread per rank has no workers and is unaffected.
func quietOpenBLASWorkers() {
    guard getenv("OPENBLAS_THREAD_TIMEOUT") == nil else { return }
    setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1)
    execv("/proc/self/exe", CommandLine.unsafeArgv)
    // execv returned, so it failed: go on with OpenBLAS's default spinning.
}
