// The per-plane Winograd transforms (input, output, output gradient) for a block of tile rows,
// vectorised with SIMD8 over the block's tiles as one flat run: tile (ty, tx) of the block is
// t = (ty - first row) * tw + tx, and every stream a transform reads or writes is laid out that
// way, so one loop covers all rows whatever the image width (ResNet-18 w32's 8x4 planes have
// 2 tiles per row, which left row-by-row loops with 2 iterations of scalar code).
// The arithmetic is the same, in the same order, as the formulas in Winograd.swift.
// Small planes (layer3 and layer4 of ResNet-18 w32: 8x4, 8 tiles) are transformed several whole
// images per call (`images`), whose tiles follow each other in the flat run as they do in the
// transformed tensors: the per-call and per-row set-up was most of their time.
// With AVX-512, planes with even sides and tw dividing 16 go to CKernels' group kernels instead
// (16 tiles a register, the same values bit for bit); these loops take every other case.

import CKernels

extension Winograd {
    /// Floats of scratch `inputTiles`, `outputTiles` and `outputGradTiles` need for planes of g,
    /// `images` at a time.
    static func tileScratch(_ g: WinogradTiles, images: Int = 1) -> Int {
        2 * rowScratch(g) + 8 * (images * (g.th + 1) * g.tw + 8)
    }

    /// Whole images per call of the whole-batch transforms: enough for about 256 tiles.
    static func imagesPerCall(_ g: WinogradTiles) -> Int {
        Swift.max(1, Swift.min(g.n, 256 / Swift.max(1, g.th * g.tw)))
    }

    /// Of `images` planes, how many the C kernels take in groups of 16 tiles (AVX-512: even H and W,
    /// tw dividing 16, whole groups of tile rows; `ckernels.h`); the loops below take the rest.
    @inline(__always)
    private static func inGroups(_ g: WinogradTiles, _ rows: Range<Int>, _ images: Int, _ path: Int32) -> Int {
        Int(
            reid_wino_groups(
                path, Int32(g.h), Int32(g.w), Int32(images), Int32(rows.lowerBound), Int32(rows.upperBound)))
    }

    /// Runs the C kernels on the images `inGroups` gives them (groups(their count)), the loops
    /// on the rest (loops(the first image left)).
    @inline(__always)
    private static func split(
        _ g: WinogradTiles, _ rows: Range<Int>, _ images: Int, _ path: Int32, groups: (Int32) -> Void,
        loops: (Int) -> Void
    ) {
        let done = inGroups(g, rows, images, path)
        if done > 0 { groups(Int32(done)) }
        if done < images { loops(done) }
    }

    /// The transform of tile rows `rows` of one image plane `src` (H x W): tile (ty, tx) goes to
    /// dst[(ty - rows.lowerBound) * tw + tx] of each of the 16 matrices, `plane` apart; with
    /// `images` > 1 (whole images only), of that many planes H x W apart, their tiles one after
    /// another. In C where `inGroups` says so, else `inputTilesLoop`.
    @inline(__always)
    static func inputTiles(
        _ src: UnsafePointer<Float>, _ g: WinogradTiles, rows: Range<Int>, images: Int = 1,
        _ dst: UnsafeMutablePointer<Float>, plane: Int, _ buf: UnsafeMutablePointer<Float>, path: Int32
    ) {
        let (h, w, ty0, ty1) = (Int32(g.h), Int32(g.w), Int32(rows.lowerBound), Int32(rows.upperBound))
        split(
            g, rows, images, path, groups: { reid_wino_input_groups(src, h, w, $0, ty0, ty1, dst, plane) },
            loops: { first in
                inputTilesLoop(
                    src + first * g.h * g.w, g, rows: rows, images: images - first, dst + first * rows.count * g.tw,
                    plane: plane, buf)
            })
    }

    /// Tile rows `rows` of one output plane (or `images` planes) from the products (`outputTilesLoop`).
    @inline(__always)
    static func outputTiles(
        _ src0: UnsafePointer<Float>, plane: Int, _ g: WinogradTiles, rows: Range<Int>, images: Int = 1,
        _ dst: UnsafeMutablePointer<Float>, accumulate: Bool, _ buf: UnsafeMutablePointer<Float>, path: Int32
    ) {
        let (h, w, ty0, ty1) = (Int32(g.h), Int32(g.w), Int32(rows.lowerBound), Int32(rows.upperBound))
        split(
            g, rows, images, path,
            groups: { reid_wino_output_groups(src0, plane, h, w, $0, ty0, ty1, dst, accumulate ? 1 : 0) },
            loops: { first in
                outputTilesLoop(
                    src0 + first * rows.count * g.tw, plane: plane, g, rows: rows, images: images - first,
                    dst + first * g.h * g.w,
                    accumulate: accumulate, buf)
            })
    }

    /// Tile rows `rows` of one plane of dY (or `images` planes), transformed (`outputGradTilesLoop`).
    @inline(__always)
    static func outputGradTiles(
        _ src: UnsafePointer<Float>, _ g: WinogradTiles, rows: Range<Int>, images: Int = 1,
        _ dst: UnsafeMutablePointer<Float>, plane: Int, _ buf: UnsafeMutablePointer<Float>, path: Int32
    ) {
        let (h, w, ty0, ty1) = (Int32(g.h), Int32(g.w), Int32(rows.lowerBound), Int32(rows.upperBound))
        split(
            g, rows, images, path, groups: { reid_wino_output_grad_groups(src, h, w, $0, ty0, ty1, dst, plane) },
            loops: { first in
                outputGradTilesLoop(
                    src + first * g.h * g.w, g, rows: rows, images: images - first, dst + first * rows.count * g.tw,
                    plane: plane, buf)
            })
    }

    /// One padded image row, read 16 floats at a time (tw rounded up to 8, both sides padded).
    private static func rowScratch(_ g: WinogradTiles) -> Int { 2 * ((g.tw + 7) / 8 * 8) + 18 }

    /// The loops of `inputTiles`: first d B on every padded input row the block touches (its even and odd columns split
    /// with SIMD16's evenHalf/oddHalf), kept as 8 flat arrays [row parity][column of d B][tile];
    /// then B^T (.) across each tile's 4 rows, one flat SIMD8 loop over the block's tiles.
    @inline(__always)
    private static func inputTilesLoop(
        _ src: UnsafePointer<Float>, _ g: WinogradTiles, rows: Range<Int>, images: Int,
        _ dst: UnsafeMutablePointer<Float>, plane: Int, _ buf: UnsafeMutablePointer<Float>
    ) {
        precondition(images == 1 || rows == 0..<g.th, "inputTiles: several images are transformed whole")
        let h = g.h, w = g.w, tw = g.tw, ty0 = rows.lowerBound, n = rows.count * tw
        let pad = rowScratch(g)
        // Two row buffers, row[k] = x[y][k - 1] (0 outside): the next row is copied into one while
        // the other is read, because 16-float loads right after a copy of a few floats to an offset
        // address wait for the copy to reach the cache (on 8x4 planes that wait was 40% of the time).
        var row = buf, next = buf + pad
        let slots = (rows.count + 1) * tw // an image's tile rows, and one more
        let len = images * slots + 8 // one array: all images' slots
        let arrays = buf + 2 * pad
        // 1. d B for padded rows p = 2 ty0 ..< 2 ty1 + 2 (input row p - 1): columns
        //    (a, b, c, d) = (e[tx], o[tx], e[tx+1], o[tx+1]) -> (a - c, b + c, c - b, b - d)
        row[0] = 0
        (row + 1 + w).update(repeating: 0, count: pad - 1 - w) // the padding, once:
        next[0] = 0
        (next + 1 + w).update(repeating: 0, count: pad - 1 - w) // rows overwrite 1...w only
        let pLo = 2 * ty0, pHi = 2 * rows.upperBound + 2
        @inline(__always) func copy(_ img: Int, _ p: Int, _ into: UnsafeMutablePointer<Float>) {
            let y = p - 1
            if y >= 0 && y < h { (into + 1).update(from: src + img * h * w + y * w, count: w) }
        }
        copy(0, pLo, row)
        for img in 0..<images {
            for p in pLo..<pHi {
                if p + 1 < pHi { copy(img, p + 1, next) } else if img + 1 < images { copy(img + 1, pLo, next) }
                defer { swap(&row, &next) }
                let r0 = arrays + (p & 1) * 4 * len + img * slots + ((p >> 1) - ty0) * tw
                let r1 = r0 + len, r2 = r1 + len, r3 = r2 + len
                let y = p - 1
                if y < 0 || y >= h {
                    r0.update(repeating: 0, count: tw)
                    r1.update(repeating: 0, count: tw)
                    r2.update(repeating: 0, count: tw)
                    r3.update(repeating: 0, count: tw)
                    continue
                }
                // 8 tiles at a time; a store past tw lands in the next tile row's slot (written later) or the padding
                var j = 0
                while j < tw {
                    let a = load16(row + 2 * j), b = load16(row + 2 * j + 2)
                    let e0 = a.evenHalf, o0 = a.oddHalf, e1 = b.evenHalf, o1 = b.oddHalf
                    store8(e0 - e1, r0 + j)
                    store8(o0 + e1, r1 + j)
                    store8(e1 - o0, r2 + j)
                    store8(o0 - o1, r3 + j)
                    j += 8
                }
            }
        }
        // 2. B^T (.) over tile t's rows a, b, c, d = (parity 0, t), (parity 1, t), (parity 0, t + tw), (parity 1, t + tw)
        @inline(__always) func column(_ k: Int, _ img: Int) {
            let ea = UnsafePointer(arrays + k * len + img * slots),
                ob = UnsafePointer(arrays + (4 + k) * len + img * slots)
            let q = dst + img * n
            let q0 = q + k * plane, q4 = q + (4 + k) * plane, q8 = q + (8 + k) * plane, q12 = q + (12 + k) * plane
            var t = 0
            while t + 8 <= n {
                let a = load8(ea + t), b = load8(ob + t), c = load8(ea + t + tw), d = load8(ob + t + tw)
                store8(a - c, q0 + t)
                store8(b + c, q4 + t)
                store8(c - b, q8 + t)
                store8(b - d, q12 + t)
                t += 8
            }
            while t < n {
                let a = ea[t], b = ob[t], c = ea[t + tw], d = ob[t + tw]
                q0[t] = a - c
                q4[t] = b + c
                q8[t] = c - b
                q12[t] = b - d
                t += 1
            }
        }
        for img in 0..<images {
            column(0, img)
            column(1, img)
            column(2, img)
            column(3, img)
        }
    }

    /// Tile rows `rows` of one output plane `dst` (H x W), or of `images` planes H x W apart, from
    /// the products at src0 (laid out as `inputTiles` writes them); adds into dst when `accumulate`. A^T (.) A for all the block's
    /// tiles in one flat loop into 4 arrays (top and bottom rows, left and right values), then
    /// each output row interleaves its left and right values 8 at a time.
    @inline(__always)
    private static func outputTilesLoop(
        _ src0: UnsafePointer<Float>, plane: Int, _ g: WinogradTiles, rows: Range<Int>, images: Int,
        _ dst: UnsafeMutablePointer<Float>, accumulate: Bool, _ buf: UnsafeMutablePointer<Float>
    ) {
        let h = g.h, w = g.w, tw = g.tw, n = images * rows.count * tw, len = n + 8
        let top0 = buf, top1 = buf + len, bot0 = top1 + len, bot1 = bot0 + len
        @inline(__always) func m(_ e: Int, _ t: Int) -> SIMD8<Float> { load8(src0 + e * plane + t) }
        @inline(__always) func s(_ e: Int, _ t: Int) -> Float { src0[e * plane + t] }
        var t = 0
        while t + 8 <= n {
            let p0 = m(0, t) + m(4, t) + m(8, t), p1 = m(1, t) + m(5, t) + m(9, t)
            let p2 = m(2, t) + m(6, t) + m(10, t), p3 = m(3, t) + m(7, t) + m(11, t)
            let r0 = m(4, t) - m(8, t) - m(12, t), r1 = m(5, t) - m(9, t) - m(13, t)
            let r2 = m(6, t) - m(10, t) - m(14, t), r3 = m(7, t) - m(11, t) - m(15, t)
            store8(p0 + p1 + p2, top0 + t)
            store8(p1 - p2 - p3, top1 + t)
            store8(r0 + r1 + r2, bot0 + t)
            store8(r1 - r2 - r3, bot1 + t)
            t += 8
        }
        while t < n {
            let p0 = s(0, t) + s(4, t) + s(8, t), p1 = s(1, t) + s(5, t) + s(9, t)
            let p2 = s(2, t) + s(6, t) + s(10, t), p3 = s(3, t) + s(7, t) + s(11, t)
            let r0 = s(4, t) - s(8, t) - s(12, t), r1 = s(5, t) - s(9, t) - s(13, t)
            let r2 = s(6, t) - s(10, t) - s(14, t), r3 = s(7, t) - s(11, t) - s(15, t)
            top0[t] = p0 + p1 + p2
            top1[t] = p1 - p2 - p3
            bot0[t] = r0 + r1 + r2
            bot1[t] = r1 - r2 - r3
            t += 1
        }
        for img in 0..<images {
            for (i, ty) in rows.enumerated() {
                for k in 0..<2 where 2 * ty + k < h {
                    let d = dst + img * h * w + (2 * ty + k) * w, at = (img * rows.count + i) * tw
                    let left = (k == 0 ? top0 : bot0) + at, right = (k == 0 ? top1 : bot1) + at
                    var x = 0 // output column, 8 at a time
                    while x + 8 <= w {
                        var v = SIMD8<Float>()
                        v.evenHalf = load(left + x / 2)
                        v.oddHalf = load(right + x / 2)
                        if accumulate { v += load(d + x) }
                        store(v, d + x)
                        x += 8
                    }
                    while x < w {
                        let value = (x & 1 == 0 ? left : right)[x >> 1]
                        d[x] = accumulate ? d[x] + value : value
                        x += 1
                    }
                }
            }
        }
    }

    /// Tile rows `rows` of one plane of dY (H x W), or of `images` planes H x W apart, written as
    /// `inputTiles` writes: each tile's
    /// 2x2 values split into 4 flat arrays (even and odd columns of its top and bottom rows,
    /// 0 outside the image), then A y A^T for all the block's tiles in one flat loop.
    @inline(__always)
    private static func outputGradTilesLoop(
        _ src: UnsafePointer<Float>, _ g: WinogradTiles, rows: Range<Int>, images: Int,
        _ dst: UnsafeMutablePointer<Float>, plane: Int, _ buf: UnsafeMutablePointer<Float>
    ) {
        let h = g.h, w = g.w, tw = g.tw, n = images * rows.count * tw, len = n + 8
        let pad = rowScratch(g)
        let row = buf, te = buf + pad, to = te + len, be = to + len, bo = be + len
        (row + w).update(repeating: 0, count: pad - w) // the padding, once: rows overwrite 0..<w only
        for img in 0..<images {
            for (i, ty) in rows.enumerated() {
                for k in 0..<2 {
                    let r = 2 * ty + k, at = (img * rows.count + i) * tw
                    let e = (k == 0 ? te : be) + at, o = (k == 0 ? to : bo) + at
                    guard r < h else {
                        e.update(repeating: 0, count: tw)
                        o.update(repeating: 0, count: tw)
                        continue
                    }
                    row.update(from: src + img * h * w + r * w, count: w)
                    var j = 0
                    while j < tw {
                        let a = load16(row + 2 * j)
                        store8(a.evenHalf, e + j)
                        store8(a.oddHalf, o + j)
                        j += 8
                    }
                }
            }
        }
        // A y = (y0, y0 + y1, y0 - y1, -y1) on each row (a: top, b: bottom), then (a, a + b, a - b, -b) across them
        @inline(__always) func out(_ e: Int, _ t: Int) -> UnsafeMutablePointer<Float> { dst + e * plane + t }
        @inline(__always) func put(_ c: Int, _ a: SIMD8<Float>, _ b: SIMD8<Float>, _ t: Int) {
            store8(a, out(c, t))
            store8(a + b, out(4 + c, t))
            store8(a - b, out(8 + c, t))
            store8(-b, out(12 + c, t))
        }
        @inline(__always) func put(_ c: Int, _ a: Float, _ b: Float, _ t: Int) {
            out(c, t)[0] = a
            out(4 + c, t)[0] = a + b
            out(8 + c, t)[0] = a - b
            out(12 + c, t)[0] = -b
        }
        var t = 0
        while t + 8 <= n {
            let ye = load8(te + t), yo = load8(to + t), ze = load8(be + t), zo = load8(bo + t)
            put(0, ye, ze, t)
            put(1, ye + yo, ze + zo, t)
            put(2, ye - yo, ze - zo, t)
            put(3, -yo, -zo, t)
            t += 8
        }
        while t < n {
            let ye = te[t], yo = to[t], ze = be[t], zo = bo[t]
            put(0, ye, ze, t)
            put(1, ye + yo, ze + zo, t)
            put(2, ye - yo, ze - zo, t)
            put(3, -yo, -zo, t)
            t += 1
        }
    }
}
