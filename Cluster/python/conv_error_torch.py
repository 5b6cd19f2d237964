#!/usr/bin/env python3
"""PyTorch's own float32 error on 3x3 convolutions, for `reid-dist bench convs --torch-python PY`.

Arguments: shapes as CIN,COUT,STRIDE,H,W (padding 1, one image each). For each
shape the same input, output gradient and weights as `reid-dist bench convs`
(normal values from splitmix64 + Box-Muller, bit for bit as reid-dist's
sharedNormals, rounded to float32; weights scaled to Kaiming's std); forward, input gradient and weight gradient computed in
float32 (PyTorch's default CPU path) and in float64; printed as one JSON list of
[forward, dX, dW] errors, each the largest |float32 - float64| over the largest
|float64| value. Needs torch (never needed by the build, tests or CI)."""
import json, sys

import numpy as np

import torch


def normals(n, seed, scale=1.0):
    """splitmix64 from `seed`, 2 uniforms per value, Box-Muller's cosine branch, x scale, as float32."""
    m = (1 << 64) - 1
    idx = np.arange(1, 2 * n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (np.uint64(seed) + idx * np.uint64(0x9E3779B97F4A7C15)) & np.uint64(m)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = ((z >> np.uint64(11)).astype(np.float64) + 0.5) / 9007199254740992.0
    u1, u2 = u[0::2], u[1::2]
    v = np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2) * scale
    return torch.from_numpy(v.astype(np.float32))


def errors(cin, cout, stride, h, w):
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    x = normals(cin * h * w, 1).reshape(1, cin, h, w)
    dy = normals(cout * ho * wo, 2).reshape(1, cout, ho, wo)
    wt = normals(cout * cin * 9, 3, (2.0 / (cout * 9)) ** 0.5).reshape(cout, cin, 3, 3)
    out = []
    for dtype in (torch.float64, torch.float32):
        xi = x.to(dtype).requires_grad_(); wi = wt.to(dtype).requires_grad_()
        y = torch.nn.functional.conv2d(xi, wi, stride=stride, padding=1)
        y.backward(dy.to(dtype))
        out.append((y.detach().double(), xi.grad.double(), wi.grad.double()))
    return [float((b - a).abs().max() / a.abs().max()) for a, b in zip(*out)]


if __name__ == "__main__":
    torch.set_num_threads(1)
    shapes = [tuple(int(v) for v in a.split(",")) for a in sys.argv[1:]]
    print(json.dumps([errors(*s) for s in shapes]))
