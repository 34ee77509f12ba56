#!/usr/bin/env bash
# fieldkit quantize vs onnxruntime quantize_static on a fine-tuned classifier (ONNX + card),
# same calibration images: accuracy drop, size and latency in tract and in onnxruntime.
#   bash benches/quantize_vs_ort.sh MODEL.onnx DATA_ROOT [CALIB_LIMIT]
# DATA_ROOT is an ImageFolder with train/ (calibration) and valid/ (evaluation).
# Writes runs/quantize/{fieldkit_bench,ort_eval}.json and the quantized models.
set -euo pipefail
cd "$(dirname "$0")/.."
model="$1"; data="$2"; limit="${3:-300}"
out=runs/quantize; mkdir -p "$out"
fk="${FK:-}"
if [ -z "$fk" ]; then
  cargo build --release --quiet
  fk="${CARGO_TARGET_DIR:-target}/release/fieldkit"
fi
py="$(bash benches/reference/setup.sh | tail -n 1)"
cp "$model" "$out/fp32.onnx"; cp "${model%.onnx}.json" "$out/fp32.json"
"$py" benches/reference/ort_quantize.py quantize --model "$out/fp32.onnx" --calib "$data/train" --limit "$limit" --out "$out/ort_int8.onnx"
"$fk" quantize --model "$out/fp32.onnx" --out "$out/fieldkit_int8.onnx" --int8 --calib "$data/train" --calib-limit "$limit" \
  --method minmax --val "$data" --max-drop 0.5
"$fk" quantize --model "$out/fp32.onnx" --out "$out/fieldkit_w8.onnx" --weights-only --val "$data"
# The same with the accuracy fallback (no calibration data: layers measured on the val images).
"$fk" quantize --model "$out/fp32.onnx" --out "$out/fieldkit_w8_fb.onnx" --weights-only --val "$data" --max-drop 0.5
# The form for onnxruntime (inputs-outputs placement, 7-bit weights), same budget.
"$fk" quantize --model "$out/fp32.onnx" --out "$out/fieldkit_int8_ort.onnx" --int8 --calib "$data/train" --calib-limit "$limit" \
  --method minmax --target onnxruntime --val "$data" --max-drop 0.5
"$fk" quantize --model "$out/fp32.onnx" --out "$out/fieldkit_fp16.onnx" --fp16 --keep-io-f32
# onnxruntime's INT8 through tract, the deployment path (the others carry theirs in their reports).
"$fk" eval --model "$out/ort_int8.onnx" --data "$data" --json "$out/ort_int8_in_tract.json"
models=(fp32 fieldkit_int8 fieldkit_int8_ort ort_int8 fieldkit_w8 fieldkit_w8_fb fieldkit_fp16)
args=(); for m in "${models[@]}"; do args+=(--model "$out/$m.onnx"); done
# Latency only: tract emulates f16 on x86, so evaluating the FP16 model on the split takes long.
"$fk" bench "${args[@]}" --runs 100 --workers 1 --json "$out/fieldkit_bench.json"
"$py" benches/reference/ort_quantize.py eval --val "$data" "${args[@]}" --json "$out/ort_eval.json"
