#!/usr/bin/env bash
# Regenerates the small vendored subsets in assets/ from ../shared (evenly spaced picks
# from the sorted file lists, so re-running gives the same files). See assets/README.md.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shared="${FIELDKIT_SHARED:-$root/../shared}/assets/data"

pick() { # pick DIR N -> N evenly spaced files of DIR, sorted
  local files=() n="$2"
  mapfile -t files < <(ls "$1" | sort)
  local total=${#files[@]}
  for ((i = 0; i < n && i < total; i++)); do echo "${files[$((i * total / n))]}"; done
}

out="$root/assets/data/weed-mini"
rm -rf "$out"
for split in train:16 valid:6; do
  s=${split%%:*}; n=${split##*:}
  for cdir in "$shared/weed-cls9/$s"/*/; do
    c=$(basename "$cdir"); mkdir -p "$out/$s/$c"
    pick "$cdir" "$n" | while read -r f; do cp "$cdir/$f" "$out/$s/$c/"; done
  done
done

out="$root/assets/data/sesame-mini"
rm -rf "$out"
for split in train:8 valid:4; do
  s=${split%%:*}; n=${split##*:}
  mkdir -p "$out/images/$s" "$out/labels/$s"
  pick "$shared/sesame-weed-det/images/$s" "$n" | while read -r f; do
    cp "$shared/sesame-weed-det/images/$s/$f" "$out/images/$s/"
    cp "$shared/sesame-weed-det/labels/$s/${f%.*}.txt" "$out/labels/$s/"
  done
done
cp "$shared/sesame-weed-det/data.yaml" "$out/data.yaml"

# Segmentation: 6 train + 3 valid peanut-field photos (480x360 JPEG) with their colour masks.
out="$root/assets/data/peanut-mini"
rm -rf "$out"
for split in train:6 valid:3; do
  s=${split%%:*}; n=${split##*:}
  mkdir -p "$out/$s/images" "$out/$s/masks"
  pick "$shared/peanut-seg/$s/images" "$n" | while read -r f; do
    cp "$shared/peanut-seg/$s/images/$f" "$out/$s/images/"
    cp "$shared/peanut-seg/$s/masks/${f%.*}.png" "$out/$s/masks/"
  done
done
cp "$shared/peanut-seg/classes.csv" "$out/classes.csv"
chmod -R u+w "$root/assets/data"
du -sh "$root/assets/data"/*

# The ImageNet MobileNetV2 backbone (9 MB, Apache-2.0): the demo and the default test tier
# fine-tune from it.
mkdir -p "$root/assets/models/mobilenetv2-imagenet"
cp "$shared/../models/mobilenetv2-imagenet/mobilenetv2_features.safetensors" "$root/assets/models/mobilenetv2-imagenet/"
chmod u+w "$root/assets/models/mobilenetv2-imagenet/"*

# The demo's field-loop detector and the photos it never saw (`fieldkit demo` stage 10), from a
# `fieldkit train detect --holdout` run on sesame-weed-det given as SESAME_DET_RUN (its command
# is in the run's config.json and assets/README.md). The model is quantized to INT8 for tract
# (calibrated on 300 train photos); its card and training record are copied beside it. The
# photos are 8 evenly spaced picks of the run's holdout.txt, one per source photo (Roboflow's
# augmented copies of a photo were held out together): never trained on, never used to pick a
# checkpoint.
if [ -n "${SESAME_DET_RUN:-}" ]; then
  fk="${FIELDKIT:-$root/target/release/fieldkit}"
  det="$root/assets/models/sesame-det"
  rm -rf "$det"
  mkdir -p "$det/training"
  "$fk" quantize --model "$SESAME_DET_RUN/model.onnx" --out "$det/model.int8.onnx" --int8 \
    --calib "$shared/sesame-weed-det/images/train" --calib-limit 300
  rm -f "$det"/model.int8.report.*
  for f in config.json metrics.csv report.md holdout.txt model.json; do cp "$SESAME_DET_RUN/$f" "$det/training/"; done
  out="$root/assets/data/sesame-field"
  rm -rf "$out"
  mkdir -p "$out/images/valid" "$out/labels/valid"
  # One file per source photo (the name before Roboflow's ".rf." hash), then evenly spaced.
  mapfile -t held < <(awk -F'.rf.' '!seen[$1]++' "$SESAME_DET_RUN/holdout.txt" | sort)
  for ((i = 0; i < 8; i++)); do
    img="${held[$((i * ${#held[@]} / 8))]}"
    cp "$img" "$out/images/valid/"
    lbl="${img/\/images\//\/labels\/}"
    cp "${lbl%.*}.txt" "$out/labels/valid/"
  done
  printf 'path: .\ntrain: images/valid\nval: images/valid\nnames:\n  0: crop\n  1: weed\n' > "$out/data.yaml"
  du -sh "$det" "$out"
fi
