#!/usr/bin/env python3
"""The usual Python evaluation, for `reid-dist bench eval --python PY`: numpy's
distance matrix (cosine, float32) and torchreid's evaluator: its compiled
Cython module when present (torchreid/reid/metrics/rank_cylib/rank_cy*.so),
else its Python one (far slower).
usage: eval_baseline.py QUERY.safetensors GALLERY.safetensors"""
import glob, importlib.util, os, sys, time
import numpy as np
from safetensors.numpy import load_file

def module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m

t0 = time.perf_counter()
q, g = load_file(sys.argv[1]), load_file(sys.argv[2])
keep = g["pids"] != -1                         # torchreid's loaders drop junk
qf = q["features"]; gf = g["features"][keep]
qf = qf / np.linalg.norm(qf, axis=1, keepdims=True); gf = gf / np.linalg.norm(gf, axis=1, keepdims=True)
dist = 1 - qf @ gf.T
# Load the evaluator files alone: importing the torchreid package pulls in scipy, gdown, ...
base = os.path.join(importlib.util.find_spec("torchreid").submodule_search_locations[0], "reid", "metrics")
compiled = glob.glob(os.path.join(base, "rank_cylib", "rank_cy*.so"))
if compiled:
    evaluate = module("rank_cy", compiled[0]).evaluate_cy
else:
    evaluate = module("rank", os.path.join(base, "rank.py")).evaluate_py
cmc, mAP = evaluate(dist, q["pids"], g["pids"][keep], q["camids"], g["camids"][keep], 50, False)
print(f"rank-1 {cmc[0]:.4f} mAP {mAP:.4f} in {time.perf_counter() - t0:.2f} s (cython: {bool(compiled)})")
