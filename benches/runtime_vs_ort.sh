#!/usr/bin/env bash
# fieldkit bench on the shared MobileNetV2 and YOLOX-nano, then the interleaved comparison
# with onnxruntime, both in tract's NCHW and channel-last layouts. Writes
# runs/bench/{fieldkit,ort}.json.
#   bash benches/runtime_vs_ort.sh [RUNS] [ROUNDS]
#   MODELS="runs/weed/model.onnx ..." adds fieldkit's own exports (each with its card).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-50}"; rounds="${2:-3}"
shared="${FIELDKIT_SHARED:-$(pwd)/../shared}/assets/models"
out=runs/bench; mkdir -p "$out"
cargo build --release --quiet
fk="${CARGO_TARGET_DIR:-target}/release/fieldkit"
py="$(bash benches/reference/setup.sh | tail -n 1)"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
cp "$shared/mobilenetv2-imagenet/mobilenetv2_features_bnfolded.onnx" "$shared/yolox-nano-coco/yolox_nano_416x416.onnx" "$work/"
"$fk" card init --model "$work/mobilenetv2_features_bnfolded.onnx" --preset features --classes features --size 224
"$fk" card init --model "$work/yolox_nano_416x416.onnx" --preset yolox --size 416 \
  --classes "$shared/yolox-nano-coco/coco.names" --source "Megvii YOLOX-nano (Apache-2.0)"
models=(--model "$work/mobilenetv2_features_bnfolded.onnx" --model "$work/yolox_nano_416x416.onnx")
for m in ${MODELS:-}; do models+=(--model "$m"); done
"$fk" bench "${models[@]}" --layout nchw,nhwc --runs "$runs" --json "$out/fieldkit.json"
"$py" benches/reference/ort_bench.py --fieldkit "$fk" --runs "$runs" --rounds "$rounds" --layout nchw,nhwc \
  "${models[@]}" --json "$out/ort.json"
