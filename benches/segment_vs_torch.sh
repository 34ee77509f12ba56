#!/usr/bin/env bash
# Segmentation against torchvision in the same wall-clock budget (issue 24's reference): the
# default `fieldkit train segment` on ../shared's peanut-seg, then torchvision's LR-ASPP on the
# same MobileNetV2 weights, splits and input size for as long as fieldkit took
# (benches/reference/torch_seg_reference.py), its ONNX given a card (`card init --preset
# segment`) and both scored by `fieldkit eval` on the valid split (fieldkit's metric and
# preprocessing, tract). Both train alone on the machine, one after the other (~85 min).
#
#     bash benches/segment_vs_torch.sh [OUT.json]
#     FIELDKIT_RUN=DIR  reuse a finished fieldkit run (its epochs' seconds are the budget)
#     TORCH_RUN=DIR     reuse a finished torch run
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benches/results/segment_vs_torch.json}"
shared="${FIELDKIT_SHARED:-$(pwd)/../shared}/assets"
data="$shared/data/peanut-seg"
weights="$shared/models/mobilenetv2-imagenet/mobilenetv2_features.safetensors"
bash benches/reference/setup-torch.sh
cargo build --release -q --bin fieldkit
tdir="${CARGO_TARGET_DIR:-target}"; case "$tdir" in /*) ;; *) tdir="$(pwd)/$tdir" ;; esac
fk="$tdir/release/fieldkit"
work=benches/out/segment_vs_torch; mkdir -p "$work"
fkrun="${FIELDKIT_RUN:-$work/fieldkit}"
if [ -z "${FIELDKIT_RUN:-}" ]; then
  rm -rf "$fkrun"
  "$fk" train segment --data "$data" --weights "$weights" --out "$fkrun" --quiet
fi
# The budget: fieldkit's epochs (training and validation), from its metrics.csv.
minutes=$(python3 -c "import csv,sys; print(sum(float(r['seconds']) for r in csv.DictReader(open(sys.argv[1]))) / 60)" "$fkrun/metrics.csv")
torch="${TORCH_RUN:-$work/torch}"
if [ -z "${TORCH_RUN:-}" ]; then
  rm -rf "$torch"
  (cd benches/reference && /usr/bin/python3 torch_seg_reference.py "$data" "$weights" "$(cd ../.. && pwd)/$torch" --minutes "$minutes")
fi
"$fk" card init --model "$torch/model.onnx" --preset segment --classes background,crop,weed --size 384x288 --force \
  --source "torchvision LRASPP (benches/reference/torch_seg_reference.py)" > /dev/null
"$fk" eval --model "$fkrun/model.onnx" --data "$data" --split valid --json "$work/fieldkit_valid.json" > /dev/null
"$fk" eval --model "$torch/model.onnx" --data "$data" --split valid --json "$work/torch_valid.json" > /dev/null
python3 - "$work" "$fkrun" "$torch" "$minutes" "$out" <<'PY'
import json, sys
work, fkrun, torch, minutes, out = sys.argv[1:]
f, t = json.load(open(f"{work}/fieldkit_valid.json")), json.load(open(f"{work}/torch_valid.json"))
tt = json.load(open(f"{torch}/torch_train.json"))
row = lambda e: {"miou": e["miou"], "pixel_acc": e["pixel_acc"], **{c["name"] + "_iou": c["iou"] for c in e["per_class"]}}
doc = {"data": "peanut-seg valid (61 photos)", "budget_minutes": float(minutes),
       "fieldkit": {**row(f), "train_minutes": float(minutes)},
       "torchvision": {**row(t), "train_minutes": tt["train_seconds"] / 60, "epochs": len(tt["epochs"]),
                       "images_per_s": tt["images_seen"] / tt["train_seconds"], "tool": tt["tool"]}}
json.dump(doc, open(out, "w"), indent=1)
print(f"{'':12} {'mIoU':>7} {'crop':>7} {'weed':>7} {'min':>6}")
for k in ("fieldkit", "torchvision"):
    r = doc[k]
    print(f"{k:12} {r['miou']:7.4f} {r['crop_iou']:7.4f} {r['weed_iou']:7.4f} {r['train_minutes']:6.1f}")
print(f"wrote {out}")
PY
