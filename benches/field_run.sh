#!/usr/bin/env bash
# The field loop against ground truth: a drive over sesame-weed-det photos (`fieldkit bridge
# field-clip`: photos laid end to end, panned under bridge.toml's camera at its speed, at FPS
# frames a second, default 10) run through a detector by `fieldkit run --realtime` into the simulated spray MCU, once on a
# clean serial line and once with line faults (1 % corrupt bytes, 0.2 % lost bytes, 2 %
# duplicated frames). Prints and writes WORK_DIR/field_run.json: hit rate on weeds, coverage,
# opening / closing error against the plants' edges, crop sprayed, glass-to-nozzle latency
# (capture to the device's acknowledgement), frames dropped.
#   MODEL=RUN/model.onnx [PHOTOS=RUN/holdout.txt] [IMAGES=30] [FPS=10] [CONFIG=bridge.toml]
#   [LINES="clean faulty"] bash benches/field_run.sh [WORK_DIR]
# PHOTOS: a list of photos (one path per line) instead of the valid split, e.g. the photos a
# `train detect --holdout` run kept out: the valid split holds copies of train photos.
# CONFIG: another bridge.toml (e.g. another score threshold); LINES: which lines to run.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-runs/field_run}"
mkdir -p "$work"
: "${MODEL:?MODEL=path/to/model.onnx (a sesame-weed-det detector)}"
shared="${FIELDKIT_SHARED:-$(pwd)/../shared}"
data="$shared/assets/data/sesame-weed-det/data.yaml"
if [ -n "${FIELDKIT:-}" ]; then fk="$FIELDKIT"; else
  cargo build --release --quiet
  fk="${CARGO_TARGET_DIR:-target}/release/fieldkit"
fi
if [ -n "${PHOTOS:-}" ]; then
  # A data.yaml whose val split is the list (paths made absolute).
  list="$work/photos.txt"
  while read -r p; do [ -n "$p" ] && realpath "$p"; done < "$PHOTOS" > "$list"
  printf 'path: %s\ntrain: %s\nval: %s\nnames:\n  0: crop\n  1: weed\n' "$work" "$list" "$list" > "$work/data.yaml"
  # The labels sit beside the photos (images/ -> labels/): the list keeps their paths.
  data="$work/data.yaml"
fi
config="${CONFIG:-firmware-bridge/bridge.toml}"
"$fk" bridge field-clip --data "$data" --config "$config" --out "$work/field.mp4" --images "${IMAGES:-30}" --fps "${FPS:-10}"
runs=()
for faults in ${LINES:-clean faulty}; do
  rm -f "$work/mcu" "$work/mcu-$faults.jsonl"
  if [ "$faults" = faulty ]; then f=(--corrupt 0.01 --drop 0.002 --duplicate 0.02 --seed 1); else f=(); fi
  "$fk" bridge simulate-mcu --port "$work/mcu" --log "$work/mcu-$faults.jsonl" "${f[@]}" --run-for-s 900 > /dev/null 2>&1 &
  sim=$!
  for _ in $(seq 100); do [ -e "$work/mcu" ] && break; sleep 0.05; done
  "$fk" run --source "$work/field.mp4" --realtime --model "$MODEL" --port "$work/mcu" --config "$config" \
    --truth "$work/field.truth.json" --json "$work/run-$faults.json" --spray-report "$work/spray-$faults.json" \
    | grep -v '^  spray'
  kill "$sim" 2> /dev/null || true
  wait "$sim" 2> /dev/null || true
  runs+=("$work/run-$faults.json")
done
python3 - "$work/field_run.json" "$MODEL" "${runs[@]}" <<'PY'
import json, sys
out, model, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = {}
for p in paths:
    r = json.load(open(p))
    f = r["field"]
    rows[p.rsplit("run-", 1)[1][:-5]] = {
        "frames": r["frames"], "dropped": r["dropped"], "fps": r["fps"],
        "weed_passes": f["passes"], "hit_rate": f["hit_rate"], "coverage": f["coverage_mean"],
        "weeds_fully_hit": f"{f['targets_hit']}/{f['targets']}",
        "open_error_ms_p50_p90": f["open_error_ms"], "close_error_ms_p50_p90": f["close_error_ms"],
        "crop_passes_sprayed": f"{f['other_sprayed']}/{f['other_passes']}", "crop_coverage": f["other_coverage_mean"],
        "spray_s": f["spray_s"], "spray_on_weeds": f["on_target"],
        "sprays_on_crop": f"{f['sprays_on_other']}/{f['sprays']}",
        "sprays": r["sprays"], "capture_to_ack_ms": r["latency_ms"].get("ack"),
        "capture_to_result_ms": r["latency_ms"]["total"],
    }
json.dump({"model": model, "runs": rows}, open(out, "w"), indent=1)
# frames processed, their rate and the drops, besides the spray figures
for k, v in rows.items():
    print(f"{k}: {v['frames']} frames at {v['fps']:.1f} fps, {v['dropped']} dropped; hit rate {v['hit_rate']:.3f} "
          f"({v['weed_passes']} weed passes), coverage {v['coverage']:.3f}, crop {v['crop_passes_sprayed']} passes "
          f"sprayed ({v['sprays_on_crop']} sprays touch crop), {100 * (v['spray_on_weeds'] or 0):.0f} % of {v['spray_s']:.1f} nozzle-s on weeds, glass-to-ack p50 {v['capture_to_ack_ms']['p50']:.1f} ms, p99 {v['capture_to_ack_ms']['p99']:.1f} ms")
print(f"written {out}")
PY
