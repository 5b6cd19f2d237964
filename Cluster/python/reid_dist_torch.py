#!/usr/bin/env python3
"""The reid-dist network in PyTorch, built from a checkpoint's own description.

A reid-dist model.safetensors carries its architecture and preprocessing in its
__metadata__ (depth, width, last_stride, groups, branches, classes, input size,
mean, std, eval_flip). `load(path)` builds the matching torch module, loads the
weights with load_state_dict(strict=True) and returns it in eval mode; calling it
on an (N, 3, H, W) float tensor of RGB images normalised as the metadata says
gives the L2-normalised inference features, as `reid-dist extract` computes them.

    import reid_dist_torch as rd
    model, card = rd.load("runs/market1501/checkpoints/epoch-0120/model.safetensors")
    x = rd.preprocess(list_of_HxWx3_uint8_arrays, card)        # resized, normalised
    features = rd.features(model, x, flip=card["eval_flip"])   # (N, D), rows of norm 1

Needs torch, numpy, safetensors (and Pillow for `preprocess` to resize);
command line: `python3 reid_dist_torch.py MODEL.safetensors [FEATURES.safetensors]`
checks the load and, given a feature file written by reid-dist from the same
model and images, compares the features."""
import json
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

STAGES = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}


def conv_bn(cin, cout, k, stride=1, pad=0):
    return nn.Conv2d(cin, cout, k, stride, pad, bias=False), nn.BatchNorm2d(cout)


class Block(nn.Module):
    """A residual block with torchvision's parameter names (conv1/bn1/..., downsample.0/.1)."""

    def __init__(self, kind, cin, planes, stride):
        super().__init__()
        out = planes * (4 if kind == "bottleneck" else 1)
        if kind == "basic":
            shapes = [(cin, planes, 3, stride, 1), (planes, planes, 3, 1, 1)]
        else:  # stride on the 3x3 (torchvision v1.5)
            shapes = [(cin, planes, 1, 1, 0), (planes, planes, 3, stride, 1), (planes, out, 1, 1, 0)]
        for i, s in enumerate(shapes, 1):
            conv, bn = conv_bn(*s)
            setattr(self, f"conv{i}", conv)
            setattr(self, f"bn{i}", bn)
        self.n = len(shapes)
        self.downsample = nn.Sequential(*conv_bn(cin, out, 1, stride)) if stride != 1 or cin != out else None

    def forward(self, x):
        y = x
        for i in range(1, self.n + 1):
            y = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(y))
            if i < self.n:
                y = F.relu(y)
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class Backbone(nn.Module):
    def __init__(self, depth, width, last_stride):
        super().__init__()
        kind, counts = STAGES[depth]
        self.conv1, self.bn1 = conv_bn(3, width, 7, 2, 3)
        cin = width
        for s, n in enumerate(counts):
            planes = width << s
            stride = 1 if s == 0 else (last_stride if s == 3 else 2)
            blocks = []
            for b in range(n):
                blocks.append(Block(kind, cin, planes, stride if b == 0 else 1))
                cin = planes * (4 if kind == "bottleneck" else 1)
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.channels = cin

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        for s in range(1, 5):
            x = getattr(self, f"layer{s}")(x)
        return x


class Net(nn.Module):
    """backbone.* (torchvision names) and head.groups.{g}.bn / .classifiers.{b} as reid-dist writes them."""

    def __init__(self, depth, width, last_stride, groups, branches, classes):
        super().__init__()
        self.backbone = Backbone(depth, width, last_stride)
        d = self.backbone.channels // groups
        self.head = nn.Module()
        self.head.groups = nn.ModuleList()
        for _ in range(groups):
            g = nn.Module()
            g.bn = nn.BatchNorm1d(d)
            g.classifiers = nn.ModuleList(nn.Linear(d, classes, bias=False) for _ in range(branches))
            self.head.groups.append(g)

    def forward(self, x):
        pooled = self.backbone(x).mean(dim=(2, 3))
        self.pooled = pooled  # what a metric loss sees in training (before the group batch norms)
        parts = pooled.chunk(len(self.head.groups), dim=1)
        hidden = [g.bn(p) for g, p in zip(self.head.groups, parts)]
        if self.training:
            return [[c(h) for c in g.classifiers] for g, h in zip(self.head.groups, hidden)]
        return F.normalize(torch.cat(hidden, dim=1), dim=1)


def training_net(classes, depth=50, width=64, last_stride=1, groups=4, branches=2):
    """A freshly initialised network for training in PyTorch (benchmarks, reference comparisons):
    PyTorch's default initialisation, classifiers drawn from N(0, 0.001^2) as the method does."""
    net = Net(depth, width, last_stride, groups, branches, classes)
    for g in net.head.groups:
        for c in g.classifiers:
            nn.init.normal_(c.weight, std=0.001)
    return net


def loss(logits, y, eps=0.1, pooled=None, kind="ce", ce_weight=1.0, triplet_weight=1.0, **triplet):
    """The training loss as reid-dist computes it (`loss.*`). ce: the grouped multi-branch loss, the
    mean over groups and branches of label-smoothed cross-entropy (targets (1 - eps) one-hot + eps / K);
    triplet: `triplet_loss` on `pooled` (the model's `pooled` after a training forward); ce+triplet:
    their weighted sum."""
    total = 0
    if kind != "triplet":
        terms = [F.cross_entropy(l, y, label_smoothing=eps) for group in logits for l in group]
        total = ce_weight * sum(terms) / len(terms)
    if kind != "ce":
        total = total + triplet_weight * triplet_loss(pooled, y, **triplet)
    return total


def triplet_loss(f, y, margin=0.3, soft=False, distance="euclidean"):
    """Batch-hard triplet loss (Hermans et al. 2017) in float64, as reid-dist's TripletLoss: per
    anchor the farthest image of its identity (never itself) and the nearest of another;
    max(0, margin + d_ap - d_an), or log(1 + exp(d_ap - d_an)) with `soft`; the mean over anchors
    that have both. Distances: euclidean sqrt(max(|a|^2 + |b|^2 - 2 a.b, 1e-12)), or cosine 1 - cos."""
    f = f.double()
    g = f @ f.t()
    sq = g.diagonal()
    if distance == "euclidean":
        d = (sq[:, None] + sq[None, :] - 2 * g).clamp(min=1e-12).sqrt()
    else:
        n = sq.sqrt().clamp(min=1e-12)
        d = 1 - g / (n[:, None] * n[None, :])
    same = y[:, None] == y[None, :]
    pos = same & ~torch.eye(len(y), dtype=torch.bool)
    neg = ~same
    dap = d.masked_fill(~pos, float("-inf")).max(dim=1).values
    dan = d.masked_fill(~neg, float("inf")).min(dim=1).values
    valid = pos.any(dim=1) & neg.any(dim=1)
    if not valid.any():
        return f.sum() * 0
    x = (dap - dan)[valid]
    return (F.softplus(x) if soft else (margin + x).clamp(min=0)).mean()


def train_step(model, opt, x, y, bf16=False):
    """One SGD step as the benchmarks time it: forward and loss (under bf16 autocast when asked:
    bf16 operands, float32 weights and accumulation), backward, the optimizer."""
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        value = loss(model(x), y)
    value.backward()
    opt.step()
    return value


def card_of(path):
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    if "depth" not in meta:
        raise SystemExit(f"{path}: no model description in __metadata__ (written before reid-dist 0.5)")
    card = {k: int(meta[k]) for k in ("depth", "width", "last_stride", "groups", "branches", "classes", "input_height", "input_width")}
    card["mean"] = [float(v) for v in meta["mean"].split(",")]
    card["std"] = [float(v) for v in meta["std"].split(",")]
    card["eval_flip"] = meta.get("eval_flip") == "true"
    return card


def load(path):
    card = card_of(path)
    model = Net(card["depth"], card["width"], card["last_stride"], card["groups"], card["branches"], card["classes"])
    model.load_state_dict(load_file(path), strict=True)
    return model.eval(), card


def preprocess(images, card):
    """HxWx3 uint8 RGB arrays -> (N, 3, H, W) float tensor, resized with Pillow's BILINEAR (as
    reid-dist does, bit for bit: antialiased when shrinking) and normalised."""
    from PIL import Image
    h, w = card["input_height"], card["input_width"]
    mean, std = np.array(card["mean"], np.float32), np.array(card["std"], np.float32)
    out = [((np.asarray(Image.fromarray(im).resize((w, h), Image.BILINEAR), np.float32) / 255 - mean) / std).transpose(2, 0, 1) for im in images]
    return torch.from_numpy(np.stack(out))


@torch.no_grad()
def features(model, x, flip=True):
    f = model(x)
    if flip:
        f = F.normalize(f + model(x.flip(3)), dim=1)
    return f


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    model, card = load(sys.argv[1])
    print("loaded with strict=True:", json.dumps(card))
    if len(sys.argv) > 2:
        from PIL import Image
        with safe_open(sys.argv[2], framework="np") as f:
            theirs, paths = f.get_tensor("features"), json.loads(f.metadata()["paths"])
        x = preprocess([np.asarray(Image.open(p).convert("RGB")) for p in paths], card)
        mine = features(model, x, flip=card["eval_flip"]).numpy()
        worst = float(np.abs(mine - theirs).max())
        # float32 rounding of two engines (different summation orders) stays near 1e-5 on
        # L2-normalised features; a preprocessing or weight mismatch is orders of magnitude larger.
        tolerance = 1e-4
        print(f"{len(paths)} images: max |torch - reid-dist| = {worst:.2e} (tolerance {tolerance:.0e}): "
              + ("PASS" if worst <= tolerance else "FAIL"))
        sys.exit(0 if worst <= tolerance else 1)
