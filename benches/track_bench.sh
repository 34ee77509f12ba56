#!/usr/bin/env bash
# Side-by-side tracking benchmark: fieldkit's ByteTrack beside `trackers` (ByteTrackTracker,
# OCSORTTracker) and boxmot (ByteTrack, OcSort) on the same simulated detections of the shared
# verschoor-cows sequences, at three noise levels and 60 / 15 / 5 fps, scored by TrackEval.
#   bash benches/track_bench.sh [WORK_DIR]        (default runs/track_bench)
#   QUICK=1 bash benches/track_bench.sh            one sequence, level medium, 60 and 5 fps, the first
#                                                  600 source frames (about a minute)
# Settings (environment): SEQS, LEVELS, FPS_LIST, MAX_FRAMES (source frames, 0 = all), SEED (0),
# TRACKERS (the reference trackers; 'none' for fieldkit alone), FK_VARIANTS (extra fieldkit runs, 'NAME:FLAGS|NAME:FLAGS', e.g.
# 'fieldkit-m0.9:--match-thresh 0.9'; each scored like a tracker of its own), FIELDKIT (binary; default: cargo build --release, then
# target/release/fieldkit), FIELDKIT_SHARED (../shared), RESULT (the JSON; default
# benches/results/track_bench.json, or WORK_DIR/track_bench.json with QUICK=1).
# Per level x fps x sequence: reference/sim_detections.py simulates detections (fixed seed),
# `fieldkit track --frame-rate F` and reference/track_reference.py (each tracker, frame rate F)
# track them, `fieldkit metrics mot` scores fieldkit's result; then reference/mot_score.py scores
# every result with TrackEval (combined over the sequences with TrackEval's combine_sequences),
# checks fieldkit's metrics against TrackEval's, prints the tables and writes the JSON.
# One process at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
start=$(date +%s)
quick="${QUICK:-0}"
if [ "$quick" = 1 ]; then
  seqs="${SEQS:-COW809_1}"; levels="${LEVELS:-medium}"; fps_list="${FPS_LIST:-60 5}"; max_frames="${MAX_FRAMES:-600}"
else
  seqs="${SEQS:-COW809_1 COW809_2 COW809_4 COW810_1}"; levels="${LEVELS:-low medium high}"
  fps_list="${FPS_LIST:-60 15 5}"; max_frames="${MAX_FRAMES:-0}"
fi
seed="${SEED:-0}"
trackers="${TRACKERS:-trackers-bytetrack trackers-ocsort boxmot-bytetrack boxmot-ocsort}"
[ "$trackers" = none ] && trackers=""
variants=()
if [ -n "${FK_VARIANTS:-}" ]; then IFS='|' read -ra variants <<< "$FK_VARIANTS"; fi
for v in "${variants[@]}"; do
  case "${v%%:*}" in ''|*/*|gt|det|fieldkit) echo "FK_VARIANTS: bad name '${v%%:*}'" >&2; exit 2;; esac
done
data="${FIELDKIT_SHARED:-$repo/../shared}/assets/tracks/verschoor-cows"
work="${1:-runs/track_bench}"
if [ "$quick" = 1 ]; then result="${RESULT:-$work/track_bench.json}"; else result="${RESULT:-benches/results/track_bench.json}"; fi
if [ -n "${FIELDKIT:-}" ]; then fk="$FIELDKIT"; else
  cargo build --release --quiet
  fk="${CARGO_TARGET_DIR:-target}/release/fieldkit"
fi
py="$(bash benches/reference/setup.sh | tail -n 1)"
ref=benches/reference
for s in $seqs; do [ -f "$data/$s/gt/gt.txt" ] || { echo "missing $data/$s/gt/gt.txt" >&2; exit 1; }; done
rm -rf "$work"; mkdir -p "$work"

for level in $levels; do
  for fps in $fps_list; do
    d="$work/$level/fps$fps"
    mkdir -p "$d/gt" "$d/det" "$d/fieldkit"
    for t in $trackers; do mkdir -p "$d/$t"; done
    for s in $seqs; do
      "$py" $ref/sim_detections.py --gt "$data/$s/gt/gt.txt" --out-det "$d/det/$s.txt" --out-gt "$d/gt/$s.txt" \
        --fps "$fps" --level "$level" --seed "$seed" --max-frames "$max_frames" > "$d/gt/$s.sim.json"
      frames=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["frames"])' "$d/gt/$s.sim.json")
      "$fk" track --detections "$d/det/$s.txt" --out "$d/fieldkit/$s.txt" --frame-rate "$fps" \
        --json "$d/fieldkit/$s.json" > /dev/null
      "$fk" metrics mot --gt "$d/gt/$s.txt" --pred "$d/fieldkit/$s.txt" --json "$d/fieldkit/$s.metrics.json" > /dev/null
      line="$level ${fps}fps $s ($frames frames): fieldkit $("$py" -c 'import json,sys; print("%.3f ms/frame" % json.load(open(sys.argv[1]))["ms_per_frame"])' "$d/fieldkit/$s.json")"
      for v in "${variants[@]}"; do
        name="${v%%:*}"; read -ra flags <<< "${v#*:}"
        mkdir -p "$d/$name"
        "$fk" track --detections "$d/det/$s.txt" --out "$d/$name/$s.txt" --frame-rate "$fps" "${flags[@]}" \
          --json "$d/$name/$s.json" > /dev/null
        "$fk" metrics mot --gt "$d/gt/$s.txt" --pred "$d/$name/$s.txt" --json "$d/$name/$s.metrics.json" > /dev/null
      done
      for t in $trackers; do
        "$py" $ref/track_reference.py --tracker "$t" --detections "$d/det/$s.txt" --out "$d/$t/$s.txt" \
          --frame-rate "$fps" --frames "$frames" --json "$d/$t/$s.json" > /dev/null 2> "$d/$t/$s.log"
        line="$line, $t $("$py" -c 'import json,sys; print("%.3f" % json.load(open(sys.argv[1]))["ms_per_frame"])' "$d/$t/$s.json")"
      done
      echo "$line"
    done
  done
done
tracking_s=$(( $(date +%s) - start ))

"$py" - "$work/meta.json" "$fk" "$seed" "$max_frames" "$tracking_s" "$quick" "$seqs" "$levels" "$fps_list" "$trackers" "${FK_VARIANTS:-}" <<'EOF'
import json, subprocess, sys, platform
from importlib.metadata import version
out, fk, seed, max_frames, tracking_s, quick, seqs, levels, fps_list, trackers, variants = sys.argv[1:]
def v(d):
    try: return version(d)
    except Exception: return None
rev = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.machine())
json.dump({
    'data': 'verschoor-cows (camielv/wildlife-monitoring, LGPL-2.1), 60 fps 1920x1080 drone video gt',
    'sequences': seqs.split(), 'levels': levels.split(), 'fps': [float(f) for f in fps_list.split()],
    'seed': int(seed), 'max_source_frames': int(max_frames), 'quick': quick == '1',
    'trackers': ['fieldkit'] + trackers.split(), 'fieldkit_variants': variants.split('|') if variants else [],
    'fieldkit_binary': fk, 'git': rev + (' (dirty)' if dirty else ''),
    'fieldkit_settings': 'defaults: track_thresh 0.5, low_thresh 0.1, new_track_thresh 0.6, match_thresh 0.8 '
                         '(fused score), track_buffer 30 at 30 fps, --frame-rate F',
    'versions': {d: v(d) for d in ('trackers', 'supervision', 'boxmot', 'trackeval', 'numpy', 'scipy', 'lapx')},
    'torch': v('torch') or 'not installed (boxmot imported with a stand-in module)',
    'cpu': cpu, 'tracking_wall_s': int(tracking_s),
    'timing_note': 'ms/frame: time in the trackers\' update calls only, one process at a time on a shared '
                   'machine; compare within one run',
}, open(out, 'w'), indent=1)
EOF
"$py" $ref/mot_score.py --bench "$work" --meta "$work/meta.json" --out "$result"
echo "wall time: $(( $(date +%s) - start )) s (simulation and tracking ${tracking_s} s); results in $result"
