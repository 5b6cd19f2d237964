// RGB8 images: JPEG and PNG decode/encode (libjpeg-turbo through CJPEG, libpng
// through CPNG; the format is told by the file's first bytes), bilinear
// resize, and the few drawing operations the ranked-list pictures need.
import CJPEG
import CPNG
import Foundation
import ReIDCore

public struct ImageError: Error, CustomStringConvertible {
    public let description: String
    public init(_ path: String, _ reason: String) { description = "\(path): \(reason)" }
}

/// Packed RGB, 8 bits per channel, row-major.
public struct RGBImage {
    public let width: Int, height: Int
    public var pixels: [UInt8]
    public init(width: Int, height: Int, fill: (UInt8, UInt8, UInt8) = (0, 0, 0)) {
        self.width = width
        self.height = height
        pixels = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            pixels[3 * i] = fill.0
            pixels[3 * i + 1] = fill.1
            pixels[3 * i + 2] = fill.2
        }
    }
    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3)
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// The largest image a reader decodes unless told otherwise, in pixels (`data.max_pixels`'s
    /// default): a larger one is refused from its header, before its pixels take memory (a
    /// 20000x20000 JPEG would take 1.2 GB as RGB).
    public static let defaultMaxPixels = 40_000_000

    /// The image formats read, told apart by their first bytes (not the file name).
    public enum Format { case jpeg, png }
    public static func format(of data: Data) -> Format? {
        if data.count >= 3 && data[data.startIndex] == 0xFF && data[data.startIndex + 1] == 0xD8
            && data[data.startIndex + 2] == 0xFF
        {
            return .jpeg
        }
        if data.count >= 8 && Array(data.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] { return .png }
        return nil
    }

    /// Decodes JPEG or PNG bytes of at most `maxPixels` pixels; `path` names the source in errors.
    public init(data: Data, path: String, maxPixels: Int = defaultMaxPixels) throws {
        switch Self.format(of: data) {
        case .png: try self.init(png: data, path: path, maxPixels: maxPixels)
        case .jpeg: try self.init(jpeg: data, path: path, maxPixels: maxPixels)
        case nil:
            throw ImageError(
                path,
                data.isEmpty
                    ? "empty file"
                    : "neither a JPEG nor a PNG file (first bytes \(data.prefix(4).map { String(format: "%02x", $0) }.joined(separator: " ")))"
            )
        }
    }

    /// Reads and decodes an image file (JPEG or PNG).
    public init(file path: String, maxPixels: Int = defaultMaxPixels) throws {
        if let problem = InputFile.problem(path) { throw ImageError(path, problem) }
        guard let data = FileManager.default.contents(atPath: path) else { throw ImageError(path, "cannot read file") }
        try self.init(data: data, path: path, maxPixels: maxPixels)
    }

    /// Decodes JPEG bytes; `path` names the source in errors.
    public init(jpeg data: Data, path: String, maxPixels: Int = defaultMaxPixels) throws {
        try self.init(data, path: path, format: "JPEG", decode: rd_jpeg_decode, free: rd_free, limit: maxPixels)
    }

    /// Decodes PNG bytes (libpng's simplified API: errors are returned, never longjmp-ed).
    public init(png data: Data, path: String, maxPixels: Int = defaultMaxPixels) throws {
        try self.init(data, path: path, format: "PNG", decode: rd_png_decode, free: rd_png_free, limit: maxPixels)
    }

    /// Both C decoders share one signature: (bytes, size, max pixels, &rgb, &w, &h, err, errlen).
    typealias Decoder = (
        UnsafePointer<UInt8>?, Int, Int, UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?,
        UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<CChar>?, Int
    ) -> Int32

    private init(
        _ data: Data, path: String, format: String, decode: Decoder, free: (UnsafeMutableRawPointer?) -> Void,
        limit: Int
    ) throws {
        var out: UnsafeMutablePointer<UInt8>?
        var w: Int32 = 0, h: Int32 = 0
        var err = [CChar](repeating: 0, count: 256)
        let rc = data.withUnsafeBytes { raw -> Int32 in
            guard let base = raw.bindMemory(to: UInt8.self).baseAddress else { return -2 }
            return decode(base, raw.count, limit, &out, &w, &h, &err, err.count)
        }
        if rc == -2 { throw ImageError(path, "empty file") }
        if rc == -3 { throw ImageError(path, "\(w)x\(h) pixels, more than data.max_pixels = \(limit); not decoded") }
        guard rc == 0, let out else { throw ImageError(path, "not a readable \(format) (\(String(cString: err)))") }
        defer { free(out) }
        width = Int(w)
        height = Int(h)
        pixels = Array(UnsafeBufferPointer(start: out, count: width * height * 3))
    }

    /// Checks an image file's header only: readable JPEG or PNG, a sane size, within
    /// `maxPixels`. Returns (width, height).
    @discardableResult
    public static func checkHeader(file path: String, maxPixels: Int = defaultMaxPixels) throws -> (
        width: Int, height: Int
    ) {
        if let problem = InputFile.problem(path) { throw ImageError(path, problem) }
        guard let fh = FileHandle(forReadingAtPath: path) else { throw ImageError(path, "cannot read file") }
        defer { try? fh.close() }
        // Headers sit at the start; 256 KB holds them with EXIF segments (at most 64 KB each).
        let data = (try? fh.read(upToCount: 262_144)) ?? Data()
        guard !data.isEmpty else { throw ImageError(path, "empty file") }
        var w: Int32 = 0, h: Int32 = 0
        var err = [CChar](repeating: 0, count: 256)
        switch format(of: data) {
        case .jpeg:
            let rc = data.withUnsafeBytes {
                rd_jpeg_header($0.bindMemory(to: UInt8.self).baseAddress!, $0.count, &w, &h, &err, err.count)
            }
            guard rc == 0 else { throw ImageError(path, "not a readable JPEG (\(String(cString: err)))") }
        case .png:
            let rc = data.withUnsafeBytes {
                rd_png_header($0.bindMemory(to: UInt8.self).baseAddress!, $0.count, &w, &h, &err, err.count)
            }
            guard rc == 0 else { throw ImageError(path, "not a readable PNG (\(String(cString: err)))") }
        case nil:
            throw ImageError(path, "neither a JPEG nor a PNG file")
        }
        guard w > 0, h > 0 else { throw ImageError(path, "\(w)x\(h) pixels") }
        guard Int(w) * Int(h) <= maxPixels else {
            throw ImageError(path, "\(w)x\(h) pixels, more than data.max_pixels = \(maxPixels)")
        }
        return (Int(w), Int(h))
    }

    /// PNG bytes of the image.
    public func pngData() throws -> Data {
        var out: UnsafeMutablePointer<UInt8>?
        var size = 0
        var err = [CChar](repeating: 0, count: 256)
        let rc = pixels.withUnsafeBufferPointer {
            rd_png_encode($0.baseAddress!, Int32(width), Int32(height), &out, &size, &err, err.count)
        }
        guard rc == 0, let out else { throw ImageError("<png>", "cannot encode (\(String(cString: err)))") }
        defer { rd_png_free(out) }
        return Data(bytes: out, count: size)
    }

    public func jpegData(quality: Int = 90) throws -> Data {
        var out: UnsafeMutablePointer<UInt8>?
        var size = 0
        var err = [CChar](repeating: 0, count: 256)
        let rc = pixels.withUnsafeBufferPointer {
            rd_jpeg_encode($0.baseAddress, Int32(width), Int32(height), Int32(quality), &out, &size, &err, err.count)
        }
        guard rc == 0, let out else { throw ImageError("<jpeg>", "encoding failed (\(String(cString: err)))") }
        defer { rd_free(out) }
        return Data(bytes: out, count: size)
    }

    /// Resized as Pillow's `Image.resize(size, Image.BILINEAR)` does, bit for bit on the same pixels
    /// (what torchvision's `Resize` does to PIL images, and so torchreid's and fast-reid's pipelines):
    /// a triangle filter widened by the scale when shrinking (antialiased), exact interpolation when
    /// enlarging; horizontal pass first, each pass in Pillow's 22-bit fixed point and rounded to
    /// 8 bits (Pillow's Resample.c: precompute_coeffs, normalize_coeffs_8bpc, ImagingResampleInner).
    public func resized(width ow: Int, height oh: Int) -> RGBImage {
        precondition(ow >= 1 && oh >= 1 && width >= 1 && height >= 1)
        if ow == width && oh == height { return self }
        let hc = Self.pillowCoefficients(inSize: width, outSize: ow)
        let vc = Self.pillowCoefficients(inSize: height, outSize: oh)
        var src = self
        if ow != width {
            // only the rows the vertical pass reads
            let first = oh != height ? vc.bounds[0].start : 0
            let last = oh != height ? vc.bounds[oh - 1].start + vc.bounds[oh - 1].count : height
            var tmp = RGBImage(width: ow, height: last - first)
            tmp.pixels.withUnsafeMutableBufferPointer { out in
                pixels.withUnsafeBufferPointer { inp in
                    for y in 0..<(last - first) {
                        let row = (y + first) * width * 3
                        for x in 0..<ow {
                            let (start, count) = hc.bounds[x]
                            Self.filterPixel(
                                inp, from: row + start * 3, step: 3, hc.weights, x * hc.ksize, count, into: out,
                                at: (y * ow + x) * 3)
                        }
                    }
                }
            }
            src = tmp
        }
        guard oh != height else { return src }
        let shift = ow != width ? vc.bounds[0].start : 0 // the horizontal pass kept rows from there
        var out = RGBImage(width: ow, height: oh)
        out.pixels.withUnsafeMutableBufferPointer { out in
            src.pixels.withUnsafeBufferPointer { inp in
                for y in 0..<oh {
                    let (start, count) = vc.bounds[y]
                    let k = y * vc.ksize
                    for x in 0..<ow {
                        Self.filterPixel(
                            inp, from: ((start - shift) * ow + x) * 3, step: ow * 3, vc.weights, k, count, into: out,
                            at: (y * ow + x) * 3)
                    }
                }
            }
        }
        return out
    }

    /// Pillow's fixed point: 32 - 8 - 2 fraction bits, sums started at one half.
    private static let precisionBits = 22
    private static let half = 1 << (precisionBits - 1)

    /// One output pixel of a pass: the `count` input pixels from `first`, `step` bytes apart,
    /// weighted by weights[k...], in fixed point, rounded and clipped to 8 bits per channel.
    @inline(__always) private static func filterPixel(
        _ inp: UnsafeBufferPointer<UInt8>, from first: Int, step: Int, _ weights: [Int], _ k: Int, _ count: Int,
        into out: UnsafeMutableBufferPointer<UInt8>, at o: Int
    ) {
        var s0 = half, s1 = half, s2 = half
        for i in 0..<count {
            let p = first + i * step, w = weights[k + i]
            s0 += Int(inp[p]) * w
            s1 += Int(inp[p + 1]) * w
            s2 += Int(inp[p + 2]) * w
        }
        out[o] = clip8(s0)
        out[o + 1] = clip8(s1)
        out[o + 2] = clip8(s2)
    }
    @inline(__always) private static func clip8(_ v: Int) -> UInt8 {
        UInt8(Swift.max(0, Swift.min(255, v >> precisionBits)))
    }

    /// Pillow's `precompute_coeffs` for the bilinear filter (support 1) and `normalize_coeffs_8bpc`:
    /// for each output position its first input index, the count of inputs, and `ksize` weights each.
    static func pillowCoefficients(inSize: Int, outSize: Int) -> (
        bounds: [(start: Int, count: Int)], weights: [Int], ksize: Int
    ) {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = Swift.max(scale, 1)
        let support = 1.0 * filterScale
        let ksize = Int(support.rounded(.up)) * 2 + 1
        var bounds: [(start: Int, count: Int)] = []
        var weights = [Int](repeating: 0, count: outSize * ksize)
        var k = [Double](repeating: 0, count: ksize)
        for xx in 0..<outSize {
            let center = 0 + (Double(xx) + 0.5) * scale
            let ss = 1.0 / filterScale
            let xmin = Swift.max(0, Int(center - support + 0.5))
            let xmax = Swift.min(inSize, Int(center + support + 0.5)) - xmin
            var ww = 0.0
            for x in 0..<Swift.max(xmax, 0) {
                let t = abs((Double(x + xmin) - center + 0.5) * ss)
                k[x] = t < 1 ? 1 - t : 0
                ww += k[x]
            }
            for x in 0..<Swift.max(xmax, 0) {
                let v = ww != 0 ? k[x] / ww : k[x]
                weights[xx * ksize + x] =
                    v < 0 ? Int(-0.5 + v * Double(1 << precisionBits)) : Int(0.5 + v * Double(1 << precisionBits))
            }
            bounds.append((xmin, Swift.max(xmax, 0)))
        }
        return (bounds, weights, ksize)
    }

    /// The plain bilinear resize of reid-dist before 0.12 (half-pixel centres, no antialiasing), kept
    /// for the synthetic data only, so that `reid-dist synth` writes the same images as before.
    public func resizedWithoutAntialias(width ow: Int, height oh: Int) -> RGBImage {
        var out = RGBImage(width: ow, height: oh)
        let sx = Double(width) / Double(ow), sy = Double(height) / Double(oh)
        for y in 0..<oh {
            let fy = Swift.max(0, Swift.min(Double(height - 1), (Double(y) + 0.5) * sy - 0.5))
            let y0 = Int(fy), y1 = Swift.min(y0 + 1, height - 1), wy = fy - Double(y0)
            for x in 0..<ow {
                let fx = Swift.max(0, Swift.min(Double(width - 1), (Double(x) + 0.5) * sx - 0.5))
                let x0 = Int(fx), x1 = Swift.min(x0 + 1, width - 1), wx = fx - Double(x0)
                for c in 0..<3 {
                    let a = Double(pixels[(y0 * width + x0) * 3 + c]), b = Double(pixels[(y0 * width + x1) * 3 + c])
                    let d = Double(pixels[(y1 * width + x0) * 3 + c]), e = Double(pixels[(y1 * width + x1) * 3 + c])
                    let v = (a * (1 - wx) + b * wx) * (1 - wy) + (d * (1 - wx) + e * wx) * wy
                    out.pixels[(y * ow + x) * 3 + c] = UInt8(Swift.max(0, Swift.min(255, v.rounded())))
                }
            }
        }
        return out
    }

    /// Copies `img` with its top-left corner at (x, y), clipped to this image.
    public mutating func paste(_ img: RGBImage, x: Int, y: Int) {
        for r in 0..<img.height where y + r >= 0 && y + r < height {
            for c in 0..<img.width where x + c >= 0 && x + c < width {
                for k in 0..<3 { pixels[((y + r) * width + x + c) * 3 + k] = img.pixels[(r * img.width + c) * 3 + k] }
            }
        }
    }

    /// Fills a rectangle, clipped.
    public mutating func fill(x: Int, y: Int, width w: Int, height h: Int, _ color: (UInt8, UInt8, UInt8)) {
        for r in Swift.max(0, y)..<Swift.min(height, y + h) {
            for c in Swift.max(0, x)..<Swift.min(width, x + w) {
                let i = (r * width + c) * 3
                pixels[i] = color.0
                pixels[i + 1] = color.1
                pixels[i + 2] = color.2
            }
        }
    }
}
