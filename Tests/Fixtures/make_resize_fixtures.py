#!/usr/bin/env python3
"""Writes resize_pillow.safetensors: Pillow's Image.resize(size, Image.BILINEAR) of synthetic RGB
images of many sizes, for ImageTests.testResizeEqualsPillow (which needs no Python).

The inputs are a formula both sides compute exactly:
    v(x, y, c) = (x * 37 + y * 91 + c * 53 + (x * y) % 29 * 7 + (x ^ (y * 3)) % 17) % 256
Each case is a tensor 'W1xH1->W2xH2' of shape (H2, W2, 3), uint8. The committed file was written
with Pillow 10.4.0, whose two passes run horizontal first (as Pillow's Resample.c always did and
reid-dist does); Pillow 13 runs the vertical pass first when that is cheaper, which moves 3 of
these 23 cases (both sides shrunk by different non-integer factors) by one grey level.
usage: make_resize_fixtures.py [OUT]   (needs numpy, Pillow and safetensors)"""
import sys

import numpy as np
import PIL
from PIL import Image
from safetensors.numpy import save_file

# (input width, input height, output width, output height): shrinking by up to 15x, enlarging,
# one side only, identity, odd sizes.
CASES = [(200, 400, 32, 64), (400, 800, 64, 128), (97, 211, 32, 64), (32, 64, 64, 128), (50, 60, 32, 64),
         (64, 128, 64, 128), (333, 170, 32, 64), (1000, 2000, 32, 64), (32, 64, 32, 128), (100, 128, 32, 128),
         (3, 5, 32, 64), (1, 1, 16, 32), (640, 480, 32, 64), (129, 257, 32, 64), (63, 127, 64, 128),
         (256, 512, 64, 128), (500, 300, 64, 32), (77, 333, 32, 64), (48, 96, 24, 48), (720, 1280, 32, 64),
         (64, 128, 31, 17), (301, 601, 32, 64), (45, 22, 128, 64)]


def source(w, h):
    x = np.arange(w)[None, :, None]
    y = np.arange(h)[:, None, None]
    c = np.arange(3)[None, None, :]
    return ((x * 37 + y * 91 + c * 53 + (x * y) % 29 * 7 + (x ^ (y * 3)) % 17) % 256).astype(np.uint8)


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else __file__.replace("make_resize_fixtures.py", "resize_pillow.safetensors")
    tensors = {}
    for w1, h1, w2, h2 in CASES:
        img = Image.fromarray(source(w1, h1), "RGB").resize((w2, h2), Image.BILINEAR)
        tensors[f"{w1}x{h1}->{w2}x{h2}"] = np.asarray(img, dtype=np.uint8).copy()
    save_file(tensors, out, metadata={"producer": "make_resize_fixtures.py", "pillow": PIL.__version__})
    print(f"wrote {len(tensors)} cases to {out} (Pillow {PIL.__version__})")
