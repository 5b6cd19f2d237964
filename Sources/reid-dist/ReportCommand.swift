// `reid-dist report RUN_DIR`: the run's page, written again from its files.
import ArgumentParser
import Foundation
import ReIDReport

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Write a run folder's self-contained HTML report (curves, evaluations, ranked lists, the run) and its charts as SVG.",
        discussion: """
            Training writes RUN_DIR/report.html itself after every evaluation and at its end; this
            command writes it again (or elsewhere with --out). The page needs nothing else: charts
            are inline SVG, thumbnails are data URIs, there is no script. The charts are also
            written as SVG files into a report/ folder beside the page.
            """)
    @Argument(help: "The run folder (train.run_dir).") var runDir: String
    @Option(help: "The HTML file to write (default RUN_DIR/report.html).") var out: String?

    func run() throws {
        let path = try RunReport.write(runDir: runDir, out: out)
        print("wrote \(path)")
    }
}
