// `reid-dist study`: a 2 x 2 grid and a cell that cannot train, 2 seeds, on the tiny synthetic
// set. It runs part of the way (--max-runs), a run is left unfinished at a checkpoint, the study
// continues (finished runs skipped, the unfinished one resumed, the broken cell failed with its
// reason and kept), and its table equals the metrics in its run folders.
import Foundation
import ReIDReport
import XCTest

@testable import ReIDDist

final class StudyTests: XCTestCase {
    func testStudyRunsStopsContinuesAndTabulates() throws {
        let dir = scratch("study")
        let base = dir + "/tiny.yaml", file = dir + "/study.yaml", out = dir + "/out"
        try """
        data: {root: "\(tinyData)", height: 64, width: 32}
        model: {depth: 18, width: 8, groups: 2, branches: 2}
        sampler: {ids_per_batch: 4, instances: 2}
        optim: {name: sgd, lr: 0.05, momentum: 0.9}
        schedule: {epochs: 2, warmup_epochs: 0, milestones: [10]}
        train: {checkpoint_every: 1, eval_every: 0, log_every: 5, threads: 1}
        eval: {batch_size: 16, flip: false}
        """.write(toFile: base, atomically: true, encoding: .utf8)
        try """
        base: tiny.yaml
        out: \(out)
        seeds: [1, 2]
        grid:
          model.branches: [1, 2]
          loss.kind: [ce, ce+triplet]
        cells:
          - {name: broken, set: {data.root: \(dir)/no-such-data}}
        """.write(toFile: file, atomically: true, encoding: .utf8)

        // 1. three runs, then it stops
        var (s, o) = try runProgram(MPITests.binary, ["study", file, "--max-runs", "3"])
        XCTAssertEqual(s, 0, o)
        XCTAssert(o.contains("5 cells x 2 seeds = 10 runs; 0 finished"), o)
        XCTAssert(o.contains("stopping after 3 run(s)"), o)
        // 2. the fourth run stops at a checkpoint after its first epoch (as if interrupted)
        let fourth = "\(out)/branches-1_kind-ce+triplet/seed-2"
        (s, o) = try runProgram(
            MPITests.binary,
            [
                "train", "--config", base, "--set", "model.branches=1", "--set", "loss.kind=ce+triplet",
                "--set", "train.seed=2", "--set", "train.run_dir=\(fourth)", "--stop-after", "1"
            ])
        XCTAssertEqual(s, 0, o)
        // 3. the study continues: 3 skipped, the fourth resumed, the broken cell failed, the rest trained
        (s, o) = try runProgram(MPITests.binary, ["study", file])
        XCTAssertEqual(s, 0, o)
        XCTAssert(o.contains("10 runs; 3 finished"), o)
        XCTAssert(o.contains("[4/10] branches-1_kind-ce+triplet seed 2: continuing"), o)
        let log = try String(contentsOfFile: fourth + ".log", encoding: .utf8)
        XCTAssert(log.contains("resum"), log)
        XCTAssert(o.contains("[9/10] broken seed 1: FAILED"), o)
        let failure = try String(contentsOfFile: "\(out)/broken/seed-1.failed", encoding: .utf8)
        XCTAssert(failure.contains("no-such-data"), failure)

        // 4. the table: every cell, the broken one failed with its reason; means equal the run folders'
        let csv = try String(contentsOfFile: out + "/study.csv", encoding: .utf8).split(separator: "\n").map(
            String.init)
        XCTAssertEqual(csv.count, 6, csv.joined(separator: "\n"))
        let json =
            try JSONSerialization.jsonObject(with: try Data(contentsOf: URL(fileURLWithPath: out + "/study.json")))
            as! [String: Any]
        let cells = json["cells"] as! [[String: Any]]
        XCTAssertEqual(
            cells.map { $0["name"] as! String },
            [
                "branches-1_kind-ce", "branches-1_kind-ce+triplet", "branches-2_kind-ce", "branches-2_kind-ce+triplet",
                "broken"
            ])
        for c in cells.prefix(4) {
            XCTAssertEqual(c["status"] as? String, "ok")
            let name = c["name"] as! String
            var rank1: [Double] = [], mAP: [Double] = []
            for seed in [1, 2] {
                let evals = try MetricsFile.read("\(out)/\(name)/seed-\(seed)/metrics.jsonl").evals
                let last = try XCTUnwrap(evals.last, name)
                XCTAssertEqual(last.epoch, 2, name)
                rank1.append(100 * last.rank1)
                mAP.append(100 * last.mAP)
            }
            XCTAssertEqual(c["rank1_mean"] as! Double, (rank1[0] + rank1[1]) / 2, accuracy: 1e-9, name)
            XCTAssertEqual(c["mAP_mean"] as! Double, (mAP[0] + mAP[1]) / 2, accuracy: 1e-9, name)
            XCTAssertEqual(c["mAP_sd"] as! Double, abs(mAP[0] - mAP[1]) / 2.0.squareRoot(), accuracy: 1e-9, name)
        }
        let broken = cells[4]
        XCTAssert((broken["status"] as! String).hasPrefix("failed: seed 1: exit status 1"), "\(broken)")
        XCTAssertNil(broken["rank1_mean"])
        let html = try String(contentsOfFile: out + "/study.html", encoding: .utf8)
        XCTAssert(html.contains("branches-2_kind-ce+triplet/seed-1/report.html"), html)
        XCTAssert(html.contains("<svg"), html)

        // 5. nothing left but the broken cell; --summarise only tabulates
        (s, o) = try runProgram(MPITests.binary, ["study", file, "--summarise"])
        XCTAssertEqual(s, 0, o)
        XCTAssert(o.contains("10 runs; 8 finished"), o)
        XCTAssertFalse(o.contains("training"), o)
    }

    /// Mistakes in a study file are named before anything runs: the file, the cell and the key.
    func testStudyFileErrorsNameTheCellAndKey() throws {
        let dir = scratch("study-errors")
        let file = dir + "/s.yaml"
        try "base: \(dir)/none.yaml\nout: \(dir)/out\ngrid: {model.groups: [1]}\n".write(
            toFile: file, atomically: true, encoding: .utf8)
        var (s, o) = try runProgram(MPITests.binary, ["study", file])
        XCTAssertEqual(s, 1)
        XCTAssert(o.contains("cannot read the config file"), o)
        try
            "base: \(FileManager.default.currentDirectoryPath)/Configs/debug.yaml\nout: \(dir)/out\ngrid: {model.grops: [1, 2]}\n"
            .write(toFile: file, atomically: true, encoding: .utf8)
        (s, o) = try runProgram(MPITests.binary, ["study", file])
        XCTAssertEqual(s, 1)
        XCTAssert(o.contains("cell grops-1, seed 1") && o.contains("unknown key 'model.grops'"), o)
        try "base: x.yaml\nout: o\nseeds: [1, 1]\ncells: [{name: a}]\n".write(
            toFile: file, atomically: true, encoding: .utf8)
        (s, o) = try runProgram(MPITests.binary, ["study", file])
        XCTAssertEqual(s, 1)
        XCTAssert(o.contains("'seeds' lists a seed twice"), o)
        try "base: x.yaml\nout: o\ncells: [{name: ../up}]\n".write(toFile: file, atomically: true, encoding: .utf8)
        (s, o) = try runProgram(MPITests.binary, ["study", file])
        XCTAssertEqual(s, 1)
        XCTAssert(o.contains("must be letters, digits"), o)
        // a top-level key it does not know
        try "base: x.yaml\nout: o\nx: 1\ncells: [{name: a}]\n".write(toFile: file, atomically: true, encoding: .utf8)
        (s, o) = try runProgram(MPITests.binary, ["study", file])
        XCTAssertEqual(s, 1)
        XCTAssert(o.contains("unknown key 'x'"), o)
        // an alias bomb (10 levels of 10 values: 10^10 if expanded) stops at the node budget, at once
        let budget = dir + "/bomb.yaml"
        var text = "base: x.yaml\nout: o\nseeds: [1]\ncells:\n"
        text += "  - name: a\n    set: {model.init: &a0 [x, x, x, x, x, x, x, x, x, x]}\n"
        for i in 1...9 {
            text +=
                "  - name: a\(i)\n    set: {model.init: &a\(i) ["
                + Array(repeating: "*a\(i - 1)", count: 10).joined(separator: ", ") + "]}\n"
        }
        try text.write(toFile: budget, atomically: true, encoding: .utf8)
        let t0 = Date()
        (s, o) = try runProgram(MPITests.binary, ["study", budget])
        XCTAssertEqual(s, 1)
        XCTAssert(o.contains("alias bomb"), o)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 10)
        // a grid over paths: the cells' folder names keep letters, digits and - _ . + only
        try
            "base: \(FileManager.default.currentDirectoryPath)/Configs/debug.yaml\nout: \(dir)/out\ngrid: {data.root: [a/b c, ../d]}\n"
            .write(toFile: file, atomically: true, encoding: .utf8)
        (s, o) = try runProgram(MPITests.binary, ["study", file, "--dry-run"])
        XCTAssertEqual(s, 0, o)
        XCTAssert(o.contains("root-a_b_c seed 1") && o.contains("root-.._d seed 1"), o)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/out"))
    }
}
