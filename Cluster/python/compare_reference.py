#!/usr/bin/env python3
"""Checks reid-dist's training and features against the PyTorch reference
(the network in PyTorch: Cluster/python/reid_dist_torch.py). Needs torch, safetensors, numpy
and Pillow; run from the repository root after `swift build -c release`:
    python3 Cluster/python/compare_reference.py [WORKDIR]
1. The reference initialises a ResNet-18 (width 32) grouped multi-branch net
   and saves it; reid-dist trains from it (model.init) with the sequential
   sampler, no augmentation and SGD, logging every step's loss.
2. The reference takes the same SGD steps on the same batches (same files,
   same order, same labels); the losses must agree within 1e-3 relative.
3. reid-dist's final checkpoint loads into the reference with strict=True, and
   both give the same inference features for the query images (< 1e-4)."""
import json, os, subprocess, sys
import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file, load_file

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(root, "Cluster", "python"))
from reid_dist_torch import loss as loss_fn, training_net as GroupedMultiBranchNet

work = sys.argv[1] if len(sys.argv) > 1 else "/tmp/reid-compare"
os.makedirs(work, exist_ok=True)
bin = os.path.join(root, ".build", "release", "reid-dist")
data = os.path.join(work, "data")
if not os.path.isdir(os.path.join(data, "bounding_box_train")):
    subprocess.run([bin, "synth", "--out", data, "--train-ids", "12", "--test-ids", "8", "--seed", "5"], check=True)

files = sorted(f for f in os.listdir(os.path.join(data, "bounding_box_train")) if f.endswith(".jpg"))
pids = [int(f.split("_")[0]) for f in files]
label = {p: i for i, p in enumerate(sorted(set(pids)))}
H, W, BATCH, LR = 128, 64, 16, 0.01
mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
def load(path):
    a = np.asarray(Image.open(path).convert("RGB").resize((W, H), Image.BILINEAR), dtype=np.float32) / 255
    return torch.from_numpy(((a - mean) / std).transpose(2, 0, 1).copy())

torch.manual_seed(0)
m = GroupedMultiBranchNet(len(label), depth=18, width=32, last_stride=1, groups=4, branches=2)
init = os.path.join(work, "init.safetensors")
save_file({k: v.contiguous() for k, v in m.state_dict().items()}, init)

run = os.path.join(work, "run")
subprocess.run(["rm", "-rf", run])
sets = ["data.root=" + data, "data.height=%d" % H, "data.width=%d" % W, "model.depth=18", "model.width=32", "model.init=" + init,
        "sampler.kind=sequential", "sampler.ids_per_batch=%d" % BATCH, "sampler.instances=1", "augment.flip=0", "augment.pad=0",
        "augment.erasing=0", "optim.name=sgd", "optim.lr=%g" % LR, "optim.momentum=0.9", "optim.weight_decay=5e-4",
        "schedule.epochs=1", "schedule.warmup_epochs=0", "schedule.milestones=[5]", "train.run_dir=" + run,
        "train.log_every=1", "train.eval_every=0", "eval.flip=false",
        # REID_CONV=gemm|winograd|auto (default: auto) chooses how reid-dist computes the 3x3 convolutions
        "model.conv_algorithm=" + os.environ.get("REID_CONV", "auto")]
cmd = [bin, "train", "--config", os.path.join(root, "Configs", "debug.yaml")] + sum((["--set", s] for s in sets), [])
subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
ours = [json.loads(l)["step_loss"] for l in open(os.path.join(run, "metrics.jsonl")) if '"train"' in l]

opt = torch.optim.SGD(m.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
m.train()
theirs = []
for s in range(0, len(files), BATCH):
    idx = list(range(s, min(s + BATCH, len(files))))
    if len(idx) < 2: continue
    x = torch.stack([load(os.path.join(data, "bounding_box_train", files[i])) for i in idx])
    y = torch.tensor([label[pids[i]] for i in idx])
    loss = loss_fn(m(x), y, eps=0.1)
    opt.zero_grad(); loss.backward(); opt.step()
    theirs.append(loss.item())
rel = max(abs(a - b) / abs(b) for a, b in zip(ours, theirs))
print(f"{len(theirs)} SGD steps; losses reid-dist {['%.5f' % v for v in ours[:4]]}... reference {['%.5f' % v for v in theirs[:4]]}...")
print(f"largest relative loss difference: {rel:.2e}  ({'ok' if rel < 1e-3 and len(ours) == len(theirs) else 'MISMATCH'})")

ckpt = open(os.path.join(run, "checkpoints", "latest")).read().strip()
sd = load_file(os.path.join(run, "checkpoints", ckpt, "model.safetensors"))
ref = GroupedMultiBranchNet(len(label), depth=18, width=32, last_stride=1, groups=4, branches=2)
ref.load_state_dict(sd, strict=True)
ref.eval()
feats = os.path.join(work, "query.safetensors")
subprocess.run([bin, "extract", "--config", os.path.join(root, "Configs", "debug.yaml"), "--checkpoint", os.path.join(run, "checkpoints", ckpt),
                "--split", "query", "--out", feats] + sum((["--set", s] for s in sets), []), check=True, stdout=subprocess.DEVNULL)
f = load_file(feats)
qfiles = json.loads(__import__("safetensors").safe_open(feats, "np").metadata()["paths"])
with torch.no_grad():
    rf = ref(torch.stack([load(p) for p in qfiles]))
diff = (rf - f["features"]).abs().max().item()
print(f"checkpoint loads into the reference with strict=True; features of {len(qfiles)} queries: max |difference| {diff:.2e} "
      f"({'ok' if diff < 1e-4 else 'MISMATCH'})")
