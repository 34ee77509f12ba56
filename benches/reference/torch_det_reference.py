"""Reference detector for issue 5's accuracy goal: torchvision's Faster R-CNN with the same
ImageNet MobileNetV2 backbone (the shared safetensors, torchvision key names), trained on the
same YOLO splits at the same input size and wall-clock budget as a `fieldkit train detect`
run, then scored on the valid split with the COCO protocol (`fieldkit metrics coco`,
pycocotools-exact). It answers "is the data's ceiling lower than the goal?" with a detector
users know; it is a check, never a dependency.

    /usr/bin/python3 torch_det_reference.py DATA.yaml WEIGHTS.safetensors OUT_DIR \
        [--fieldkit BIN] [--size 320] [--minutes 73.5] [--epochs 30] [--unfreeze-from 14] [--batch 8]

Setup follows torchvision's low-resolution mobile recipe (fasterrcnn_mobilenet_v3_large_320_fpn)
with the MobileNetV2 backbone: FPN over the last two stages, frozen BatchNorm, anchors
32-512 px at three aspect ratios, SGD momentum 0.9, lr 0.02 x batch/16 with a one-epoch linear
warm-up then cosine, weight decay 1e-4, horizontal flips; backbone layers below
features.N frozen like fieldkit's --unfreeze-from. Training stops at --minutes or --epochs,
whichever comes first. Torch uses every core (2 here).
"""
import argparse
import json
import math
import os
import subprocess
import time

import numpy as np
import torch
import torchvision
from torch_weights import load_safetensors
from PIL import Image
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d


def read_yaml(path):
    """The subset of data.yaml fieldkit's vendored sets use: scalar keys and names as a list
    (`- a`) or a map (`0: a`)."""
    out, names, in_names = {}, [], False
    for raw in open(path):
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if in_names and line.startswith((" ", "\t")):
            item = line.strip()
            if item.startswith("- "):
                names.append(item[2:].strip().strip("'\""))
            elif ":" in item:
                names.append(item.split(":", 1)[1].strip().strip("'\""))
            continue
        in_names = False
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "names":
            if value.startswith("["):
                names = [v.strip().strip("'\"") for v in value.strip("[]").split(",") if v.strip()]
            else:
                in_names = True
        else:
            out[key] = value.strip("'\"")
    out["names"] = names
    return out


def split_samples(yaml_path, cfg, split):
    root = os.path.join(os.path.dirname(os.path.abspath(yaml_path)), cfg.get("path", "."))
    images = os.path.join(root, cfg[split])
    samples = []
    for name in sorted(os.listdir(images)):
        if not name.lower().endswith((".jpg", ".jpeg", ".png")):
            continue
        img = os.path.join(images, name)
        parts = img.split(os.sep)
        i = len(parts) - 1 - parts[::-1].index("images")
        parts[i] = "labels"
        label = os.path.splitext(os.sep.join(parts))[0] + ".txt"
        rows = []
        if os.path.exists(label):
            for line in open(label):
                v = line.split()
                if len(v) >= 5:
                    c = int(v[0])
                    xs, ys = [float(t) for t in v[1::2]], [float(t) for t in v[2::2]]
                    if len(v) == 5:
                        cx, cy, w, h = map(float, v[1:5])
                        rows.append((c, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
                    else:
                        rows.append((c, min(xs), min(ys), max(xs), max(ys)))
        samples.append((img, rows))
    return samples


def load(sample):
    img = Image.open(sample[0]).convert("RGB")
    w, h = img.size
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
    boxes = torch.tensor([[x1 * w, y1 * h, x2 * w, y2 * h] for _, x1, y1, x2, y2 in sample[1]], dtype=torch.float32).reshape(-1, 4)
    labels = torch.tensor([c + 1 for c, *_ in sample[1]], dtype=torch.int64)
    return x, {"boxes": boxes, "labels": labels}, (w, h)


def build(weights, num_classes, size, unfreeze_from):
    """torchvision's fasterrcnn_mobilenet_v3_large_320_fpn recipe with the MobileNetV2 backbone:
    FPN (256 channels) over the last two stages (features.13, stride 16, and features.18,
    stride 32) plus a max-pooled level, anchors 32-512 at three aspect ratios on each level,
    150 proposals at test time; 128 sampled RoIs per training image instead of 512, the
    Detectron-style setting for small datasets. On these 2 cores the box head dominates a step:
    the tutorial's single 1280-channel level ran at 0.14 img/s, this FPN with 512 RoIs at 0.8,
    with 128 at 2.6 (batch 8, backbone from features.14)."""
    net = torchvision.models.mobilenet_v2(norm_layer=FrozenBatchNorm2d)
    missing, unexpected = net.load_state_dict(load_safetensors(weights), strict=False)
    unexpected = [k for k in unexpected if not k.endswith("num_batches_tracked")]
    assert not unexpected and all(k.startswith("classifier") for k in missing), (missing, unexpected)
    features = net.features
    for i, layer in enumerate(features):
        for p in layer.parameters():
            p.requires_grad = i >= unfreeze_from
    backbone = BackboneWithFPN(features, return_layers={"13": "0", "18": "1"}, in_channels_list=[96, 1280],
                               out_channels=256, extra_blocks=LastLevelMaxPool())
    anchors = AnchorGenerator(sizes=((32, 64, 128, 256, 512),) * 3, aspect_ratios=((0.5, 1.0, 2.0),) * 3)
    return FasterRCNN(backbone, num_classes=num_classes + 1, rpn_anchor_generator=anchors,
                      min_size=size, max_size=size, rpn_pre_nms_top_n_test=150, rpn_post_nms_top_n_test=150,
                      rpn_score_thresh=0.05, box_batch_size_per_image=128, box_score_thresh=0.001, box_detections_per_img=100)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("weights")
    ap.add_argument("out")
    ap.add_argument("--fieldkit", default="fieldkit")
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--minutes", type=float, default=73.5)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--unfreeze-from", type=int, default=14)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (smoke tests)")
    ap.add_argument("--max-valid", type=int, default=0, help="score only this many valid images (smoke tests)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    cfg = read_yaml(a.data)
    names = cfg["names"]
    train = split_samples(a.data, cfg, "train")
    valid = split_samples(a.data, cfg, "val")
    if a.max_valid:
        valid = valid[:a.max_valid]
    model = build(a.weights, len(names), a.size, a.unfreeze_from)
    params = [p for p in model.parameters() if p.requires_grad]
    lr = 0.02 * a.batch / 16
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(train) / a.batch)
    total = steps_per_epoch * a.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / steps_per_epoch) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    rng = np.random.default_rng(0)
    t0 = time.time()
    seen, step, epochs_done, losses = 0, 0, 0, []
    stop = False
    for epoch in range(a.epochs):
        model.train()
        order = rng.permutation(len(train))
        for b in range(steps_per_epoch):
            batch = [load(train[i]) for i in order[b * a.batch:(b + 1) * a.batch]]
            xs, ts = [], []
            for x, t, (w, _) in batch:
                if rng.random() < 0.5:
                    x = x.flip(-1)
                    if len(t["boxes"]):
                        bx = t["boxes"].clone()
                        bx[:, [0, 2]] = w - t["boxes"][:, [2, 0]]
                        t["boxes"] = bx
                xs.append(x)
                ts.append(t)
            loss = sum(model(xs, ts).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss))
            seen += len(xs)
            step += 1
            if (time.time() - t0) / 60 >= a.minutes or (a.max_steps and step >= a.max_steps):
                stop = True
                break
        epochs_done = epoch + (1 if not stop else b / steps_per_epoch)
        print(f"epoch {epoch + 1}: loss {np.mean(losses[-steps_per_epoch:]):.3f}, {seen / (time.time() - t0):.2f} img/s, "
              f"{(time.time() - t0) / 60:.1f} min", flush=True)
        if stop:
            break
    train_s = time.time() - t0

    model.eval()
    gt = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    preds = []
    with torch.no_grad():
        for k, s in enumerate(valid):
            x, t, (w, h) = load(s)
            gt["images"].append({"id": k + 1, "file_name": os.path.basename(s[0]), "width": w, "height": h})
            for bx, c in zip(t["boxes"].tolist(), t["labels"].tolist()):
                gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": k + 1, "category_id": c, "iscrowd": 0,
                                          "bbox": [bx[0], bx[1], bx[2] - bx[0], bx[3] - bx[1]], "area": (bx[2] - bx[0]) * (bx[3] - bx[1])})
            r = model([x])[0]
            for bx, c, sc in zip(r["boxes"].tolist(), r["labels"].tolist(), r["scores"].tolist()):
                preds.append({"image_id": k + 1, "category_id": c, "bbox": [bx[0], bx[1], bx[2] - bx[0], bx[3] - bx[1]], "score": sc})
    json.dump(gt, open(os.path.join(a.out, "valid_gt.json"), "w"))
    json.dump(preds, open(os.path.join(a.out, "valid_pred.json"), "w"))
    metrics = os.path.join(a.out, "valid_metrics.json")
    subprocess.run([a.fieldkit, "metrics", "coco", "--gt", os.path.join(a.out, "valid_gt.json"),
                    "--pred", os.path.join(a.out, "valid_pred.json"), "--json", metrics], check=True, stdout=subprocess.DEVNULL)
    m = json.load(open(metrics))
    result = {"model": "torchvision FasterRCNN(mobilenet_v2.features, ImageNet)", "torch": torch.__version__,
              "size": a.size, "unfreeze_from": a.unfreeze_from, "batch": a.batch, "epochs": round(epochs_done, 2),
              "steps": step, "train_s": round(train_s, 1), "images_per_s": round(seen / train_s, 2),
              "map50": m["map50"], "map50_95": m["map50_95"], "count_mae": m.get("count_mae")}
    json.dump(result, open(os.path.join(a.out, "result.json"), "w"), indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
