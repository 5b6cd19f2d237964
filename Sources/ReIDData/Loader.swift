// Turning batches of sample indices into tensors, with a background producer
// that prepares the next batches while the current step trains.
import Foundation
import ReIDCore
import ReIDImage

public struct Batch {
    public let images: Tensor // (N, 3, H, W), normalised
    /// The same images mirrored (flip-averaged evaluation), when asked for.
    public let mirrored: Tensor?
    public let labels: [Int]
    public let indices: [Int] // into the split's samples
    public let step: Int
}

public final class ImageLoader {
    public let samples: [Sample]
    public let height: Int, width: Int
    public let augment: AugmentConfig
    public let seed: UInt64
    public let skipBadImages: Bool
    /// The largest image decoded, in pixels (`data.max_pixels`).
    public let maxPixels: Int
    /// Unreadable images skipped so far (only with skipBadImages).
    public private(set) var skipped: [String] = []
    private let lock = NSLock()

    public init(
        samples: [Sample], height: Int, width: Int, augment: AugmentConfig, seed: UInt64, skipBadImages: Bool = false,
        maxPixels: Int = RGBImage.defaultMaxPixels
    ) {
        self.maxPixels = maxPixels
        self.samples = samples
        self.height = height
        self.width = width
        self.augment = augment
        self.seed = seed
        self.skipBadImages = skipBadImages
    }

    /// Decoded and resized to (H, W).
    public func image(_ i: Int) throws -> RGBImage {
        let img = try RGBImage(file: samples[i].path, maxPixels: maxPixels)
        return img.width == width && img.height == height ? img : img.resized(width: width, height: height)
    }

    /// One batch. `epoch`/`step` key the augmentation; `training` false turns
    /// augmentation off; `withMirror` also makes every image's mirror from the
    /// same decoded pixels (flip-averaged evaluation).
    public func batch(_ indices: [Int], epoch: Int, step: Int, training: Bool, withMirror: Bool = false) throws -> Batch
    {
        var kept: [Int] = [], images: [RGBImage] = []
        for i in indices {
            do {
                images.append(try image(i))
                kept.append(i)
            } catch {
                guard skipBadImages else { throw error }
                lock.lock()
                skipped.append("\(error)")
                lock.unlock()
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
    /// What the producer thread and the consumer share. The thread holds this, never the
    /// Prefetcher, so dropping a Prefetcher mid-epoch (an error) just cancels the thread.
    private final class Queue {
        let cond = NSCondition()
        var ready: [Int: Result<Batch, Error>] = [:]
        var produced = 0, consumed = 0, cancelled = false
    }
    private let q = Queue()
    public private(set) var waitSeconds = 0.0

    /// Starts producing `make(step)` for steps in `steps`, in order.
    public init(steps: Range<Int>, depth: Int = 2, make: @escaping (Int) throws -> Batch) {
        let q = self.q
        q.produced = steps.lowerBound
        q.consumed = steps.lowerBound
        let t = Thread {
            for s in steps {
                q.cond.lock()
                while !q.cancelled && q.produced - q.consumed >= depth { q.cond.wait() }
                let stop = q.cancelled
                q.cond.unlock()
                if stop { return }
                let r = Result { try make(s) }
                q.cond.lock()
                q.ready[s] = r
                q.produced = s + 1
                q.cond.broadcast()
                q.cond.unlock()
                if case .failure = r { return }
            }
        }
        t.name = "reid-dist prefetch"
        t.start()
    }

    /// The batch for `step` (steps must be taken in order); waits if it is not ready.
    public func next(_ step: Int) throws -> Batch {
        let t0 = Profile.now()
        q.cond.lock()
        while q.ready[step] == nil { q.cond.wait() }
        let r = q.ready.removeValue(forKey: step)!
        q.consumed = step + 1
        q.cond.broadcast()
        q.cond.unlock()
        waitSeconds += Profile.now() - t0
        return try r.get()
    }

    public func cancel() {
        q.cond.lock()
        q.cancelled = true
        q.cond.broadcast()
        q.cond.unlock()
    }
    deinit { cancel() }
}
