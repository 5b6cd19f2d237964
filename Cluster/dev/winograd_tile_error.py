#!/usr/bin/env python3
"""Float32 error of larger Winograd tiles, against PyTorch's float32 direct convolution.

Why reid-dist runs F(2x2,3x3) and not F(3x3,3x3) or F(4x4,3x3): the issue's bound is
"no worse than 2x PyTorch's own float32 error" per 3x3 shape. This script builds the
Winograd matrices for any interpolation points (Toom-Cook: A^T and G from the points,
B^T solved exactly from the identity), runs the forward of one image per shape under
several precision set-ups, and prints each error as a multiple of PyTorch's float32
error on the same inputs (error = largest |error| / largest |value|, against float64).
The input gradient is the same forward with the flipped kernel, so it behaves alike.

Set-ups (columns):
  f32       as reid-dist runs F(2x2): tile transforms in float32, kernel transform in
            float64 rounded once, products summed in float32 in chunks of 128 channels
            (numpy's matmul is OpenBLAS's sgemm, as ours), chunks added in float32.
  f32+c8    tile transforms in float64 (rounded once), float32 sums of 8 channels
            (one register's FMA chain) added in float64, output transform in float64:
            what a custom micro-kernel flushing to double every 8 steps would give.
  f64sum    as f32+c8 but every product added in float64: the floor of float32
            operands (a dgemm's cost: twice sgemm's per multiplication).

Usage: winograd_tile_error.py [--shapes C@HxW,...] [--seed S]
Needs numpy; torch for the PyTorch column (without it, a float32 im2col GEMM in numpy
stands in and the header says so). Never needed by the build, tests or CI.
"""
import argparse
import sys

import numpy as np


def winograd_matrices(m, r, points):
    """A^T (m x n), G (n x r), B^T (n x n) of F(m, r) for n - 1 finite points and infinity."""
    n = m + r - 1
    if len(points) != n - 1:
        sys.exit(f"error: F({m},{r}) needs {n - 1} finite points, got {points}")
    at = np.zeros((m, n))
    g = np.zeros((n, r))
    for j, a in enumerate(points):
        f = np.prod([a - b for l, b in enumerate(points) if l != j])
        at[:, j] = [a ** i for i in range(m)]
        g[j, :] = [a ** k / f for k in range(r)]
    at[m - 1, n - 1] = 1
    g[n - 1, r - 1] = 1
    # y_i = sum_k g_k d_(i+k) for every g, d:  sum_t AT[i,t] G[t,k] BT[t,s] = [s == i + k]
    eqs, rhs = [], []
    for i in range(m):
        for k in range(r):
            for s in range(n):
                row = np.zeros((n, n))
                row[:, s] = at[i, :] * g[:, k]
                eqs.append(row.ravel())
                rhs.append(1.0 if s == i + k else 0.0)
    bt, _, rank, _ = np.linalg.lstsq(np.array(eqs), np.array(rhs), rcond=None)
    if rank != n * n:
        sys.exit(f"error: points {points} do not define F({m},{r}) (rank {rank})")
    bt = bt.reshape(n, n)
    check = np.einsum("it,tk,ts->iks", at, g, bt)
    want = np.array([[[1.0 if s == i + k else 0.0 for s in range(n)] for k in range(r)] for i in range(m)])
    assert np.abs(check - want).max() < 1e-9
    return at, g, bt


def tiles_of(x, m, n):
    """(C, H, W) padded by 1 -> (C, TH, TW, n, n) overlapping input tiles, float32."""
    c, h, w = x.shape
    th, tw = -(-h // m), -(-w // m)
    xp = np.zeros((c, th * m + 2, tw * m + 2), np.float32)
    xp[:, 1:h + 1, 1:w + 1] = x
    rows = [np.stack([xp[:, i * m:i * m + n, j * m:j * m + n] for j in range(tw)], 1) for i in range(th)]
    return np.stack(rows, 1)


def winograd_forward(x, wt, m, points, setup):
    at, g, bt = winograd_matrices(m, 3, points)
    n = m + 2
    c, h, w = x.shape
    k = wt.shape[0]
    d = tiles_of(x, m, n)
    _, th, tw, _, _ = d.shape
    if setup == "f32":
        b32 = bt.astype(np.float32)
        v = np.einsum("ab,ctsbd->ctsad", b32, d, dtype=np.float32)
        v = np.einsum("ctsad,ed->ctsae", v, b32, dtype=np.float32)
    else:
        v = np.einsum("ab,ctsbd,ed->ctsae", bt, d.astype(np.float64), bt).astype(np.float32)
    u = np.einsum("ab,kcbd,ed->kcae", g, wt.astype(np.float64), g).astype(np.float32)
    vm = v.reshape(c, th * tw, n * n).transpose(2, 0, 1)  # (n*n, C, tiles)
    um = u.reshape(k, c, n * n).transpose(2, 0, 1)  # (n*n, K, C)
    if setup == "f32":
        prod = np.zeros((n * n, k, th * tw), np.float32)
        for c0 in range(0, c, 128):
            prod += np.matmul(um[:, :, c0:c0 + 128], vm[:, c0:c0 + 128, :])
    elif setup == "f32+c8":
        prod = np.zeros((n * n, k, th * tw), np.float64)
        for c0 in range(0, c, 8):
            chain = np.zeros((n * n, k, th * tw), np.float32)
            for ci in range(c0, min(c, c0 + 8)):
                chain += um[:, :, ci:ci + 1] * vm[:, ci:ci + 1, :]
            prod += chain
    else:
        prod = np.matmul(um.astype(np.float64), vm.astype(np.float64))
    prod = prod.astype(np.float32).transpose(1, 2, 0).reshape(k, th, tw, n, n)
    if setup == "f32":
        a32 = at.astype(np.float32)
        y = np.einsum("ab,ktsbd->ktsad", a32, prod, dtype=np.float32)
        y = np.einsum("ktsad,ed->ktsae", y, a32, dtype=np.float32)
    else:
        y = np.einsum("ab,ktsbd,ed->ktsae", at, prod.astype(np.float64), at)
    return y.transpose(0, 1, 3, 2, 4).reshape(k, th * m, tw * m)[:, :h, :w]


def direct(x, wt, dtype):
    """Direct 3x3 convolution, padding 1, as an im2col GEMM in `dtype`."""
    c, h, w = x.shape
    xp = np.zeros((c, h + 2, w + 2), dtype)
    xp[:, 1:h + 1, 1:w + 1] = x
    cols = np.stack([xp[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], 1)
    return (wt.astype(dtype).reshape(wt.shape[0], -1) @ cols.reshape(c * 9, h * w)).reshape(-1, h, w)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="32@32x16,64@64x32,64@16x8,128@32x16,128@8x4,256@16x8,256@8x4,512@16x8",
                   help="C@HxW, comma-separated (Cin = Cout = C, one image): by default every 3x3 "
                        "stride-1 shape of ResNet-18/-50 at 256x128 and ResNet-18 w32 at 128x64")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    try:
        import torch
        import torch.nn.functional as tf
        torch.set_num_threads(1)
        baseline = "PyTorch float32"
    except ImportError:
        torch = None
        baseline = "numpy float32 im2col GEMM (torch not installed)"
    algorithms = [
        ("F(2x2) {0,1,-1}", 2, [0, 1, -1], ["f32"]),
        ("F(3x3) {0,1,-1,1/2}", 3, [0, 1, -1, 0.5], ["f32", "f64sum"]),
        ("F(4x4) {0,1,-1,2,-2}", 4, [0, 1, -1, 2, -2], ["f32", "f64sum"]),
        ("F(4x4) {0,1,-1,1/2,-2}", 4, [0, 1, -1, 0.5, -2], ["f32", "f32+c8", "f64sum"]),
    ]
    columns = [(name, m, pts, s) for name, m, pts, setups in algorithms for s in setups]
    shapes = []
    for shape in args.shapes.split(","):
        try:
            c, hw = shape.split("@")
            h, w = hw.split("x")
            shapes.append((int(c), int(h), int(w)))
        except ValueError:
            sys.exit(f"error: --shapes: '{shape}' is not C@HxW (e.g. 64@64x32)")
    print(f"error as a multiple of the baseline's, {baseline} (bound: 2.00x)")
    print("| shape | baseline error | " + " | ".join(f"{name} {s}" for name, _, _, s in columns) + " |")
    print("| --- " * (len(columns) + 2) + "|")
    rng = np.random.default_rng(args.seed)
    for c, h, w in shapes:
        x = rng.standard_normal((c, h, w)).astype(np.float32)
        wt = (rng.standard_normal((c, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)
        ref = direct(x, wt, np.float64)
        if torch is not None:
            base = tf.conv2d(torch.from_numpy(x[None]), torch.from_numpy(wt), padding=1)[0].numpy()
        else:
            base = direct(x, wt, np.float32)
        scale = np.abs(ref).max()
        err = lambda y: np.abs(y.astype(np.float64) - ref).max() / scale
        e0 = err(base)
        cells = [f"{err(winograd_forward(x, wt, m, pts, s)) / e0:.2f}x" for _, m, pts, s in columns]
        print(f"| {c}->{c}, {h}x{w} | {e0:.2e} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
