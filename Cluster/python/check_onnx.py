#!/usr/bin/env python3
"""Checks an ONNX model written by `reid-dist export --check-images ...`.

Runs onnx.checker on the model, then onnxruntime on the images stored in the
check file beside it (MODEL.check.safetensors), at each batch size given, and
compares the features with the ones reid-dist computed for the same images.

Usage: check_onnx.py MODEL.onnx [--batches 1,5] [--tolerance 1e-4]
Needs numpy, onnx and onnxruntime (pip; no torch). Prints one line per batch
size and exits 1 when any feature differs by more than the tolerance.
"""
import argparse, json, struct, sys

import numpy as np


def read_safetensors(path):
    """The tensors (float32/int64) and metadata of a safetensors file, with numpy only."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    kinds = {"F32": np.float32, "I64": np.int64}
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data[begin:end], dtype=kinds[info["dtype"]]).reshape(info["shape"])
    return out, meta


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--batches", default="1,5", help="batch sizes to run, comma-separated")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed |onnx - reid-dist|")
    a = ap.parse_args()

    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(a.model, full_check=True)
    model = onnx.load(a.model)
    print(f"onnx.checker: ok (opset {model.opset_import[0].version}, IR {model.ir_version}, "
          f"{len(model.graph.node)} nodes)")
    check = a.model[: -len(".onnx")] + ".check.safetensors"
    t, meta = read_safetensors(check)
    images, want = t["images"], t["features"]
    sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    worst = 0.0
    for b in [int(x) for x in a.batches.split(",")]:
        b = min(b, len(images))
        got = np.concatenate([sess.run(["features"], {"images": images[i:i + b]})[0]
                              for i in range(0, len(images), b)])
        err = float(np.abs(got - want).max())
        worst = max(worst, err)
        print(f"batch {b}: {len(images)} images, {got.shape[1]} features, max |onnxruntime - reid-dist| = {err:.3e}")
    ok = worst <= a.tolerance
    print(("ok" if ok else "FAILED") + f": largest difference {worst:.3e}, tolerance {a.tolerance:g}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
