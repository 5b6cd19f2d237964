// Image to tensor: decode, bilinear resize to (H, W), optional horizontal
// flip, zero-pad then random crop, ImageNet mean/std normalisation, optional
// random erasing (the reid-strong-baseline order). Each random draw comes
// from a stream keyed by (seed, epoch, step, sample index), so it does not
// depend on which thread prepares the batch or when.
import Foundation
import ReIDCore
import ReIDImage

public struct AugmentConfig: Codable, Equatable {
    public var flip = 0.5 // probability
    public var pad = 10 // pixels of zero padding before the random crop; 0 = off
    public var erasing = 0.5 // probability
    public var erasingArea: ClosedRange<Double> = 0.02...0.4
    public var erasingAspect: ClosedRange<Double> = 0.3...3.3
    public init(flip: Double = 0.5, pad: Int = 10, erasing: Double = 0.5) {
        self.flip = flip
        self.pad = pad
        self.erasing = erasing
    }
    public static let none = AugmentConfig(flip: 0, pad: 0, erasing: 0)
}

public enum Normalize {
    public static let mean: [Float] = [0.485, 0.456, 0.406]
    public static let std: [Float] = [0.229, 0.224, 0.225]
}

/// Writes one (3, H, W) normalised image into `dst` from an RGB image already
/// resized to (H, W). `rng` nil means no augmentation (evaluation); `mirror`
/// forces a horizontal flip (flip-averaged evaluation).
public func imageToTensor(
    _ img: RGBImage, _ dst: UnsafeMutablePointer<Float>, aug: AugmentConfig,
    rng: inout RNG?, mirror: Bool = false
) {
    let h = img.height, w = img.width, plane = h * w
    var flip = mirror, dx = 0, dy = 0
    if var r = rng {
        if r.uniform() < aug.flip { flip.toggle() }
        if aug.pad > 0 {
            // Pad by p on every side, then crop (H, W) at offset (oy, ox) in [0, 2p]:
            // output (y, x) reads padded (y + oy, x + ox) = original (y + oy - p, x + ox - p).
            dy = r.below(2 * aug.pad + 1) - aug.pad
            dx = r.below(2 * aug.pad + 1) - aug.pad
        }
        rng = r
    }
    img.pixels.withUnsafeBufferPointer { px in
        for c in 0..<3 {
            let m = Normalize.mean[c], s = Normalize.std[c]
            let zero = (0 - m) / s // padding is black before normalisation
            let out = dst + c * plane
            for y in 0..<h {
                let sy = y + dy
                for x in 0..<w {
                    // The flip comes before pad+crop: out(y, x) = flipped(y + dy, x + dx).
                    var v = zero
                    if sy >= 0 && sy < h {
                        let cx = x + dx
                        if cx >= 0 && cx < w {
                            let ox = flip ? w - 1 - cx : cx
                            v = (Float(px[(sy * w + ox) * 3 + c]) / 255 - m) / s
                        }
                    }
                    out[y * w + x] = v
                }
            }
        }
    }
    if var r = rng, aug.erasing > 0 {
        if r.uniform() < aug.erasing { erase(dst, h: h, w: w, aug: aug, rng: &r) }
        rng = r
    }
}

/// Random erasing (Zhong et al. 2020): a rectangle of area in `erasingArea`
/// of the image and aspect in `erasingAspect` (log-uniform) set to 0, the
/// normalised mean colour; up to 100 attempts to fit it, as torchvision.
func erase(_ t: UnsafeMutablePointer<Float>, h: Int, w: Int, aug: AugmentConfig, rng: inout RNG) {
    let area = Double(h * w)
    for _ in 0..<100 {
        let target =
            area
            * (aug.erasingArea.lowerBound + rng.uniform() * (aug.erasingArea.upperBound - aug.erasingArea.lowerBound))
        let logLo = log(aug.erasingAspect.lowerBound), logHi = log(aug.erasingAspect.upperBound)
        let aspect = exp(logLo + rng.uniform() * (logHi - logLo))
        let eh = Int((target * aspect).squareRoot().rounded()), ew = Int((target / aspect).squareRoot().rounded())
        if eh < h && ew < w && eh > 0 && ew > 0 {
            let y0 = rng.below(h - eh + 1), x0 = rng.below(w - ew + 1)
            for c in 0..<3 {
                for y in y0..<(y0 + eh) { (t + c * h * w + y * w + x0).update(repeating: 0, count: ew) }
            }
            return
        }
    }
}
