#!/usr/bin/env python3
"""Writes the torch.save fixtures that TorchFileTests read with no Python.

Run once by anyone with torch (never needed by CI), from the repository root:
    python3 Tests/Fixtures/make_torch_files.py

- resnet18w4.pth           a ResNet-18 of stem width 4 with torchvision's names (and an fc
                           layer, as torchvision's files have), state dict, zip format;
                           fc.weight is saved as a transposed view (non-contiguous strides)
- resnet18w4-legacy.pth    the same state dict in the legacy (pre-1.6) format
- resnet18w4.safetensors   the same tensors, contiguous, for a tensor-by-tensor comparison
- malicious.pth            a zip-format file whose pickle would call os.system if unpickled
                           by Python (saving it runs nothing)
Batch-norm statistics are random (not 0/1), so that a loader mixing them up is seen."""
import os, sys
import torch
from safetensors.torch import save_file

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "Cluster", "python"))
from reid_dist_torch import Backbone

torch.manual_seed(20261128)
net = Backbone(18, 4, 2)
net.fc = torch.nn.Linear(net.channels, 10)
for m in net.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.normal_(0, 0.1); m.running_var.uniform_(0.5, 1.5)
        m.weight.data.uniform_(0.5, 1.5); m.bias.data.normal_(0, 0.1)
        m.num_batches_tracked.fill_(17)
sd = net.state_dict()
sd["fc.weight"] = torch.randn(net.channels, 10).t()       # a view with strides (1, 10)
assert not sd["fc.weight"].is_contiguous()
torch.save(sd, os.path.join(here, "resnet18w4.pth"))
torch.save(sd, os.path.join(here, "resnet18w4-legacy.pth"), _use_new_zipfile_serialization=False)
save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(here, "resnet18w4.safetensors"))


class Evil:
    def __reduce__(self):
        return (os.system, ("echo reid-dist-ran-code > /tmp/reid-dist-pwned",))


torch.save({"conv1.weight": Evil()}, os.path.join(here, "malicious.pth"))
for f in ["resnet18w4.pth", "resnet18w4-legacy.pth", "resnet18w4.safetensors", "malicious.pth"]:
    print(f, os.path.getsize(os.path.join(here, f)), "bytes")
