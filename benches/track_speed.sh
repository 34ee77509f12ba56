#!/usr/bin/env bash
# Tracker speed with a crowd: 40 animals (20x30 to 40x60 px boxes walking and turning in a
# 1920x1080 frame while the camera pans) for 3,000 frames at 30 fps, detections simulated at
# the medium noise level (reference/sim_detections.py: misses, jitter, false positives), tracked
# by `fieldkit track` with its defaults and with the motion compensation off. Prints ms per
# frame (tracking and counting, one counting line) and writes WORK_DIR/track_speed.json.
#   bash benches/track_speed.sh [WORK_DIR]       (default runs/track_speed)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-runs/track_speed}"
mkdir -p "$work"
if [ -n "${FIELDKIT:-}" ]; then fk="$FIELDKIT"; else
  cargo build --release --quiet
  fk="${CARGO_TARGET_DIR:-target}/release/fieldkit"
fi
py="$(bash benches/reference/setup.sh | tail -n 1)"
"$py" - "$work/gt.txt" <<'PY'
import sys, numpy as np
rng = np.random.default_rng(0)
n, frames, W, H = 40, 3000, 1920, 1080
pos = np.column_stack([rng.uniform(100, W - 100, n), rng.uniform(100, H - 100, n)])
size = np.column_stack([rng.uniform(20, 40, n), rng.uniform(30, 60, n)])
heading = rng.uniform(0, 2 * np.pi, n)
with open(sys.argv[1], "w") as f:
    for t in range(1, frames + 1):
        heading += rng.normal(0, 0.05, n)
        pos += np.column_stack([np.cos(heading), np.sin(heading)]) * 1.5
        # Walls turn them back; the camera pans slowly left and right.
        for k in range(2):
            lim = (W, H)[k]
            out = (pos[:, k] < 50) | (pos[:, k] > lim - 50)
            heading[out] += np.pi
            pos[:, k] = np.clip(pos[:, k], 50, lim - 50)
        pan = 200 * np.sin(t / 300)
        for i in range(n):
            x = pos[i, 0] - size[i, 0] / 2 + pan
            f.write(f"{t},{i + 1},{x:.2f},{pos[i, 1] - size[i, 1] / 2:.2f},{size[i, 0]:.2f},{size[i, 1]:.2f},1,1,1.0\n")
PY
"$py" benches/reference/sim_detections.py --gt "$work/gt.txt" --out-det "$work/det.txt" --out-gt "$work/gt30.txt" \
  --source-fps 30 --fps 30 --level medium --width 2200 --height 1100 --seed 0 > /dev/null
for mc in true false; do
  "$fk" track --detections "$work/det.txt" --out "$work/tracks-$mc.txt" --frame-rate 30 --motion-compensation "$mc" \
    --line gate:960,0,960,1080 --json "$work/summary-$mc.json" > /dev/null
  "$fk" metrics mot --gt "$work/gt30.txt" --pred "$work/tracks-$mc.txt" --json "$work/mot-$mc.json" > /dev/null
done
"$py" - "$work" <<'PY'
import json, sys
w = sys.argv[1]
out = {}
for mc in ("true", "false"):
    s = json.load(open(f"{w}/summary-{mc}.json")); m = json.load(open(f"{w}/mot-{mc}.json"))
    out[f"motion_compensation_{mc}"] = {"frames": s["frames"], "detections": s["detections"],
        "ms_per_frame": s["ms_per_frame"], "hota": m["hota"], "idf1": m["idf1"], "mota": m["mota"]}
    print(f"motion compensation {mc:5}: {s['frames']} frames, {s['detections'] / s['frames']:.1f} detections per frame, "
          f"{s['ms_per_frame']:.3f} ms/frame; HOTA {m['hota']:.3f} IDF1 {m['idf1']:.3f} MOTA {m['mota']:.3f}")
json.dump(out, open(f"{w}/track_speed.json", "w"), indent=1)
PY
