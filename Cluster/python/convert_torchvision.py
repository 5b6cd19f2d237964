#!/usr/bin/env python3
"""Converts a torchvision ResNet state dict (.pth) to the safetensors file that
`model.pretrained` reads (torchvision names; fc.* is kept and ignored by reid-dist).
usage: convert_torchvision.py resnet50-0676ba61.pth pretrained/resnet50.safetensors
Needs torch and safetensors (not needed by reid-dist itself)."""
import os, sys
import torch
from safetensors.torch import save_file

src, dst = sys.argv[1], sys.argv[2]
sd = torch.load(src, map_location="cpu", weights_only=True)
if "state_dict" in sd: sd = sd["state_dict"]
sd = {k.removeprefix("module."): v.contiguous() for k, v in sd.items()}
os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
save_file(sd, dst, metadata={"format": "pt", "source": os.path.basename(src)})
print(f"wrote {len(sd)} tensors to {dst}")
