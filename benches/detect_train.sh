#!/usr/bin/env bash
# Detection: training throughput of the default detector at 320 px on this machine (images/s
# of whole optimisation steps: forward, SimOTA, YOLOX loss, backward, AdamW) for several
# frozen-backbone boundaries, then, with FULL=1, the default `fieldkit train detect` recipe on
# ../shared's sesame-weed-det, evaluated on its valid split (wall time, mAP50, mAP50-95).
#
#     bash benches/detect_train.sh [STEPS] [OUT.json]          throughput only
#     FULL=1 bash benches/detect_train.sh                      + the default run (~80 min on 2 cores;
#                                                               EPOCHS=N, EXTRA="--unfreeze-from 4" ...)
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-4}"
out="${2:-benches/results/detect_train.json}"
mkdir -p "$(dirname "$out")"
cargo build --release -q -p fieldkit-trainer --example detect_bench
cargo build --release -q --bin fieldkit
bench="${CARGO_TARGET_DIR:-target}/release/examples/detect_bench"
fk="${CARGO_TARGET_DIR:-target}/release/fieldkit"
results=()
printf "%5s %14s %8s %10s %10s\n" size unfreeze_from batch "img/s" "RSS MB"
for from in 14 7 4 0; do
  r=$("$bench" 320 "$from" "$steps" 16)
  results+=("$r")
  python3 -c "import json,sys; a=json.loads(sys.argv[1]); print(f\"{a['size']:>5} {a['unfreeze_from']:>14} {a['batch']:>8} {a['images_per_s']:>10.2f} {a['peak_rss_mb']:>10.0f}\")" "$r"
done
printf '%s\n' "${results[@]}" | python3 -c "import json,sys; json.dump([json.loads(l) for l in sys.stdin], open('$out','w'), indent=1)"
echo "wrote $out"
if [ "${FULL:-0}" = 1 ]; then
  shared="${FIELDKIT_SHARED:-../shared}/assets"
  run="runs/detect-sesame-$(date +%Y%m%d-%H%M%S)"
  t0=$(date +%s)
  "$fk" train detect --data "$shared/data/sesame-weed-det/data.yaml" --out "$run" \
    --weights "$shared/models/mobilenetv2-imagenet/mobilenetv2_features.safetensors" ${EPOCHS:+--epochs "$EPOCHS"} ${EXTRA:-}
  echo "wall time $(( $(date +%s) - t0 )) s; report $run/report.md"
  "$fk" eval --model "$run/model.onnx" --data "$shared/data/sesame-weed-det/data.yaml" --split val --json "$run/eval_val.json"
fi
