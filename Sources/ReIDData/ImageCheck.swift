// Checking a dataset's images before training: every file's header is read
// (decodable, a sane size, within data.max_pixels), in parallel, so that a
// damaged query or gallery image is found at the start and not at the first
// evaluation hours later.
import Foundation
import ReIDCore
import ReIDImage

/// Reads the headers of `paths` on `threads` threads; returns each failure (the path and
/// the error, which names the path), in path order: unreadable, or more than `maxPixels` pixels.
/// `progress(done, total)` is called now and then from one thread.
public func checkImageHeaders(
    _ paths: [String], threads: Int, maxPixels: Int = RGBImage.defaultMaxPixels,
    progress: ((Int, Int) -> Void)? = nil
) -> [(path: String, error: String)] {
    let lock = NSLock()
    var bad: [(Int, String)] = []
    var done = 0
    let chunk = 256, chunks = (paths.count + chunk - 1) / chunk
    DispatchQueue.concurrentPerform(iterations: Swift.max(1, Swift.min(threads, chunks))) { w in
        var c = w
        while c < chunks {
            var mine: [(Int, String)] = []
            for i in (c * chunk)..<Swift.min((c + 1) * chunk, paths.count) {
                do { try RGBImage.checkHeader(file: paths[i], maxPixels: maxPixels) } catch {
                    mine.append((i, "\(error)"))
                }
            }
            lock.lock()
            bad += mine
            done += Swift.min(chunk, paths.count - c * chunk)
            let d = done
            lock.unlock()
            if w == 0 { progress?(d, paths.count) }
            c += Swift.max(1, Swift.min(threads, chunks))
        }
    }
    return bad.sorted { $0.0 < $1.0 }.map { (paths[$0.0], $0.1) }
}
