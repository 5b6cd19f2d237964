// Turning batches of sample indices into tensors, with a background producer
// that prepares the next batches while the current step trains.
import Foundation
import ReIDCore
import ReIDImage

public struct Batch {
    public let images: Tensor            // (N, 3, H, W), normalised
    /// The same images mirrored (flip-averaged evaluation), when asked for.
    public let mirrored: Tensor?
    public let labels: [Int]
    public let indices: [Int]            // into the split's samples
    public let step: Int
}

public final class ImageLoader {
    public let samples: [Sample]
    public let height: Int, width: Int
    public let augment: AugmentConfig
    public let seed: UInt64
    public let skipBadImages: Bool
    /// Unreadable images skipped so far (only with skipBadImages).
    public private(set) var skipped: [String] = []
    private let lock = NSLock()

    public init(samples: [Sample], height: Int, width: Int, augment: AugmentConfig, seed: UInt64, skipBadImages: Bool = false) {
        self.samples = samples; self.height = height; self.width = width
        self.augment = augment; self.seed = seed; self.skipBadImages = skipBadImages
    }

    /// Decoded and resized to (H, W).
    public func image(_ i: Int) throws -> RGBImage {
        let img = try RGBImage(jpegFile: samples[i].path)
        return img.width == width && img.height == height ? img : img.resized(width: width, height: height)
    }

    /// One batch. `epoch`/`step` key the augmentation; `training` false turns
    /// augmentation off; `withMirror` also makes every image's mirror from the
    /// same decoded pixels (flip-averaged evaluation).
    public func batch(_ indices: [Int], epoch: Int, step: Int, training: Bool, withMirror: Bool = false) throws -> Batch {
        var kept: [Int] = [], images: [RGBImage] = []
        for i in indices {
            do { images.append(try image(i)); kept.append(i) } catch {
                guard skipBadImages else { throw error }
                lock.lock(); skipped.append("\(error)"); lock.unlock()
            }
        }
        guard !kept.isEmpty else { throw DataError("batch \(step) of epoch \(epoch): no readable image") }
        let plane = 3 * height * width
        let t = Tensor([kept.count, 3, height, width], zero: false)
        let m = withMirror ? Tensor([kept.count, 3, height, width], zero: false) : nil
        for (b, i) in kept.enumerated() {
            var rng: RNG? = training ? RNG(key: seed, UInt64(epoch), UInt64(step), UInt64(b), UInt64(i)) : nil
            imageToTensor(images[b], t.ptr + b * plane, aug: training ? augment : .none, rng: &rng)
            if let m {
                var none: RNG? = nil
                imageToTensor(images[b], m.ptr + b * plane, aug: .none, rng: &none, mirror: true)
            }
        }
        return Batch(images: t, mirrored: m, labels: kept.map { samples[$0].label }, indices: kept, step: step)
    }
}

/// Prepares batches on a background thread, `depth` ahead of the consumer.
public final class Prefetcher {
    private let cond = NSCondition()
    private var ready: [Int: Result<Batch, Error>] = [:]
    private var produced = 0, consumed = 0, cancelled = false
    private let depth: Int
    private var thread: Thread?
    public private(set) var waitSeconds = 0.0

    /// Starts producing `make(step)` for steps in `steps`, in order.
    public init(steps: Range<Int>, depth: Int = 2, make: @escaping (Int) throws -> Batch) {
        self.depth = depth
        produced = steps.lowerBound; consumed = steps.lowerBound
        let end = steps.upperBound
        let t = Thread { [unowned self] in
            var s = steps.lowerBound
            while s < end {
                self.cond.lock()
                while !self.cancelled && self.produced - self.consumed >= depth { self.cond.wait() }
                let stop = self.cancelled
                self.cond.unlock()
                if stop { return }
                let r = Result { try make(s) }
                self.cond.lock()
                self.ready[s] = r; self.produced = s + 1
                self.cond.broadcast(); self.cond.unlock()
                if case .failure = r { return }
                s += 1
            }
        }
        t.name = "reid-dist prefetch"
        thread = t
        t.start()
    }

    /// The batch for `step` (steps must be taken in order); waits if it is not ready.
    public func next(_ step: Int) throws -> Batch {
        let t0 = Profile.now()
        cond.lock()
        while ready[step] == nil { cond.wait() }
        let r = ready.removeValue(forKey: step)!
        consumed = step + 1
        cond.broadcast(); cond.unlock()
        waitSeconds += Profile.now() - t0
        return try r.get()
    }

    public func cancel() { cond.lock(); cancelled = true; cond.broadcast(); cond.unlock() }
    deinit { cancel() }
}
