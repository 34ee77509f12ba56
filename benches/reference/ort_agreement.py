"""Does tract compute what onnxruntime computes on the same ONNX file? Per image, on an
ImageFolder split: the share of images whose top-1 class agrees, and each runtime's top-1.

    python ort_agreement.py --model M.onnx --split SPLIT --prepare PNGS   # optional, see below
    fieldkit predict --model M.onnx --no-images --workers 1 --out DIR PNGS/*
    python ort_agreement.py --model M.onnx --split PNGS --predictions DIR/predictions.jsonl \
        [--json OUT] [--min-agree 0.995]

--prepare writes every image of SPLIT resized by Pillow to the card's input size as PNG
(lossless), class folders kept: both runtimes then read the same pixels, and the resize is the
identity in both, so what disagrees is the runtimes' arithmetic and nothing else. Without it,
the two JPEG decoders (libjpeg-turbo in Pillow, the image crate in fieldkit) differ by up to a
few grey levels, which flips the top-1 of images near a tie on a weak model.

onnxruntime runs with its default graph optimisations, as a user deploys it: a QDQ model is
then fused into its integer kernels (QLinearConv), the computation tract's QDQ fold
(third_party/tract PATCHES.md, patch 8) reproduces. The preprocessing is the model card's, in
Pillow (ort_quantize.prep); the two decoders differ by up to a few grey levels, which is part
of what the fp32 row of a comparison shows. Exits 1 when the agreement is below --min-agree.
"""
import argparse
import json
import os
import sys

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(__file__))
from ort_quantize import card_of, prep  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--split", required=True, help="ImageFolder split: one folder per class")
    p.add_argument("--predictions", help="fieldkit predict's predictions.jsonl")
    p.add_argument("--prepare", help="write SPLIT as PNGs at the card's input size into this folder, then exit")
    p.add_argument("--json")
    p.add_argument("--min-agree", type=float, default=0.0)
    a = p.parse_args()

    card = card_of(a.model)
    classes = card["classes"]
    if a.prepare:
        from PIL import Image

        size = card["input"]["shape"][-1]
        n = 0
        for c in classes:
            d = os.path.join(a.split, c)
            os.makedirs(os.path.join(a.prepare, c), exist_ok=True)
            for fname in sorted(os.listdir(d)) if os.path.isdir(d) else []:
                im = Image.open(os.path.join(d, fname)).convert("RGB").resize((size, size), Image.BILINEAR)
                im.save(os.path.join(a.prepare, c, os.path.splitext(fname)[0] + ".png"))
                n += 1
        print(f"{n} images of {a.split} as {size}x{size} PNGs in {a.prepare}")
        return
    if not a.predictions:
        p.error("--predictions is required (unless --prepare)")
    tract = {}
    with open(a.predictions) as f:
        for line in f:
            row = json.loads(line)
            tract[os.path.realpath(row["image"])] = row["classes"][0]["index"]

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    n = agree = ort_right = tract_right = 0
    missing = []
    for ci, c in enumerate(classes):
        d = os.path.join(a.split, c)
        for fname in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            path = os.path.realpath(os.path.join(d, fname))
            if path not in tract:
                missing.append(path)
                continue
            o = int(s.run(None, {name: prep(path, card)})[0][0].argmax())
            t = tract[path]
            n += 1
            agree += o == t
            ort_right += o == ci
            tract_right += t == ci
    if missing:
        print(f"error: {len(missing)} images of {a.split} have no tract prediction, e.g. {missing[0]}")
        sys.exit(2)
    if n == 0:
        print(f"error: no images under {a.split} for the card's classes")
        sys.exit(2)
    row = {
        "model": a.model,
        "images": n,
        "top1_agreement": agree / n,
        "onnxruntime_top1": ort_right / n,
        "tract_top1": tract_right / n,
        "top1_difference_pp": 100.0 * (tract_right - ort_right) / n,
    }
    print(
        f"{os.path.basename(a.model):24} {n} images: top-1 agrees on {agree} ({100 * agree / n:.2f} %); "
        f"top-1 onnxruntime {ort_right / n:.4f}, tract {tract_right / n:.4f} ({row['top1_difference_pp']:+.2f} pp)"
    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(row, f, indent=1)
    if agree / n < a.min_agree:
        print(f"agreement {agree / n:.4f} is below {a.min_agree}")
        sys.exit(1)


if __name__ == "__main__":
    main()
