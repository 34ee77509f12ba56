"""Golden files for fieldkit-core's metric and preprocessing tests, computed by the
reference tools (pycocotools, scikit-learn, Pillow — what torchvision's Resize runs on PIL
images). Inputs are generated from fixed seeds, so re-running reproduces the same files.

    python make_goldens.py OUT_DIR [--shared ../../../shared]
"""
import argparse
import contextlib
import io
import json
import os
import sys

import numpy as np


def coco_case(rng, n_images, cats, gt_per_image, fp_per_image, crowd_rate=0.0,
              explicit_area=False, empty_images=0, cat_without_gt=None,
              dense_image=False, tie_scores=False):
    images, anns, preds = [], [], []
    ann_id = 1
    for i in range(1, n_images + 1):
        w, h = int(rng.integers(200, 640)), int(rng.integers(200, 640))
        images.append({"id": i, "file_name": f"img{i:03d}.jpg", "width": w, "height": h})
        if i <= empty_images:
            continue  # no ground truth; predictions may still land here
        for _ in range(int(rng.integers(0, gt_per_image + 1))):
            cat = int(rng.choice([c for c in cats if c != cat_without_gt]))
            # Log-uniform sizes so small, medium and large objects all occur.
            bw = float(np.exp(rng.uniform(np.log(6), np.log(w * 0.6))))
            bh = float(np.exp(rng.uniform(np.log(6), np.log(h * 0.6))))
            x, y = float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh))
            a = {"id": ann_id, "image_id": i, "category_id": cat,
                 "bbox": [round(x, 2), round(y, 2), round(bw, 2), round(bh, 2)],
                 "iscrowd": int(rng.random() < crowd_rate)}
            a["area"] = round(bw * bh * (rng.uniform(0.5, 1.0) if explicit_area else 1.0), 2)
            anns.append(a)
            ann_id += 1
            if rng.random() < 0.85:  # a detection near it
                j = rng.normal(0, 0.12, 4)
                pb = [x + j[0] * bw, y + j[1] * bh, bw * np.exp(j[2]), bh * np.exp(j[3])]
                pc = cat if rng.random() < 0.9 else int(rng.choice(cats))
                preds.append({"image_id": i, "category_id": pc,
                              "bbox": [round(float(v), 2) for v in pb],
                              "score": round(float(rng.uniform(0.05, 1.0)), 3 if tie_scores else 6)})
    for i in range(1, n_images + 1):
        img = images[i - 1]
        n_fp = fp_per_image + (150 if dense_image and i == n_images else 0)
        for _ in range(int(rng.integers(0, n_fp + 1)) if n_fp < 100 else n_fp):
            bw, bh = float(rng.uniform(4, img["width"] / 2)), float(rng.uniform(4, img["height"] / 2))
            preds.append({"image_id": i, "category_id": int(rng.choice(cats)),
                          "bbox": [round(float(rng.uniform(0, img["width"] - bw)), 2),
                                   round(float(rng.uniform(0, img["height"] - bh)), 2),
                                   round(bw, 2), round(bh, 2)],
                          "score": round(float(rng.uniform(0.0, 0.7)), 2 if tie_scores else 6)})
    categories = [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in cats]
    return {"images": images, "annotations": anns, "categories": categories}, preds


def coco_expected(gt_path, pred_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        preds = json.load(open(pred_path))
        dt = gt.loadRes(pred_path) if preds else COCO()
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"]  # [T, R, K, A, M]
    per_class = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = prec[:, :, k, 0, -1]
        p50 = prec[0, :, k, 0, -1]
        per_class[str(cat_id)] = {
            "ap50_95": float(np.mean(p[p > -1])) if (p > -1).any() else -1.0,
            "ap50": float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else -1.0,
        }
    return {"stats": [float(s) for s in ev.stats], "per_class": per_class}


def make_coco(out):
    cases = {
        # Plain: three classes, a few empty images, moderate false positives.
        "basic": dict(seed=1, n_images=30, cats=[1, 2, 3], gt_per_image=4, fp_per_image=3, empty_images=4),
        # Crowd boxes, explicit 'area' fields unlike the box area, all size ranges.
        "crowd_areas": dict(seed=2, n_images=40, cats=[1, 5], gt_per_image=6, fp_per_image=2,
                            crowd_rate=0.15, explicit_area=True, empty_images=2),
        # A category with no ground truth (predicted anyway), an image with >100
        # detections (maxDets cut), coarse scores that tie.
        "missing_class_dense": dict(seed=3, n_images=25, cats=[2, 4, 7, 9], gt_per_image=5, fp_per_image=4,
                                    cat_without_gt=9, dense_image=True, tie_scores=True, empty_images=3),
    }
    for name, kw in cases.items():
        rng = np.random.default_rng(kw.pop("seed"))
        gt, preds = coco_case(rng, **kw)
        d = os.path.join(out, "coco", name)
        os.makedirs(d, exist_ok=True)
        gp, pp = os.path.join(d, "gt.json"), os.path.join(d, "pred.json")
        json.dump(gt, open(gp, "w"))
        json.dump(preds, open(pp, "w"))
        exp = coco_expected(gp, pp)
        exp["count"] = count_expected(gt, preds, 0.3)
        json.dump(exp, open(os.path.join(d, "expected.json"), "w"), indent=1)
        print(f"coco/{name}: {len(gt['annotations'])} gt, {len(preds)} preds, mAP {exp['stats'][0]:.4f} mAP50 {exp['stats'][1]:.4f}")


def make_boxes(out):
    """IoU from pycocotools' maskUtils.iou (xywh); GIoU from the paper's formula in numpy."""
    from pycocotools import mask as mask_utils
    rng = np.random.default_rng(11)
    n = 300
    xy = rng.uniform(0, 80, (n, 2, 2))
    wh = np.exp(rng.uniform(np.log(1), np.log(60), (n, 2, 2)))
    a = np.concatenate([xy[:, 0], wh[:, 0]], 1).round(3)  # xywh
    b = np.concatenate([xy[:, 1], wh[:, 1]], 1).round(3)
    b[:20] = a[:20]  # identical pairs
    iou = np.array([mask_utils.iou(a[i:i + 1].tolist(), b[i:i + 1].tolist(), [0])[0][0] for i in range(n)])
    ax = np.concatenate([a[:, :2], a[:, :2] + a[:, 2:]], 1)
    bx = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1)
    inter = np.clip(np.minimum(ax[:, 2:], bx[:, 2:]) - np.maximum(ax[:, :2], bx[:, :2]), 0, None).prod(1)
    union = a[:, 2:].prod(1) + b[:, 2:].prod(1) - inter
    hull = (np.maximum(ax[:, 2:], bx[:, 2:]) - np.minimum(ax[:, :2], bx[:, :2])).prod(1)
    giou = inter / union - (hull - union) / hull
    d = os.path.join(out, "boxes")
    os.makedirs(d, exist_ok=True)
    json.dump({"a_xyxy": ax.tolist(), "b_xyxy": bx.tolist(), "iou": iou.tolist(), "giou": giou.tolist()},
              open(os.path.join(d, "iou_giou.json"), "w"))
    print(f"boxes: {n} pairs, mean IoU {iou.mean():.4f}, mean GIoU {giou.mean():.4f}")


def count_expected(gt, preds, thr):
    """Per-image count errors with numpy, from the COCO dicts."""
    ids = [im["id"] for im in gt["images"]]
    cats = [c["id"] for c in gt["categories"]]
    t = np.array([[sum(1 for a in gt["annotations"] if a["image_id"] == i and a["category_id"] == c and not a["iscrowd"])
                   for c in cats] for i in ids], float)
    f = np.array([[sum(1 for p in preds if p["image_id"] == i and p["category_id"] == c and p["score"] >= thr)
                   for c in cats] for i in ids], float)
    e = f.sum(1) - t.sum(1)
    return {"threshold": thr, "count_mae": float(np.abs(e).mean()), "count_rmse": float(np.sqrt((e ** 2).mean())),
            "count_bias": float(e.mean()),
            "per_class_mae": {str(c): float(np.abs(f[:, k] - t[:, k]).mean()) for k, c in enumerate(cats)}}


def make_classify(out):
    from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score,
                                 precision_recall_fscore_support, top_k_accuracy_score)
    rng = np.random.default_rng(7)
    n_classes, n = 7, 400
    # Unbalanced truth; class 6 never occurs; predictions right ~60 % of the time.
    y_true = rng.choice(6, size=n, p=[0.4, 0.25, 0.15, 0.1, 0.07, 0.03])
    logits = rng.normal(0, 1, (n, n_classes))
    logits[np.arange(n), y_true] += 1.6
    y_pred = logits.argmax(1)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=list(range(n_classes)), zero_division=0)
    exp = {
        "top1": accuracy_score(y_true, y_pred),
        "top5": top_k_accuracy_score(y_true, logits, k=5, labels=list(range(n_classes))),
        "macro_f1": f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro", zero_division=0),
        "weighted_f1": f1_score(y_true, y_pred, labels=list(range(n_classes)), average="weighted", zero_division=0),
        "precision": p.tolist(), "recall": r.tolist(), "f1": f.tolist(), "support": s.tolist(),
        "confusion": confusion_matrix(y_true, y_pred, labels=list(range(n_classes))).tolist(),
    }
    d = os.path.join(out, "classify")
    os.makedirs(d, exist_ok=True)
    json.dump({"n_classes": n_classes, "y_true": y_true.tolist(), "y_pred": y_pred.tolist(),
               "scores": np.round(logits, 6).tolist()}, open(os.path.join(d, "input.json"), "w"))
    json.dump(exp, open(os.path.join(d, "expected.json"), "w"), indent=1)
    print(f"classify: top1 {exp['top1']:.4f} macro-F1 {exp['macro_f1']:.4f}")


def make_segment(out):
    """Pixel metrics over a split: scikit-learn on the flattened pixels of every image, the
    truth's ignore id (255) left out; a class neither in the truth nor predicted has no IoU or
    Dice (null) and stays out of the means."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, jaccard_score
    rng = np.random.default_rng(11)
    n_classes, ignore = 4, 255
    images = []
    for h, w in [(24, 32), (17, 9), (40, 40)]:
        truth = rng.choice(3, size=(h, w), p=[0.7, 0.25, 0.05]).astype(np.uint8)  # class 3 never occurs
        pred = truth.copy()
        flip = rng.random((h, w)) < 0.3
        pred[flip] = rng.choice(3, size=int(flip.sum()))
        truth[rng.random((h, w)) < 0.05] = ignore
        images.append({"height": h, "width": w, "truth": truth.ravel().tolist(), "pred": pred.ravel().tolist()})
    t = np.concatenate([np.array(i["truth"]) for i in images])
    p = np.concatenate([np.array(i["pred"]) for i in images])
    keep = t != ignore
    t, p = t[keep], p[keep]
    labels = list(range(n_classes))
    cm = confusion_matrix(t, p, labels=labels)
    # sklearn scores an absent class 0 (zero_division); it has no score here.
    absent = cm.sum(0) + cm.sum(1) == 0
    iou = np.where(absent, np.nan, jaccard_score(t, p, labels=labels, average=None, zero_division=0))
    dice = np.where(absent, np.nan, f1_score(t, p, labels=labels, average=None, zero_division=0))
    none = lambda v: [None if np.isnan(x) else float(x) for x in v]
    exp = {
        "miou": float(np.nanmean(iou)), "mean_dice": float(np.nanmean(dice)),
        "pixel_acc": float(accuracy_score(t, p)), "pixels": int(keep.sum()),
        "iou": none(iou), "dice": none(dice),
        "confusion": cm.tolist(),
    }
    d = os.path.join(out, "segment")
    os.makedirs(d, exist_ok=True)
    json.dump({"n_classes": n_classes, "ignore": ignore, "images": images}, open(os.path.join(d, "input.json"), "w"))
    json.dump(exp, open(os.path.join(d, "expected.json"), "w"), indent=1)
    print(f"segment: mIoU {exp['miou']:.4f} pixel acc {exp['pixel_acc']:.4f}")


def make_rasterize(out):
    """Polygons and RLE as pycocotools turns them into masks (`frPyObjects`, `merge`, `decode`):
    convex, concave and thin polygons, ones reaching past the image, an object drawn as two
    polygons (their union), uncompressed and compressed RLE. Masks are stored row-major."""
    from pycocotools import mask as mask_utils
    rng = np.random.default_rng(5)
    h, w = 23, 31
    cases = []
    polys = [
        [[2.0, 1.0, 12.0, 1.0, 12.0, 9.0, 2.0, 9.0]],  # axis-aligned, on pixel edges
        [[3.3, 2.7, 20.2, 4.1, 14.9, 18.6]],  # a triangle off the grid
        [[5, 5, 25, 5, 25, 20, 15, 10, 5, 20]],  # concave
        [[-4.0, -3.0, 10.0, 2.0, 40.0, 30.0, 1.0, 25.0]],  # past every edge
        [[7.5, 0.2, 8.1, 0.2, 8.1, 22.9, 7.5, 22.9]],  # thinner than a pixel
        [[1, 1, 6, 1, 6, 6, 1, 6], [4, 4, 12, 3, 9, 11]],  # two polygons, overlapping: their union
        [list(np.round(rng.uniform(0, 30, 16), 3))],  # a random self-crossing outline
    ]
    for p in polys:
        m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([list(map(float, q)) for q in p], h, w)))
        cases.append({"polygons": [list(map(float, q)) for q in p], "mask": m.ravel().tolist()})
    blob = np.zeros((h, w), dtype=np.uint8)
    blob[4:15, 6:20] = 1
    blob[8:12, 10:14] = 0
    blob[0, 0] = blob[h - 1, w - 1] = 1
    rle = mask_utils.encode(np.asfortranarray(blob))
    counts = []
    flat, cur, run = blob.ravel(order="F"), 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            run, cur = 0, v
        run += 1
    counts.append(run)
    assert (mask_utils.decode(mask_utils.frPyObjects({"counts": counts, "size": [h, w]}, h, w)) == blob).all()
    cases.append({"counts": counts, "mask": blob.ravel().tolist()})
    cases.append({"compressed": rle["counts"].decode(), "mask": mask_utils.decode(rle).ravel().tolist()})
    d = os.path.join(out, "rasterize")
    os.makedirs(d, exist_ok=True)
    json.dump({"height": h, "width": w, "cases": cases}, open(os.path.join(d, "expected.json"), "w"))
    print(f"rasterize: {len(cases)} masks, areas {[int(sum(c['mask'])) for c in cases]}")


def make_resize(out, shared):
    """torchvision's eval transform on PIL images is Image.resize(BILINEAR) (Pillow always
    antialiases) to short side 256, then a centre crop with round-half-even offsets."""
    from PIL import Image
    d = os.path.join(out, "preprocess")
    os.makedirs(d, exist_ok=True)
    img_dir = os.path.join(shared, "assets", "images")
    for name in sorted(os.listdir(img_dir)):
        if not name.endswith(".jpg"):
            continue
        im = Image.open(os.path.join(img_dir, name)).convert("RGB")
        w, h = im.size
        size = 256
        if w <= h:
            nw, nh = size, int(size * h / w)
        else:
            nw, nh = int(size * w / h), size
        r = im.resize((nw, nh), Image.BILINEAR)
        top, left = int(round((nh - 224) / 2.0)), int(round((nw - 224) / 2.0))
        c = r.crop((left, top, left + 224, top + 224))
        c.save(os.path.join(d, name.replace(".jpg", ".imagenet224.png")))
        print(f"preprocess/{name}: {w}x{h} -> {nw}x{nh} -> crop at ({left},{top})")
    # Resize alone, on a lossless source (JPEG decoders differ by a few levels, see the
    # crate notes): a 360x270 PNG crop of horses.jpg, shrunk, stretched and enlarged.
    src = Image.open(os.path.join(img_dir, "horses.jpg")).convert("RGB").crop((150, 60, 510, 330))
    src.save(os.path.join(d, "horses_crop.png"), optimize=True)
    for tag, size in [("256x192", (256, 192)), ("96x96", (96, 96)), ("500x420", (500, 420))]:
        src.resize(size, Image.BILINEAR).save(os.path.join(d, f"horses_crop.{tag}.png"))
        print(f"preprocess/horses_crop -> {tag}")
    # OpenCV's INTER_LINEAR (no antialiasing), what YOLOX and most detectors train with.
    import cv2
    bgr = cv2.imread(os.path.join(d, "horses_crop.png"))
    for tag, size in [("277x208", (277, 208)), ("96x96", (96, 96))]:
        cv2.imwrite(os.path.join(d, f"horses_crop.cv2.{tag}.png"), cv2.resize(bgr, size, interpolation=cv2.INTER_LINEAR))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
    args = ap.parse_args()
    make_coco(args.out)
    make_classify(args.out)
    make_segment(args.out)
    make_rasterize(args.out)
    make_boxes(args.out)
    if os.path.isdir(os.path.join(args.shared, "assets", "images")):
        make_resize(args.out, args.shared)
    else:
        print("no shared images: skipped the preprocessing goldens", file=sys.stderr)
