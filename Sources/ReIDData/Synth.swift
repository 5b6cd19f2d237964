// Deterministic synthetic pedestrians in any of the dataset layouts (Market-1501,
// DukeMTMC-reID, CUHK03-NP, MSMT17, list files), for the README's main job (Cluster/run.sh),
// the tests of every loader and debugging. Each
// identity has a body shape, skin, hair, clothing colours and pattern, shoes,
// and perhaps a bag or hat; each image adds its camera's lighting and colour
// cast and background, pose jitter (position, scale, stride), clutter,
// sometimes an occluding object, and sensor noise. Not a substitute for the
// real sets, which users bring.
import Foundation
import ReIDCore
import ReIDImage

public struct SynthConfig {
    public var layout: Layout = .market
    public var trainIds = 100, testIds = 100
    public var cameras = 6
    public var seed: UInt64 = 0
    public var width = 64, height = 128
    public init() {}
}

struct Appearance {
    var skin: SIMD3<Double>, hair: SIMD3<Double>, shirt: SIMD3<Double>, shirt2: SIMD3<Double>
    var pants: SIMD3<Double>, shoes: SIMD3<Double>, bag: SIMD3<Double>
    var pattern: Int // 0 solid, 1 horizontal stripes, 2 vertical stripes, 3 checks
    var longSleeves: Bool, shorts: Bool, hat: Bool
    var bagKind: Int // 0 none, 1 backpack, 2 shoulder bag
    var build: Double, stature: Double

    init(_ rng: inout RNG) {
        func colour(_ r: inout RNG) -> SIMD3<Double> {
            // Saturated or muted clothing colours from HSV.
            let h = r.uniform() * 6, s = r.uniform() < 0.3 ? r.uniform() * 0.2 : 0.4 + r.uniform() * 0.6
            let v = 0.15 + r.uniform() * 0.8
            let c = v * s, x = c * (1 - abs(h.truncatingRemainder(dividingBy: 2) - 1)), m = v - c
            let rgb: SIMD3<Double>
            switch Int(h) {
            case 0: rgb = [c, x, 0]
            case 1: rgb = [x, c, 0]
            case 2: rgb = [0, c, x]
            case 3: rgb = [0, x, c]
            case 4: rgb = [x, 0, c]
            default: rgb = [c, 0, x]
            }
            return rgb + SIMD3(repeating: m)
        }
        let skins: [SIMD3<Double>] = [[0.95, 0.8, 0.7], [0.85, 0.65, 0.5], [0.65, 0.45, 0.32], [0.45, 0.3, 0.2]]
        skin = skins[rng.below(skins.count)]
        hair = [[0.1, 0.08, 0.05], [0.35, 0.2, 0.1], [0.8, 0.7, 0.4], [0.5, 0.5, 0.5]][rng.below(4)]
        shirt = colour(&rng)
        shirt2 = colour(&rng)
        pants = colour(&rng)
        bag = colour(&rng)
        shoes = rng.uniform() < 0.5 ? [0.1, 0.1, 0.1] : colour(&rng)
        pattern = rng.below(4)
        longSleeves = rng.uniform() < 0.5
        shorts = rng.uniform() < 0.25
        hat = rng.uniform() < 0.15
        bagKind = rng.below(3)
        build = 0.8 + rng.uniform() * 0.4
        stature = 0.85 + rng.uniform() * 0.15
    }
}

/// A floating-point RGB canvas with the two shapes the pedestrians are drawn from.
struct Canvas {
    let w: Int, h: Int
    var buf: [SIMD3<Double>]
    init(width: Int, height: Int, fill: SIMD3<Double>) {
        w = width
        h = height
        buf = Array(repeating: fill, count: width * height)
    }

    mutating func rect(_ x0: Double, _ y0: Double, _ x1: Double, _ y1: Double, _ c: (Int, Int) -> SIMD3<Double>) {
        for y in Swift.max(0, Int(y0))..<Swift.min(h, Int(y1.rounded(.up))) {
            for x in Swift.max(0, Int(x0))..<Swift.min(w, Int(x1.rounded(.up))) { buf[y * w + x] = c(x, y) }
        }
    }
    mutating func rect(_ x0: Double, _ y0: Double, _ x1: Double, _ y1: Double, _ c: SIMD3<Double>) {
        rect(x0, y0, x1, y1) { _, _ in c }
    }

    mutating func ellipse(_ cx: Double, _ cy: Double, _ rx: Double, _ ry: Double, _ c: SIMD3<Double>, top: Bool = false)
    {
        for y in Swift.max(0, Int(cy - ry))..<Swift.min(h, Int(cy + ry) + 1) {
            if top && Double(y) > cy { continue }
            for x in Swift.max(0, Int(cx - rx))..<Swift.min(w, Int(cx + rx) + 1) {
                let dx = (Double(x) - cx) / rx, dy = (Double(y) - cy) / ry
                if dx * dx + dy * dy <= 1 { buf[y * w + x] = c }
            }
        }
    }

    /// To 8 bits under the camera's colour cast and the image's brightness, with sensor noise.
    func image(cast: SIMD3<Double>, brightness: Double, rng: inout RNG) -> RGBImage {
        var img = RGBImage(width: w, height: h)
        for i in 0..<(w * h) {
            let v = buf[i] * cast * brightness
            for c in 0..<3 {
                let noisy = v[c] + rng.normal() * 0.03
                img.pixels[i * 3 + c] = UInt8(Swift.max(0, Swift.min(255, (noisy * 255).rounded())))
            }
        }
        return img
    }
}

/// Renders one image of identity `app` seen by camera `cam`, varied by `rng`: the camera's
/// scene, the person, sometimes an occluder, the camera's light and noise.
func renderPedestrian(_ app: Appearance, cam: Int, width w: Int, height h: Int, rng: inout RNG) -> RGBImage {
    var camRng = RNG(key: 0xCA11, UInt64(cam))
    let cast = SIMD3<Double>(0.8 + camRng.uniform() * 0.4, 0.8 + camRng.uniform() * 0.4, 0.8 + camRng.uniform() * 0.4)
    let background = SIMD3<Double>(
        0.3 + camRng.uniform() * 0.4, 0.3 + camRng.uniform() * 0.4, 0.3 + camRng.uniform() * 0.4)
    let brightness = 0.75 + rng.uniform() * 0.5
    var canvas = Canvas(width: w, height: h, fill: background)
    // Background clutter: a few rectangles of the camera's scene.
    for _ in 0..<(2 + rng.below(4)) {
        let c = background * (0.6 + rng.uniform() * 0.8)
        let x0 = rng.uniform() * Double(w), y0 = rng.uniform() * Double(h)
        canvas.rect(x0, y0, x0 + 4 + rng.uniform() * 20, y0 + 4 + rng.uniform() * 30, c)
    }
    drawPerson(app, on: &canvas, rng: &rng)
    // Occluder: a post or another object in front, sometimes.
    if rng.uniform() < 0.15 {
        let ox = rng.uniform() * Double(w)
        canvas.rect(ox, rng.uniform() * Double(h) * 0.5, ox + 6 + rng.uniform() * 14, Double(h), background * 0.5)
    }
    return canvas.image(cast: cast, brightness: brightness, rng: &rng)
}

/// The person: legs and shoes, arms, the patterned torso, a bag, head, hair and hat, with
/// pose jitter (position, scale, stride, arm swing) and a front or back view.
func drawPerson(_ app: Appearance, on canvas: inout Canvas, rng: inout RNG) {
    let w = Double(canvas.w), h = Double(canvas.h)
    let s = h / 128 * app.stature * (0.92 + rng.uniform() * 0.16)
    let cx = w / 2 + (rng.uniform() - 0.5) * 10
    let top = h * (1 - app.stature) * 0.5 + 4 + (rng.uniform() - 0.5) * 8
    let bw = 22 * app.build * s, stride = (rng.uniform() - 0.5) * 10 * s
    let backView = rng.uniform() < 0.5
    let headY = top + 10 * s, torsoTop = top + 20 * s, torsoBottom = top + 62 * s, legBottom = top + 112 * s
    for (side, off) in [(-1.0, -stride), (1.0, stride)] {
        let lx = cx + side * bw * 0.22 + off * 0.5
        let knee = app.shorts ? torsoBottom + 18 * s : legBottom
        canvas.rect(lx - 4.5 * s, torsoBottom, lx + 4.5 * s, knee, app.pants)
        if app.shorts { canvas.rect(lx - 3.5 * s, knee, lx + 3.5 * s, legBottom, app.skin) }
        canvas.rect(lx - 5 * s, legBottom, lx + 6 * s, legBottom + 5 * s, app.shoes)
    }
    for side in [-1.0, 1.0] {
        let ax = cx + side * (bw / 2 + 3 * s)
        let swing = (rng.uniform() - 0.5) * 6 * s
        let sleeveEnd = app.longSleeves ? torsoTop + 38 * s : torsoTop + 14 * s
        canvas.rect(ax - 3 * s + swing, torsoTop + 2 * s, ax + 3 * s + swing, sleeveEnd, app.shirt)
        canvas.rect(ax - 3 * s + swing, sleeveEnd, ax + 3 * s + swing, torsoTop + 42 * s, app.skin)
    }
    canvas.rect(cx - bw / 2, torsoTop, cx + bw / 2, torsoBottom) { x, y in
        switch app.pattern {
        case 1: return (Int(Double(y) / (4 * s)) % 2 == 0) ? app.shirt : app.shirt2
        case 2: return (Int(Double(x) / (4 * s)) % 2 == 0) ? app.shirt : app.shirt2
        case 3: return ((Int(Double(x) / (5 * s)) + Int(Double(y) / (5 * s))) % 2 == 0) ? app.shirt : app.shirt2
        default: return app.shirt
        }
    }
    // Bag: a backpack covers the back, a shoulder bag hangs at one side.
    if app.bagKind == 1 && backView {
        canvas.rect(cx - bw * 0.35, torsoTop + 4 * s, cx + bw * 0.35, torsoTop + 34 * s, app.bag)
    }
    if app.bagKind == 1 && !backView {
        canvas.rect(cx - bw / 2, torsoTop, cx - bw / 2 + 3 * s, torsoTop + 30 * s, app.bag)
    }
    if app.bagKind == 2 {
        let bx = cx + (backView ? 1.0 : -1.0) * (bw / 2 + 4 * s)
        canvas.rect(bx - 6 * s, torsoTop + 28 * s, bx + 6 * s, torsoTop + 44 * s, app.bag)
    }
    canvas.ellipse(cx, headY, 7 * s, 9 * s, backView ? app.hair : app.skin)
    canvas.ellipse(cx, headY - 2 * s, 7.5 * s, 7.5 * s, app.hair, top: true)
    if app.hat { canvas.rect(cx - 9 * s, headY - 11 * s, cx + 9 * s, headY - 6 * s, app.shirt2) }
}

/// What `writeSynthetic` made.
public struct SynthSummary: CustomStringConvertible {
    public var train = 0, query = 0, gallery = 0, distractors = 0, junk = 0, trainIds = 0, testIds = 0
    public var description: String {
        "\(train) training images of \(trainIds) ids, \(query) queries and \(gallery) gallery images of \(testIds) ids "
            + "(\(distractors) distractors, \(junk) junk)"
    }
}

/// One image to make: its split, identity, appearance, the camera it is rendered for, and
/// the one its file name or list gives (the same, except for distractors and junk, whose two
/// draws are kept apart so that the Market set stays what it always was).
struct SynthJob {
    enum Part { case train, query, gallery }
    let part: Part, pid: Int, app: Int, cam: Int, named: Int
}

/// Writes a dataset in `cfg.layout` under `root` (created; existing files are replaced):
/// the Market/Duke folders, CUHK03-NP's detected/ and labeled/ folders of PNGs, MSMT17's
/// image folders and list files, or the list layout's CSV files over JPEG and PNG images.
public func writeSynthetic(_ cfg: SynthConfig, to root: String) throws -> SynthSummary {
    let (jobs, trainIds, testIds, summary) = synthJobs(cfg)
    let (files, lists) = synthFiles(cfg, jobs, trainIds: trainIds, testIds: testIds)
    try createFolder(root, what: "the synthetic data folder")
    for (name, lines) in lists {
        try (lines.joined(separator: "\n") + "\n").write(
            toFile: (root as NSString).appendingPathComponent(name), atomically: true, encoding: .utf8)
    }
    for dir in Set(files.flatMap { $0.paths.map { ($0 as NSString).deletingLastPathComponent } }) {
        try createFolder((root as NSString).appendingPathComponent(dir), what: "the synthetic data folder")
    }
    try renderSynthetic(cfg, jobs, files, root: root)
    return summary
}

/// Who appears where: training ids in 2+ cameras, test ids with a query or two and gallery
/// images, then distractors (id 0) and junk (-1) where the layout has them.
func synthJobs(_ cfg: SynthConfig) -> (jobs: [SynthJob], trainIds: [Int], testIds: [Int], summary: SynthSummary) {
    var summary = SynthSummary()
    var jobs: [SynthJob] = []
    // Ids: distinct 4-digit numbers, training and test disjoint.
    var idRng = RNG(key: cfg.seed, 0x1D5)
    var pool = Array(1...9000)
    idRng.shuffle(&pool)
    let trainIds = pool.prefix(cfg.trainIds).sorted(),
        testIds = pool.dropFirst(cfg.trainIds).prefix(cfg.testIds).sorted()
    summary.trainIds = trainIds.count
    summary.testIds = testIds.count
    for pid in trainIds {
        var r = RNG(key: cfg.seed, UInt64(pid), 1)
        let cams = (1...cfg.cameras).shuffled(using: &r).prefix(2 + r.below(cfg.cameras - 1))
        for cam in cams {
            for _ in 0..<(1 + r.below(4)) {
                jobs.append(SynthJob(part: .train, pid: pid, app: pid, cam: cam, named: cam))
            }
        }
    }
    for pid in testIds {
        var r = RNG(key: cfg.seed, UInt64(pid), 2)
        let cams = Array((1...cfg.cameras).shuffled(using: &r).prefix(2 + r.below(cfg.cameras - 1)))
        // One query from the first camera (sometimes two cameras); gallery in all its cameras.
        for qc in cams.prefix(r.uniform() < 0.3 ? 2 : 1) {
            jobs.append(SynthJob(part: .query, pid: pid, app: pid, cam: qc, named: qc))
        }
        for cam in cams {
            for _ in 0..<(1 + r.below(3)) {
                jobs.append(SynthJob(part: .gallery, pid: pid, app: pid, cam: cam, named: cam))
            }
        }
    }
    if cfg.layout != .msmt17 && cfg.layout != .cuhk03 {
        var r = RNG(key: cfg.seed, 3)
        for i in 0..<Swift.max(1, cfg.testIds) {
            let named = 1 + r.below(cfg.cameras)
            jobs.append(SynthJob(part: .gallery, pid: 0, app: 100_000 + i, cam: 1 + r.below(cfg.cameras), named: named))
            summary.distractors += 1
        }
        for i in 0..<Swift.max(1, cfg.testIds / 2) {
            let named = 1 + r.below(cfg.cameras)
            jobs.append(
                SynthJob(part: .gallery, pid: -1, app: 200_000 + i, cam: 1 + r.below(cfg.cameras), named: named))
            summary.junk += 1
        }
    }
    for j in jobs {
        switch j.part {
        case .train: summary.train += 1
        case .query: summary.query += 1
        case .gallery: summary.gallery += 1
        }
    }
    return (jobs, trainIds, testIds, summary)
}

/// Where each image goes in the layout (paths relative to the root; CUHK03-NP's two
/// folders get the same image), whether it is a PNG, and the list files' lines.
func synthFiles(_ cfg: SynthConfig, _ jobs: [SynthJob], trainIds: [Int], testIds: [Int])
    -> (files: [(paths: [String], png: Bool)], lists: [String: [String]])
{
    let f = ReIDDataset.folders
    let msmtTrain = Dictionary(uniqueKeysWithValues: trainIds.enumerated().map { ($1, $0) })
    let msmtTest = Dictionary(uniqueKeysWithValues: testIds.enumerated().map { ($1, $0) })
    var lists: [String: [String]] = [:]
    var files: [(paths: [String], png: Bool)] = []
    for (k, j) in jobs.enumerated() {
        let frame = k + 1
        let id = j.pid < 0 ? "-1" : String(format: "%04d", j.pid)
        let folder = j.part == .train ? f.train : j.part == .query ? f.query : f.gallery
        switch cfg.layout {
        case .market:
            files.append((["\(folder)/\(id)_c\(j.named)s1_\(String(format: "%06d", frame * 25))_00.jpg"], false))
        case .duke: files.append((["\(folder)/\(id)_c\(j.named)_f\(String(format: "%07d", frame * 25)).jpg"], false))
        case .cuhk03:
            let name = "\(folder)/\(id)_c\(j.named)_\(frame).png"
            files.append((["detected/" + name, "labeled/" + name], true))
        case .msmt17:
            let pid = j.part == .train ? msmtTrain[j.pid]! : msmtTest[j.pid]!
            let rel = String(
                format: "%04d/%04d_%03d_%02d_0303morning_%04d_0.jpg", pid, pid, frame % 1000, j.named, frame)
            let list =
                j.part == .train
                ? (frame % 10 == 0 ? "list_val.txt" : "list_train.txt")
                : j.part == .query ? "list_query.txt" : "list_gallery.txt"
            lists[list, default: []].append("\(rel) \(pid)")
            files.append(([(j.part == .train ? "train/" : "test/") + rel], false))
        case .list:
            let part = j.part == .train ? "train" : j.part == .query ? "query" : "gallery"
            let rel = "images/\(part)/img_\(String(format: "%05d", frame)).\(frame % 2 == 0 ? "png" : "jpg")"
            lists[part + ".csv", default: ["path,pid,camid"]].append("\(rel),\(j.pid),\(j.named)")
            files.append(([rel], frame % 2 == 0))
        }
    }
    return (files, lists)
}

/// Renders and encodes every image in parallel; each image's randomness is keyed by its index.
func renderSynthetic(_ cfg: SynthConfig, _ jobs: [SynthJob], _ files: [(paths: [String], png: Bool)], root: String)
    throws
{
    var failure: Error?
    let lock = NSLock()
    DispatchQueue.concurrentPerform(iterations: jobs.count) { k in
        let job = jobs[k]
        var ar = RNG(key: cfg.seed, UInt64(job.app), 0xA99)
        let app = Appearance(&ar)
        var rng = RNG(key: cfg.seed, UInt64(k), 0x1A6E)
        var img = renderPedestrian(app, cam: job.cam, width: cfg.width, height: cfg.height, rng: &rng)
        if job.pid == -1 { // junk: a badly cropped fragment
            img = img.resizedWithoutAntialias(width: cfg.width / 3, height: cfg.height / 4).resizedWithoutAntialias(
                width: cfg.width, height: cfg.height)
        }
        do {
            let data = files[k].png ? try img.pngData() : try img.jpegData(quality: 90)
            for p in files[k].paths {
                try data.write(to: URL(fileURLWithPath: (root as NSString).appendingPathComponent(p)))
            }
        } catch {
            lock.lock()
            failure = failure ?? error
            lock.unlock()
        }
    }
    if let failure { throw failure }
}

extension RNG: RandomNumberGenerator {}
