"""Regenerates the goldens with the reference tools into a temp dir and compares them with
the checked-in ones, so a hand-edited golden cannot hide a metric bug.

    python check_goldens.py CHECKED_IN_DIR [--script make_goldens.py] [--shared PATH]
                            [--atol A --rtol R]

Floats must match exactly by default (metrics, preprocessing). Outputs of a network run in
onnxruntime depend on the CPU's kernels (AVX2 vs AVX-512 paths sum in another order): there
pass a tolerance, |a - b| <= atol + rtol * max(|a|, |b|); integers, keys, lengths, model bytes
and pixels stay exact either way.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image


def close(a, b, path, atol=1e-12, rtol=0.0):
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: keys differ"
        for k in a:
            close(a[k], b[k], f"{path}.{k}", atol, rtol)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, f"{path}[{i}]", atol, rtol)
    elif isinstance(a, float) or isinstance(b, float):
        tol = atol + rtol * max(abs(a), abs(b))
        assert abs(a - b) <= tol, f"{path}: {a} != {b} (tolerance {tol:g})"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("golden")
    ap.add_argument("--shared", default=None)
    ap.add_argument("--script", default="make_goldens.py")
    ap.add_argument("--atol", type=float, default=1e-12)
    ap.add_argument("--rtol", type=float, default=0.0)
    args = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, os.path.join(here, args.script), tmp]
        if args.shared:
            cmd += ["--shared", args.shared]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        checked = 0
        for root, _, files in os.walk(tmp):
            for f in sorted(files):
                fresh = os.path.join(root, f)
                rel = os.path.relpath(fresh, tmp)
                mine = os.path.join(args.golden, rel)
                assert os.path.exists(mine), f"{rel}: missing from the checked-in goldens"
                if f.endswith(".json"):
                    close(json.load(open(fresh)), json.load(open(mine)), rel, args.atol, args.rtol)
                elif f.endswith(".onnx"):
                    assert open(fresh, "rb").read() == open(mine, "rb").read(), f"{rel}: model bytes differ"
                elif f.endswith(".png"):
                    a = np.asarray(Image.open(fresh).convert("RGB"))
                    b = np.asarray(Image.open(mine).convert("RGB"))
                    assert a.shape == b.shape and (a == b).all(), f"{rel}: pixels differ"
                checked += 1
    how = "identical" if args.rtol == 0 and args.atol <= 1e-12 else f"within atol {args.atol:g} + rtol {args.rtol:g}"
    print(f"goldens reproduced by the reference tools: {checked} files {how}")


if __name__ == "__main__":
    main()
