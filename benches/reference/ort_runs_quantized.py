"""fieldkit quantize's outputs run in onnxruntime too, and agree with tract.

    python ort_runs_quantized.py DEMO_OUT_DIR

Reads the demo's float model (train-weed-mini/model.onnx) and its INT8 output
(model.int8.onnx + model.int8.report.json), runs both in onnxruntime on the vendored weed
subset's valid split with the card's preprocessing, and requires onnxruntime's top-1 to be
within 2 images of what fieldkit measured in tract. Exits 1 otherwise.

The check runs onnxruntime with graph optimisations off, i.e. the ONNX operators' reference
semantics. With them on, onnxruntime fuses the QDQ pattern into its u8 x s8 integer kernels,
which on x86 without VNNI (this machine: AVX2) saturate 16-bit intermediate sums and lose
accuracy (onnxruntime's documentation recommends reduce_range or U8U8 there); that figure is
printed for information.
"""
import json
import os
import sys

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(__file__))
from ort_quantize import card_of, prep  # noqa: E402

out = sys.argv[1]
root = os.path.join(os.path.dirname(__file__), "..", "..", "assets", "data", "weed-mini", "valid")
report = json.load(open(os.path.join(out, "model.int8.report.json")))
ok = True
for name, tract_top1 in [("train-weed-mini/model.onnx", report["fp32_metric"]), ("model.int8.onnx", report["quant_metric"])]:
    path = os.path.join(out, name)
    card = card_of(path)
    top = {}
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        iname = s.get_inputs()[0].name
        hits = total = 0
        for ci, c in enumerate(card["classes"]):
            d = os.path.join(root, c)
            for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
                logits = s.run(None, {iname: prep(os.path.join(d, f), card)})[0][0]
                assert np.all(np.isfinite(logits)), f"{name}: non-finite output"
                hits += int(np.argmax(logits) == ci)
                total += 1
        top[level] = hits / total
    top1 = top[ort.GraphOptimizationLevel.ORT_DISABLE_ALL]
    agree = abs(top1 - tract_top1) * total <= 2.0 + 1e-9
    ok &= agree
    fused = top[ort.GraphOptimizationLevel.ORT_ENABLE_ALL]
    print(f"{name:28} onnxruntime top-1 {top1:.4f} (fused kernels {fused:.4f})  tract {tract_top1:.4f}  {'ok' if agree else 'DISAGREE'}")
sys.exit(0 if ok else 1)
