#!/usr/bin/env python3
"""PyTorch's own float32 error on 3x3 convolutions, for `reid-dist bench convs --torch-python PY`.

Arguments: shapes as CIN,COUT,STRIDE,H,W (padding 1, one image each). For each
shape: a normal(0, 1) input and output gradient and Kaiming-normal weights, as
reid-dist's bench uses; forward, input gradient and weight gradient computed in
float32 (PyTorch's default CPU path) and in float64; printed as one JSON list of
[forward, dX, dW] errors, each the largest |float32 - float64| over the largest
|float64| value. Needs torch (never needed by the build, tests or CI)."""
import json, sys

import torch


def errors(cin, cout, stride, h, w):
    g = torch.Generator().manual_seed(cin * 7919 + cout * 31 + h * 3 + w + stride)
    x = torch.randn(1, cin, h, w, generator=g, dtype=torch.float64)
    wt = torch.randn(cout, cin, 3, 3, generator=g, dtype=torch.float64) * (2.0 / (cout * 9)) ** 0.5
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    dy = torch.randn(1, cout, ho, wo, generator=g, dtype=torch.float64)
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
