// reid-dist: the command line. It only wires the libraries together.
import ArgumentParser
import ReIDCore

@main
struct ReIDDist: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reid-dist",
        abstract: "Data-parallel person re-identification training on CPU clusters.",
        subcommands: [Train.self, Evaluate.self, Extract.self, Rank.self, Synth.self, Bench.self, ConfigKeys.self])
}
