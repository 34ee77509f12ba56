"""Export parity: fieldkit's exported ONNX models in onnxruntime vs burn's own outputs.

    python ort_export_parity.py DIR    # DIR from `cargo run --example export_parity -- DIR`

Builds the same deterministic input as the Rust side (v[i] = (i * 7919) % 256, /255, ImageNet
mean/std in float32), runs each model of DIR/parity.json (the classifier's logits, the
detector's raw head, the segmenter's per-pixel logits) in onnxruntime on one thread and fails when any value differs from
burn's by more than 1e-4.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def check(d, entry):
    n, c, h, w = entry["input_shape"]
    v = ((np.arange(c * h * w, dtype=np.int64) * 7919) % 256).astype(np.float32).reshape(1, c, h, w)
    x = ((v / np.float32(255.0) - MEAN[None, :, None, None]) / STD[None, :, None, None]).astype(np.float32)
    path = f"{d}/{entry['model']}"
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    ops = sorted({node.op_type for node in model.graph.node})
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    # Dynamic batch: another image beside it leaves its row as it was (a graph that stacks
    # test-time views along the batch must not mix the images).
    other = np.ascontiguousarray(x[:, :, ::-1, :] * np.float32(0.5))
    out2 = sess.run(None, {sess.get_inputs()[0].name: np.concatenate([other, x])})[0]
    want = np.array(entry["burn_output"], np.float32)
    diff = float(np.abs(out[0].reshape(-1) - want).max())
    batch_diff = float(np.abs(out2[1] - out[0]).max())
    print(f"{entry['model']}: onnxruntime {ort.__version__} vs burn: max abs diff {diff:.2e} over {want.size} values; "
          f"batch 2 (another image first) row diff {batch_diff:.2e}; opset {model.opset_import[0].version}, ops {ops}")
    return diff <= 1e-4 and batch_diff <= 1e-5


def main():
    d = sys.argv[1]
    ref = json.load(open(f"{d}/parity.json"))
    ok = all([check(d, e) for e in ref["models"]])
    if not ok:
        sys.exit("export parity with onnxruntime failed")


if __name__ == "__main__":
    main()
