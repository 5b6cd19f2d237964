#!/usr/bin/env python3
"""Writes inflating.pth: a torch.save zip whose one storage entry (data/0) is 64 MiB of zeros
compressed to about 64 KB, for a state dict whose tensor needs 16 floats. HostileTorchFileTests
check that it is refused from the entry's declared size, before anything is inflated.
usage: make_inflating_pth.py   (needs torch)"""
import os
import tempfile
import zipfile

import torch

here = os.path.dirname(os.path.abspath(__file__))
with tempfile.TemporaryDirectory() as tmp:
    base = os.path.join(tmp, "base.pth")
    torch.save({"w": torch.zeros(16)}, base)
    with zipfile.ZipFile(base) as zin, zipfile.ZipFile(os.path.join(here, "inflating.pth"), "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/data/0"):
                data = bytes(64 << 20)
            zout.writestr(info.filename, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
print("wrote", os.path.join(here, "inflating.pth"), os.path.getsize(os.path.join(here, "inflating.pth")), "bytes")
