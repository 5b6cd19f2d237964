#!/usr/bin/env python3
"""PyTorch's training-step throughput for the grouped multi-branch network, on this machine: the
baseline `reid-dist bench --torch-python PY` compares with in the same run (optional; needs torch).

usage: torch_baseline.py [--threads 2] [--steps 5] [--precision fp32|bf16] [--cases a,b] [--json OUT]
Prints one line per case and memory layout: name, layout, precision, batch, median ms/step, images/s.
A step is forward, the loss, backward and an SGD step (momentum 0.9, weight decay 5e-4), as in
reid-dist's bench; the median of --steps steps after 2 warm-up steps. --precision bf16 runs the
forward and the loss under torch.autocast("cpu", torch.bfloat16): PyTorch's mixed precision."""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reid_dist_torch as rd  # noqa: E402

CASES = [  # name, depth, width, height, width of the image, batch, classes (as reid-dist bench's cases)
    ("r50-256x128-b16", 50, 64, 256, 128, 16, 751),
    ("r18-256x128-b32", 18, 64, 256, 128, 32, 751),
    ("r18w32-128x64-b32", 18, 32, 128, 64, 32, 751),
]


def step_time(depth, width, h, w, batch, classes, channels_last, steps, bf16):
    torch.manual_seed(0)
    m = rd.training_net(classes, depth, width, 1, 4, 2).train()
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(batch, 3, h, w), torch.randint(0, classes, (batch,))
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        rd.train_step(m, opt, x, y, bf16)
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--cases")
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = []
    for name, depth, width, h, w, batch, classes in CASES:
        if a.cases and name not in a.cases.split(","):
            continue
        for cl in (False, True):
            s = step_time(depth, width, h, w, batch, classes, cl, a.steps, a.precision == "bf16")
            row = {"case": name, "layout": "channels_last" if cl else "nchw", "precision": a.precision, "batch": batch,
                   "ms_per_step": s * 1e3, "images_per_second": batch / s}
            out.append(row)
            print(f"{name:20s} {row['layout']:14s} {a.precision} b={batch:<3d} {s * 1e3:9.1f} ms/step {batch / s:8.1f} img/s", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
