"""Reference segmenter for issue 24's goal ("at least the torchvision reference in the same
budget"): torchvision's LR-ASPP head (`torchvision.models.segmentation.lraspp.LRASPP`) on the
same ImageNet MobileNetV2 backbone (the shared safetensors, torchvision key names), the same
mask folder and splits, the same input size and the same wall-clock budget as a
`fieldkit train segment` run. It exports ONNX; benches/segment_vs_torch.sh then scores that
with `fieldkit eval` (fieldkit's metric and preprocessing, tract) beside fieldkit's own model.
It is a check, never a dependency.

    /usr/bin/python3 torch_seg_reference.py DATA_DIR WEIGHTS.safetensors OUT_DIR \
        [--width 384] [--height 288] [--minutes 40.3] [--epochs 200] [--batch 8]

Recipe: torchvision's segmentation reference (references/segmentation/train.py) as far as
it applies to one CPU process: LR-ASPP with the low-level branch on features.6 (stride 8,
32 channels) and the high-level one on features.18 (stride 32, 1280 channels), 128 inner
channels, exactly the taps fieldkit's segmenter uses; SGD momentum 0.9, lr 0.02 x batch/16,
weight decay 1e-4, polynomial decay (power 0.9), here over the time budget since the budget,
not an epoch count, ends training; plain cross-entropy with 255 ignored; augmentation:
random resize of the training size by 0.5-2.0, horizontal flip, random crop to the training
size (padding the mask with 255). Images are stretched to the input size as fieldkit does.
The last model is exported (the reference keeps no best checkpoint). Torch uses every core.
"""
import argparse
import csv
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch_weights import load_safetensors
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.lraspp import LRASPP

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def read_classes(root):
    rows = list(csv.DictReader(open(os.path.join(root, "classes.csv"))))
    return [r["name"].strip() for r in rows], {(int(r["r"]), int(r["g"]), int(r["b"])): int(r["id"]) for r in rows}


def pairs(root, split):
    images = os.path.join(root, split, "images")
    masks = os.path.join(root, split, "masks")
    by_stem = {os.path.splitext(n)[0]: os.path.join(masks, n) for n in os.listdir(masks)}
    out = []
    for n in sorted(os.listdir(images)):
        stem = os.path.splitext(n)[0]
        assert stem in by_stem, f"{images}/{n}: no mask"
        out.append((os.path.join(images, n), by_stem[stem]))
    return out


def read_mask(path, colours):
    m = np.asarray(Image.open(path))
    if m.ndim == 2:
        return m.astype(np.int64)
    m = m[..., :3]
    ids = np.full(m.shape[:2], 255, dtype=np.int64)
    for rgb, i in colours.items():
        ids[(m == np.array(rgb, dtype=m.dtype)).all(-1)] = i
    assert (ids != 255).all(), f"{path}: colours outside classes.csv"
    return ids


def normalise(img):
    x = (np.asarray(img, dtype=np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(x).permute(2, 0, 1).contiguous()


def train_sample(image, mask, w, h, rng):
    """torchvision's RandomResize(0.5-2.0) -> RandomHorizontalFlip -> RandomCrop, around a
    stretch to the training size."""
    s = rng.uniform(0.5, 2.0)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    img = image.resize((nw, nh), Image.BILINEAR)
    m = Image.fromarray(mask.astype(np.uint8)).resize((nw, nh), Image.NEAREST)
    if rng.random() < 0.5:
        img, m = img.transpose(Image.FLIP_LEFT_RIGHT), m.transpose(Image.FLIP_LEFT_RIGHT)
    x, y = np.asarray(img), np.asarray(m)
    ph, pw = max(0, h - nh), max(0, w - nw)
    if ph or pw:
        x = np.pad(x, ((0, ph), (0, pw), (0, 0)))
        y = np.pad(y, ((0, ph), (0, pw)), constant_values=255)
    top = rng.integers(0, x.shape[0] - h + 1)
    left = rng.integers(0, x.shape[1] - w + 1)
    x, y = x[top:top + h, left:left + w], y[top:top + h, left:left + w]
    return normalise(x), torch.from_numpy(y.astype(np.int64))


def build(weights, classes):
    net = torchvision.models.mobilenet_v2()
    missing, unexpected = net.load_state_dict(load_safetensors(weights), strict=False)
    unexpected = [k for k in unexpected if not k.endswith("num_batches_tracked")]
    assert not unexpected and all(k.startswith("classifier") for k in missing), (missing, unexpected)
    backbone = IntermediateLayerGetter(net.features, return_layers={"6": "low", "18": "high"})
    return LRASPP(backbone, low_channels=32, high_channels=1280, num_classes=classes, inter_channels=128)


class Logits(torch.nn.Module):
    """LRASPP returns a dict; the exported graph returns its `out` tensor."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)["out"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("weights")
    ap.add_argument("out")
    ap.add_argument("--width", type=int, default=384)
    ap.add_argument("--height", type=int, default=288)
    ap.add_argument("--minutes", type=float, default=40.3)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (smoke tests)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    names, colours = read_classes(a.data)
    train = [(Image.open(i).convert("RGB").resize((a.width, a.height), Image.BILINEAR),
              np.asarray(Image.fromarray(read_mask(m, colours).astype(np.uint8)).resize((a.width, a.height), Image.NEAREST)))
             for i, m in pairs(a.data, "train")]
    model = build(a.weights, len(names))
    lr = 0.02 * a.batch / 16
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    budget = a.minutes * 60
    steps_per_epoch = math.ceil(len(train) / a.batch)
    t0 = time.time()
    step, seen, history, stop = 0, 0, [], False
    for epoch in range(a.epochs):
        model.train()
        order = rng.permutation(len(train))
        losses = []
        for b in range(steps_per_epoch):
            batch = [train_sample(*train[i], a.width, a.height, rng) for i in order[b * a.batch:(b + 1) * a.batch]]
            x = torch.stack([s[0] for s in batch])  # [batch, 3, h, w]
            y = torch.stack([s[1] for s in batch])  # [batch, h, w]
            frac = min(1.0, (time.time() - t0) / budget)
            for g in opt.param_groups:
                g["lr"] = lr * (1 - frac) ** 0.9
            loss = F.cross_entropy(model(x)["out"], y, ignore_index=255)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
            seen += len(batch)
            step += 1
            if time.time() - t0 >= budget or (a.max_steps and step >= a.max_steps):
                stop = True
                break
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "minutes": (time.time() - t0) / 60})
        print(f"epoch {epoch + 1}: loss {np.mean(losses):.4f}, {seen / (time.time() - t0):.2f} img/s, "
              f"{(time.time() - t0) / 60:.1f} min", flush=True)
        if stop:
            break
    train_s = time.time() - t0
    model.eval()
    onnx = os.path.join(a.out, "model.onnx")
    torch.onnx.export(Logits(model), torch.zeros(1, 3, a.height, a.width), onnx, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=13)
    json.dump({"tool": f"torch {torch.__version__}, torchvision {torchvision.__version__}",
               "model": "torchvision LRASPP on MobileNetV2 (features.6 + features.18, 128 inner channels)",
               "input": [a.width, a.height], "batch": a.batch, "lr": lr, "minutes_budget": a.minutes,
               "train_seconds": train_s, "steps": step, "images_seen": seen, "classes": names,
               "epochs": history}, open(os.path.join(a.out, "torch_train.json"), "w"), indent=1)
    print(f"trained {train_s / 60:.1f} min, {step} steps, {seen} images; wrote {onnx}")


if __name__ == "__main__":
    main()
