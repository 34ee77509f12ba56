"""Golden outputs of the shared models in onnxruntime, for fieldkit-runtime's engine tests.

    python ort_goldens.py OUT_DIR [--shared PATH]

- Raw outputs on a deterministic input pattern that both sides build bit-identically:
  v[i] = (i * 7919) % 256 over the flattened [1, 3, H, W] tensor (MobileNetV2 then applies
  /255 and ImageNet mean/std in float32; YOLOX takes v as is).
- YOLOX-nano detections on the shared sample photos with YOLOX's own preprocessing
  (cv2.imread BGR, cv2.resize INTER_LINEAR, top-left letterbox, pad 114) and YOLOX's
  postprocess (score = obj * best class prob >= 0.3, per-class NMS at IoU 0.45).
"""
import argparse
import json
import os

import numpy as np
import onnxruntime as ort

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def pattern(h, w):
    return ((np.arange(3 * h * w, dtype=np.int64) * 7919) % 256).astype(np.float32).reshape(1, 3, h, w)


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def nms(boxes, scores, thr):
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(boxes[i, 0], boxes[order[1:], 0])
        yy1 = np.maximum(boxes[i, 1], boxes[order[1:], 1])
        xx2 = np.minimum(boxes[i, 2], boxes[order[1:], 2])
        yy2 = np.minimum(boxes[i, 3], boxes[order[1:], 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
        iou = inter / (area(boxes[i]) + area(boxes[order[1:]]) - inter)
        order = order[1:][iou <= thr]
    return keep


def yolox_postprocess(out, size, strides=(8, 16, 32), score_thr=0.3, nms_thr=0.45):
    grids, exp_strides = [], []
    for s in strides:
        hs, ws = size // s, size // s
        xv, yv = np.meshgrid(np.arange(ws), np.arange(hs))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        exp_strides.append(np.full((hs * ws, 1), s))
    grids, exp_strides = np.concatenate(grids), np.concatenate(exp_strides)
    p = out[0].copy()
    p[:, :2] = (p[:, :2] + grids) * exp_strides
    p[:, 2:4] = np.exp(p[:, 2:4]) * exp_strides
    boxes = np.stack([p[:, 0] - p[:, 2] / 2, p[:, 1] - p[:, 3] / 2, p[:, 0] + p[:, 2] / 2, p[:, 1] + p[:, 3] / 2], 1)
    cls = p[:, 5:].argmax(1)
    score = p[:, 4] * p[:, 5:].max(1)
    m = score >= score_thr
    boxes, cls, score = boxes[m], cls[m], score[m]
    keep = []
    for c in np.unique(cls):
        idx = np.where(cls == c)[0]
        keep += [idx[k] for k in nms(boxes[idx], score[idx], nms_thr)]
    keep = sorted(keep, key=lambda k: -score[k])
    return boxes[keep], cls[keep], score[keep]


def tiny_models(out):
    """Three few-kB models built with the onnx helper, vendored so the engine's tests run
    without ../shared: a classifier (input 'input' [N,3,32,32] -> 'logits' [N,3]), a
    YOLOX-shaped detector (input 'images' [1,3,64,64] -> 'output' [1,4,7]: one stride-32
    level, 2 classes, raw logits) and a MobileNetV2-style depthwise-separable block (input
    'input' [1,3,32,32] -> 'features' [1,16]: conv, Relu6, depthwise 3x3 stride 2, Relu6,
    1x1 projection, mean) whose depthwise conv keeps tract's channel-last plan apart from
    its NCHW one."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(5)
    init = lambda name, a: numpy_helper.from_array(a.astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["logits"], transB=1),
    ]
    g = helper.make_graph(
        nodes, "tiny_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [init("w1", rng.normal(0, 0.3, (4, 3, 3, 3))), init("b1", rng.normal(0, 0.1, 4)),
         init("w2", rng.normal(0, 1.0, (3, 4))), init("b2", rng.normal(0, 0.1, 3))])
    cls = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="fieldkit-tests")
    onnx.checker.check_model(cls)
    cls_path = os.path.join(out, "tiny_classifier.onnx")
    onnx.save(cls, cls_path)

    nodes = [
        helper.make_node("Conv", ["images", "w", "b"], ["c"], kernel_shape=[32, 32], strides=[32, 32]),
        helper.make_node("Reshape", ["c", "shape"], ["r"]),
        helper.make_node("Transpose", ["r"], ["output"], perm=[0, 2, 1]),
    ]
    g = helper.make_graph(
        nodes, "tiny_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 7])],
        [init("w", rng.normal(0, 0.02, (7, 3, 32, 32))), init("b", np.array([0, 0, 0.5, 0.5, 0, 0, 0])),
         numpy_helper.from_array(np.array([1, 7, 4], np.int64), "shape")])
    det = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="fieldkit-tests")
    onnx.checker.check_model(det)
    det_path = os.path.join(out, "tiny_detector.onnx")
    onnx.save(det, det_path)

    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], kernel_shape=[1, 1]),
        helper.make_node("GlobalAveragePool", ["c3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["features"], axis=1),
    ]
    g = helper.make_graph(
        nodes, "tiny_dwsep",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 16])],
        [init("w1", rng.normal(0, 0.3, (8, 3, 3, 3))), init("b1", rng.normal(0, 0.1, 8)),
         init("w2", rng.normal(0, 0.3, (8, 1, 3, 3))), init("b2", rng.normal(0, 0.1, 8)),
         init("w3", rng.normal(0, 0.3, (16, 8, 1, 1))), init("b3", rng.normal(0, 0.1, 16)),
         init("lo", np.array(0.0)), init("hi", np.array(6.0))])
    dws = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="fieldkit-tests")
    onnx.checker.check_model(dws)
    dws_path = os.path.join(out, "tiny_dwsep.onnx")
    onnx.save(dws, dws_path)

    x = (pattern(32, 32) / np.float32(255) - MEAN[None, :, None, None]) / STD[None, :, None, None]
    logits = session(cls_path).run(None, {"input": x.astype(np.float32)})[0]
    features = session(dws_path).run(None, {"input": x.astype(np.float32)})[0]
    y = session(det_path).run(None, {"images": pattern(64, 64) / np.float32(255)})[0]
    sig = y.copy()
    sig[..., 4:] = 1 / (1 + np.exp(-sig[..., 4:]))
    boxes, c, s = yolox_postprocess(sig, 64, strides=(32,), score_thr=0.05)
    json.dump({"classifier_logits": logits[0].tolist(), "dwsep_features": features[0].tolist(),
               "detector_output": y[0].tolist(),
               "detections": [{"bbox": b.tolist(), "class": int(k), "score": float(v)} for b, k, v in zip(boxes, c, s)]},
              open(os.path.join(out, "tiny_models.json"), "w"), indent=1)
    print(f"tiny models: logits {np.round(logits[0], 4).tolist()}, {len(s)} detections")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    tiny_models(a.out)
    models = os.path.join(a.shared, "assets", "models")
    if not os.path.isdir(models):
        print("no shared models: skipped their goldens")
        return

    mb = session(os.path.join(models, "mobilenetv2-imagenet", "mobilenetv2_features_bnfolded.onnx"))
    x = (pattern(224, 224) / np.float32(255) - MEAN[None, :, None, None]) / STD[None, :, None, None]
    feats = mb.run(None, {"input": x.astype(np.float32)})[0]
    json.dump({"input": "pattern", "output": feats[0].tolist()}, open(os.path.join(a.out, "mobilenetv2_pattern.json"), "w"))
    print(f"mobilenetv2: features {feats.shape}, mean {feats.mean():.5f}")

    yx = session(os.path.join(models, "yolox-nano-coco", "yolox_nano_416x416.onnx"))
    out = yx.run(None, {"images": pattern(416, 416)})[0]
    rows = sorted(set(np.where(out[0, :, 4] > 0.01)[0].tolist()) | set(range(0, out.shape[1], 47)))
    values = [[float(f"{v:.7g}") for v in r] for r in out[0, rows].tolist()]
    json.dump({"input": "pattern", "shape": list(out.shape), "rows": rows, "values": values,
               "sum": float(out.astype(np.float64).sum())},
              open(os.path.join(a.out, "yolox_nano_pattern.json"), "w"))
    print(f"yolox-nano: output {out.shape}, {len(rows)} rows kept")

    import cv2
    dets = {}
    for name in ["dog", "eagle", "horses", "person"]:
        img = cv2.imread(os.path.join(a.shared, "assets", "images", f"{name}.jpg"))
        h, w = img.shape[:2]
        r = min(416 / h, 416 / w)
        padded = np.full((416, 416, 3), 114, np.uint8)
        rs = cv2.resize(img, (int(w * r), int(h * r)), interpolation=cv2.INTER_LINEAR)
        padded[: rs.shape[0], : rs.shape[1]] = rs
        x = padded.transpose(2, 0, 1)[None].astype(np.float32)
        boxes, cls, score = yolox_postprocess(yx.run(None, {"images": x})[0], 416)
        dets[name] = [{"bbox": (b / r).tolist(), "class": int(c), "score": float(s)} for b, c, s in zip(boxes, cls, score)]
        print(f"yolox-nano {name}: " + ", ".join(f"{c}:{s:.2f}" for c, s in zip(cls, score)))
    json.dump(dets, open(os.path.join(a.out, "yolox_nano_detections.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
