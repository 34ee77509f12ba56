"""onnxruntime's quantize_static beside fieldkit quantize, on the same model and the same
calibration images: accuracy (in onnxruntime and in tract), size, and latency in both runtimes.

    python ort_quantize.py quantize --model M.onnx --calib DIR --limit 300 --out ORT.onnx
    python ort_quantize.py eval --val DIR --model A.onnx [--model B.onnx ...] [--json OUT]

quantize: QDQ (or --format qoperator), per-channel int8 weights, uint8 activations, MinMax (ORT's default), the
calibration images chosen exactly as fieldkit does (sorted recursive list, evenly spread) and
preprocessed with the model card's spec (stretch resize, ImageNet mean/std). The card is copied
beside the output with its sha256 updated so fieldkit can run it.
eval: top-1 on an ImageFolder split and p50 latency (1 thread) in onnxruntime.
"""
import argparse
import hashlib
import json
import os
import time

import numpy as np
from PIL import Image

EXT = (".jpg", ".jpeg", ".png")


def card_of(model):
    with open(os.path.splitext(model)[0] + ".json") as f:
        return json.load(f)


def prep(path, card):
    pre = card["preprocess"]
    size = card["input"]["shape"][-1]
    im = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    x = np.asarray(im, np.float32) * pre["scale"]
    x = (x - np.array(pre["mean"], np.float32)) / np.array(pre["std"], np.float32)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def calib_images(root, limit):
    files = []
    for d, _, fs in os.walk(root):
        files += [os.path.join(d, f) for f in fs if f.lower().endswith(EXT)]
    files.sort()
    if limit and len(files) > limit:
        step = len(files) / limit
        files = [files[int(i * step)] for i in range(limit)]
    return files


def quantize(a):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    card = card_of(a.model)
    name = card["input"]["name"]
    files = calib_images(a.calib, a.limit)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(files)

        def get_next(self):
            f = next(self.it, None)
            return None if f is None else {name: prep(f, card)}

    t = time.time()
    fmt = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[a.format]
    # QOperator: Conv only; onnxruntime writes QLinearAdd / QGemm (com.microsoft ops, which
    # tract does not read) for the others.
    ops = ["Conv"] if a.format == "qoperator" else None
    quantize_static(a.model, a.out, Reader(), quant_format=fmt, per_channel=True, op_types_to_quantize=ops,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    card["sha256"] = hashlib.sha256(open(a.out, "rb").read()).hexdigest()
    card["source"] = f"onnxruntime quantize_static ({a.format}, per-channel, MinMax)"
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump(card, f, indent=1)
    print(f"onnxruntime quantize_static: {len(files)} images, {time.time() - t:.1f} s -> {a.out}")


def evaluate(a):
    import onnxruntime as ort

    rows = []
    for m in a.model:
        card = card_of(m)
        classes = card["classes"]
        split = os.path.join(a.val, a.split)
        xs, ys = [], []
        for ci, c in enumerate(classes):
            d = os.path.join(split, c)
            for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
                xs.append(prep(os.path.join(d, f), card)[0])
                ys.append(ci)
        x, y = np.stack(xs), np.array(ys)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        s = ort.InferenceSession(m, so, providers=["CPUExecutionProvider"])
        name = s.get_inputs()[0].name
        out = np.concatenate([s.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
        top1 = float((out.argmax(1) == y).mean())
        one = x[:1]
        for _ in range(5):
            s.run(None, {name: one})
        t = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            s.run(None, {name: one})
            t.append((time.perf_counter() - t0) * 1e3)
        rows.append({"model": m, "ort_top1": top1, "ort_p50_ms": float(np.median(t)), "mb": os.path.getsize(m) / 1e6})
        print(f"{os.path.basename(m):28} onnxruntime top-1 {top1:.4f}  p50 {np.median(t):6.2f} ms  {os.path.getsize(m) / 1e6:6.2f} MB")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quantize")
    q.add_argument("--model", required=True)
    q.add_argument("--calib", required=True)
    q.add_argument("--limit", type=int, default=300)
    q.add_argument("--out", required=True)
    # qoperator: QLinearConv / QLinearMatMul nodes, the form tract runs as integer convolutions
    # today (its QDQ Conv runs in float); for comparing tract's two integer paths.
    q.add_argument("--format", choices=["qdq", "qoperator"], default="qdq")
    e = sub.add_parser("eval")
    e.add_argument("--val", required=True)
    e.add_argument("--split", default="valid")
    e.add_argument("--model", action="append", required=True)
    e.add_argument("--runs", type=int, default=100)
    e.add_argument("--json")
    a = p.parse_args()
    quantize(a) if a.cmd == "quantize" else evaluate(a)
