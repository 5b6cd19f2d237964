#!/usr/bin/env python3
"""Writes the PyTorch-reference fixtures that ReIDCoreTests compare against.

Run once by anyone with torch (never needed by CI):
    python3 Tests/Fixtures/make_fixtures.py            # from the repository root

For each case it builds the network in PyTorch (Cluster/python/reid_dist_torch.py's
training_net), runs one training forward + backward on a fixed input and
stores, as safetensors: every state_dict entry before the step (names as the
reference), the input `x` (NCHW) and labels `y`, the loss, the backbone's
feature map `fmap` (NCHW), every parameter gradient as `grad.<name>`, the
running statistics after the training forward as `after.<name>`, and the
inference features `features` of the same input after that step's statistics.
The reference computes in float64; the fixture stores float32."""
import os, sys
import torch
from safetensors.torch import save_file

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "Cluster", "python"))
from reid_dist_torch import loss as loss_fn, training_net as GroupedMultiBranchNet

CASES = {  # name: (depth, width, last_stride, groups, branches, classes, batch, H, W[, loss settings])
    "r18w8": (18, 8, 1, 4, 2, 5, 2, 64, 32),
    "r50w4": (50, 4, 2, 2, 3, 7, 3, 48, 32),
    # triplet losses: 3 identities x 2 images, so every anchor has a positive and negatives
    "r18w8-ce-triplet": (18, 8, 1, 4, 2, 5, 6, 64, 32, dict(kind="ce+triplet", ce_weight=1.0, triplet_weight=0.5, margin=0.3)),
    "r18w8-triplet-soft-cosine": (18, 8, 1, 4, 2, 5, 6, 64, 32, dict(kind="triplet", soft=True, distance="cosine")),
}

def make(name, depth, width, last_stride, groups, branches, classes, batch, h, w, losses=None):
    torch.manual_seed(1234)
    m = GroupedMultiBranchNet(classes, depth, width, last_stride, groups, branches)
    # Non-trivial affine and running statistics, so loading them is tested too.
    with torch.no_grad():
        for k, v in m.state_dict().items():
            if k.endswith(".weight") and v.dim() == 1: v.uniform_(0.5, 1.5)
            if k.endswith(".bias"): v.uniform_(-0.2, 0.2)
            if k.endswith("running_mean"): v.uniform_(-0.1, 0.1)
            if k.endswith("running_var"): v.uniform_(0.8, 1.2)
        for g in m.head.groups:
            for c in g.classifiers: c.weight.normal_(0, 0.05)
    out = {k: v.clone().contiguous() for k, v in m.state_dict().items()}
    x = torch.randn(batch, 3, h, w)
    y = torch.randint(0, classes, (batch,)) if losses is None else torch.tensor([0, 0, 3, 3, 1, 1])
    # The reference runs in float64 from these float32 values (exactly
    # representable), so the fixture holds the true result, not float32 noise:
    # batch norm over few values per channel amplifies rounding to ~1e-2 in
    # some gradients of a float32 run, PyTorch's own included.
    m = m.double(); x64 = x.double()
    m.train()
    seen = {}
    m.backbone.register_forward_hook(lambda mod, inp, o: seen.update(fmap=o))
    logits = m(x64)
    fmap = seen["fmap"]
    loss = loss_fn(logits, y, eps=0.1, pooled=m.pooled, **(losses or {}))
    loss.backward()
    f32 = lambda t: t.detach().float() if t.is_floating_point() else t.detach()
    out["x"] = x; out["y"] = y; out["loss"] = f32(loss).reshape(1); out["fmap"] = f32(fmap)
    for k, p in m.named_parameters():
        out["grad." + k] = f32(p.grad if p.grad is not None else torch.zeros_like(p))   # unused by the loss: zero
    for k, v in m.state_dict().items():
        if "running" in k or "num_batches" in k:
            out["after." + k] = f32(v)
    m.eval()
    with torch.no_grad():
        out["features"] = f32(m(x64))
    meta = {"case": name, "spec": repr(dict(depth=depth, width=width, last_stride=last_stride, groups=groups,
                                            branches=branches, classes=classes)), "torch": torch.__version__,
            "loss": repr(losses or dict(kind="ce"))}
    path = os.path.join(here, f"reference_{name}.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path, metadata=meta)
    print(f"wrote {path}: loss {loss.item():.6f}, {len(out)} tensors")

if __name__ == "__main__":
    # python3 make_fixtures.py [CASE ...]: only those cases (default: all)
    for n, c in CASES.items():
        if len(sys.argv) == 1 or n in sys.argv[1:]:
            make(n, *c)
