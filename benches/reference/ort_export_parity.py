"""Export parity: fieldkit's exported ONNX in onnxruntime vs burn's own logits.

    python ort_export_parity.py DIR    # DIR from `cargo run --example export_parity -- DIR`

Builds the same deterministic input as the Rust side (v[i] = (i * 7919) % 256, /255, ImageNet
mean/std in float32), runs DIR/model.onnx in onnxruntime on one thread and fails when any
logit differs from DIR/parity.json's burn_logits by more than 1e-4.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def main():
    d = sys.argv[1]
    ref = json.load(open(f"{d}/parity.json"))
    n, c, h, w = ref["input_shape"]
    v = ((np.arange(c * h * w, dtype=np.int64) * 7919) % 256).astype(np.float32).reshape(1, c, h, w)
    x = ((v / np.float32(255.0) - MEAN[None, :, None, None]) / STD[None, :, None, None]).astype(np.float32)
    model = onnx.load(f"{d}/model.onnx")
    onnx.checker.check_model(model, full_check=True)
    ops = sorted({node.op_type for node in model.graph.node})
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(f"{d}/model.onnx", so, providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    # Dynamic batch: two copies give two identical rows.
    out2 = sess.run(None, {sess.get_inputs()[0].name: np.concatenate([x, x])})[0]
    diff = float(np.abs(out[0] - np.array(ref["burn_logits"], np.float32)).max())
    batch_diff = float(np.abs(out2[1] - out[0]).max())
    print(f"onnxruntime {ort.__version__} vs burn: max abs diff {diff:.2e}; batch 2 row diff {batch_diff:.2e}; "
          f"opset {model.opset_import[0].version}, ops {ops}")
    if diff > 1e-4 or batch_diff > 1e-5:
        sys.exit("export parity with onnxruntime failed")


if __name__ == "__main__":
    main()
