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
        self.width = width; self.height = height
        pixels = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) { pixels[3 * i] = fill.0; pixels[3 * i + 1] = fill.1; pixels[3 * i + 2] = fill.2 }
    }
    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3)
        self.width = width; self.height = height; self.pixels = pixels
    }

    /// The largest image any reader decodes, in pixels (`data.max_pixels`): a larger one is
    /// refused from its header, before its pixels take memory (a 20000x20000 JPEG would
    /// take 1.2 GB as RGB). Process-wide: set once from the configuration.
    public nonisolated(unsafe) static var maxPixels = 40_000_000

    /// The image formats read, told apart by their first bytes (not the file name).
    public enum Format { case jpeg, png }
    public static func format(of data: Data) -> Format? {
        if data.count >= 3 && data[data.startIndex] == 0xFF && data[data.startIndex + 1] == 0xD8 && data[data.startIndex + 2] == 0xFF { return .jpeg }
        if data.count >= 8 && Array(data.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] { return .png }
        return nil
    }

    /// Decodes JPEG or PNG bytes; `path` names the source in errors.
    public init(data: Data, path: String) throws {
        switch Self.format(of: data) {
        case .png: try self.init(png: data, path: path)
        case .jpeg: try self.init(jpeg: data, path: path)
        case nil: throw ImageError(path, data.isEmpty ? "empty file" : "neither a JPEG nor a PNG file (first bytes \(data.prefix(4).map { String(format: "%02x", $0) }.joined(separator: " ")))")
        }
    }

    /// Reads and decodes an image file (JPEG or PNG).
    public init(file path: String) throws {
        if let problem = InputFile.problem(path) { throw ImageError(path, problem) }
        guard let data = FileManager.default.contents(atPath: path) else { throw ImageError(path, "cannot read file") }
        try self.init(data: data, path: path)
    }

    /// Decodes JPEG bytes; `path` names the source in errors.
    public init(jpeg data: Data, path: String) throws {
        try self.init(data, path: path, format: "JPEG", decode: rd_jpeg_decode, free: rd_free)
    }

    /// Decodes PNG bytes (libpng's simplified API: errors are returned, never longjmp-ed).
    public init(png data: Data, path: String) throws {
        try self.init(data, path: path, format: "PNG", decode: rd_png_decode, free: rd_png_free)
    }

    /// Both C decoders share one signature: (bytes, size, max pixels, &rgb, &w, &h, err, errlen).
    typealias Decoder = (UnsafePointer<UInt8>?, Int, Int, UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?,
                         UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<CChar>?, Int) -> Int32

    private init(_ data: Data, path: String, format: String, decode: Decoder, free: (UnsafeMutableRawPointer?) -> Void) throws {
        var out: UnsafeMutablePointer<UInt8>?
        var w: Int32 = 0, h: Int32 = 0
        var err = [CChar](repeating: 0, count: 256)
        let limit = Self.maxPixels
        let rc = data.withUnsafeBytes { raw -> Int32 in
            guard let base = raw.bindMemory(to: UInt8.self).baseAddress else { return -2 }
            return decode(base, raw.count, limit, &out, &w, &h, &err, err.count)
        }
        if rc == -2 { throw ImageError(path, "empty file") }
        if rc == -3 { throw ImageError(path, "\(w)x\(h) pixels, more than data.max_pixels = \(limit); not decoded") }
        guard rc == 0, let out else { throw ImageError(path, "not a readable \(format) (\(String(cString: err)))") }
        defer { free(out) }
        width = Int(w); height = Int(h)
        pixels = Array(UnsafeBufferPointer(start: out, count: width * height * 3))
    }

    /// Checks an image file's header only: readable JPEG or PNG, a sane size, within
    /// `maxPixels`. Returns (width, height).
    @discardableResult
    public static func checkHeader(file path: String) throws -> (width: Int, height: Int) {
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
            let rc = data.withUnsafeBytes { rd_jpeg_header($0.bindMemory(to: UInt8.self).baseAddress!, $0.count, &w, &h, &err, err.count) }
            guard rc == 0 else { throw ImageError(path, "not a readable JPEG (\(String(cString: err)))") }
        case .png:
            let rc = data.withUnsafeBytes { rd_png_header($0.bindMemory(to: UInt8.self).baseAddress!, $0.count, &w, &h, &err, err.count) }
            guard rc == 0 else { throw ImageError(path, "not a readable PNG (\(String(cString: err)))") }
        case nil:
            throw ImageError(path, "neither a JPEG nor a PNG file")
        }
        guard w > 0, h > 0 else { throw ImageError(path, "\(w)x\(h) pixels") }
        guard Int(w) * Int(h) <= maxPixels else { throw ImageError(path, "\(w)x\(h) pixels, more than data.max_pixels = \(maxPixels)") }
        return (Int(w), Int(h))
    }

    /// PNG bytes of the image.
    public func pngData() throws -> Data {
        var out: UnsafeMutablePointer<UInt8>?
        var size = 0
        var err = [CChar](repeating: 0, count: 256)
        let rc = pixels.withUnsafeBufferPointer { rd_png_encode($0.baseAddress!, Int32(width), Int32(height), &out, &size, &err, err.count) }
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

    /// Bilinear resize with half-pixel centres (as PIL / torchvision, no antialias).
    public func resized(width ow: Int, height oh: Int) -> RGBImage {
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
                pixels[i] = color.0; pixels[i + 1] = color.1; pixels[i + 2] = color.2
            }
        }
    }
}
