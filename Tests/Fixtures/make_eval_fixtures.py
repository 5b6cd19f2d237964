#!/usr/bin/env python3
"""Writes Tests/Fixtures/eval_torchreid.safetensors: the evaluation protocol and
re-ranking as torchreid computes them, for ReIDEvalTests. Needs numpy, torch
and `pip install --no-deps torchreid==0.2.5` (never needed by CI).

Features are random but clustered by identity (so the numbers are neither 0 nor
1), with continuous distances (numpy's argsort is not stable, so exact ties
would make torchreid's order arbitrary; ties are tested by hand-worked cases).
The gallery holds distractors (id 0) and junk (id -1); torchreid's loaders drop
junk before evaluating, so torchreid sees the gallery without it, while the
fixture keeps it: reid-dist must ignore junk itself and agree."""
import importlib.util, os, sys
import numpy as np
import torch
from safetensors.numpy import save_file

def load(mod, rel):
    # The two modules alone: importing the torchreid package pulls in scipy, gdown, ...
    base = os.path.join(importlib.util.find_spec("torchreid").submodule_search_locations[0], "reid")
    spec = importlib.util.spec_from_file_location(mod, os.path.join(base, rel))
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m

rank = load("rank", "metrics/rank.py")
rerank = load("rerank", "utils/rerank.py")

rng = np.random.default_rng(5)
ids, d = 30, 16
centres = rng.normal(size=(ids + 1, d))
def make(n, with_junk):
    pids = rng.integers(1, ids + 1, size=n)
    if with_junk:
        pids[rng.random(n) < 0.1] = 0
        pids[rng.random(n) < 0.05] = -1
    cams = rng.integers(1, 7, size=n)
    f = centres[np.maximum(pids, 0)] * 0.8 + rng.normal(size=(n, d))
    return f.astype(np.float32), pids.astype(np.int64), cams.astype(np.int64)

qf, qp, qc = make(60, False)
gf, gp, gc = make(400, True)
out = {"qf": qf, "qp": qp, "qc": qc, "gf": gf, "gp": gp, "gc": gc}

def sqeuclid(a, b):
    a = a.astype(np.float64); b = b.astype(np.float64)
    return (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T

def minp(distmat, q_pids, g_pids, q_camids, g_camids):
    # Our own statement of mINP (fast-reid's definition): per valid query,
    # number of correct images / position of the last one among kept images.
    vals = []
    for i in range(len(q_pids)):
        order = np.argsort(distmat[i], kind="stable")
        keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        hits = (g_pids[order][keep] == q_pids[i])
        if hits.any():
            vals.append(hits.sum() / (np.nonzero(hits)[0].max() + 1))
    return float(np.mean(vals))

keep = gp != -1
for name, dist in [("euclidean", sqeuclid(qf, gf))]:
    out[f"{name}.dist"] = dist.astype(np.float32)
    d32 = dist.astype(np.float32)
    cmc, mAP = rank.eval_market1501(d32[:, keep], qp, gp[keep], qc, gc[keep], 50)
    out[f"{name}.cmc"] = cmc.astype(np.float64); out[f"{name}.mAP"] = np.array([mAP])
    out[f"{name}.mINP"] = np.array([minp(d32[:, keep], qp, gp[keep], qc, gc[keep])])
    # Re-ranking as torchreid's engine calls it: distance matrices of the kept images.
    gk = gf[keep]
    final = rerank.re_ranking(sqeuclid(qf, gk).astype(np.float32), sqeuclid(qf, qf).astype(np.float32),
                              sqeuclid(gk, gk).astype(np.float32), k1=20, k2=6, lambda_value=0.3)
    out[f"{name}.rerank.dist"] = final.astype(np.float32)
    cmc, mAP = rank.eval_market1501(final, qp, gp[keep], qc, gc[keep], 50)
    out[f"{name}.rerank.cmc"] = cmc.astype(np.float64); out[f"{name}.rerank.mAP"] = np.array([mAP])
    print(name, "rank-1", cmc[0], "mAP", mAP)

here = os.path.dirname(os.path.abspath(__file__))
# C order: re_ranking returns a transposed (Fortran-ordered) view, and
# safetensors.numpy writes the raw buffer.
out = {k: np.ascontiguousarray(v) for k, v in out.items()}
save_file(out, os.path.join(here, "eval_torchreid.safetensors"), metadata={"made_by": "make_eval_fixtures.py", "torchreid": "0.2.5"})
print("wrote eval_torchreid.safetensors")
