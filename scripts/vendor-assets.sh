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
chmod -R u+w "$root/assets/data"
du -sh "$root/assets/data"/*

# The ImageNet MobileNetV2 backbone (9 MB, Apache-2.0): the demo and the default test tier
# fine-tune from it.
mkdir -p "$root/assets/models/mobilenetv2-imagenet"
cp "$shared/../models/mobilenetv2-imagenet/mobilenetv2_features.safetensors" "$root/assets/models/mobilenetv2-imagenet/"
chmod u+w "$root/assets/models/mobilenetv2-imagenet/"*
