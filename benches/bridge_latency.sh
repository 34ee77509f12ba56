#!/usr/bin/env bash
# Host -> simulated MCU over a pseudo-terminal: acknowledgement round trip of actuations and
# how the link copes with line faults. Prints a table and writes benches/out/bridge_latency.json.
# Usage: bash benches/bridge_latency.sh [FRAMES]   (default 100 frames at 10 fps = 10 s per run)
set -euo pipefail
cd "$(dirname "$0")/.."
frames="${1:-100}"
cargo build --release -q
bin="${CARGO_TARGET_DIR:-target}/release/fieldkit"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p benches/out
# A weed under a different nozzle every frame, 10 fps.
python3 - "$frames" > "$work/det.jsonl" <<'PY'
import json, sys
for k in range(int(sys.argv[1])):
    x = (k * 53) % 360
    print(json.dumps({"width": 400, "height": 300, "capture_ms": k * 100,
                      "detections": [{"bbox": [x, 0, x + 40, 40], "class": 1, "name": "weed", "score": 0.9}]}))
PY
results=()
for faults in "none:0:0:0" "1%-corrupt:0.01:0.002:0.02"; do
  IFS=: read -r name corrupt drop dup <<<"$faults"
  "$bin" bridge simulate-mcu --port "$work/mcu" --log "$work/mcu-$name.jsonl" --corrupt "$corrupt" --drop "$drop" \
    --duplicate "$dup" --seed 1 > "$work/sim-$name.json" 2>/dev/null &
  sim=$!
  for _ in $(seq 200); do [ -e "$work/mcu" ] && break; sleep 0.01; done
  "$bin" bridge --port "$work/mcu" --config firmware-bridge/bridge.toml --detections "$work/det.jsonl" \
    --report "$work/report-$name.json" --quiet > /dev/null
  kill "$sim"; wait "$sim" 2>/dev/null || true
  results+=("$name" "$work/report-$name.json" "$work/mcu-$name.jsonl")
done
python3 - "${results[@]}" <<'PY'
import json, sys
args = sys.argv[1:]
rows = []
print(f"{'line':<12} {'sprays':>6} {'done':>5} {'failed':>6} {'ack p50 ms':>10} {'p99 ms':>7} {'max ms':>7} {'resent':>6} {'corrupt':>7} {'open error p50/max ms':>22}")
for name, rep, log in zip(args[0::3], args[1::3], args[2::3]):
    r = json.load(open(rep))
    opens = {}
    for line in open(log):
        e = json.loads(line)
        if e["event"] == "open":
            opens.setdefault(e["nozzle"], []).append(e["t_us"])
    # How far each physical opening is from the planned open time of the spray that caused it.
    errs = []
    for a in r["actuations"]:
        ts = opens.get(a["nozzle"], [])
        if ts:
            errs.append(min(abs(t - a["open_us"]) for t in ts) / 1e3)
    errs.sort()
    med = errs[len(errs) // 2] if errs else float("nan")
    mx = errs[-1] if errs else float("nan")
    a, l = r["ack_rtt"], r["link"]
    print(f"{name:<12} {len(r['actuations']):>6} {r['done']:>5} {r['failed']:>6} {a['p50_ms']:>10.2f} {a['p99_ms']:>7.2f} {a['max_ms']:>7.2f} {l['retransmits']:>6} {l['corrupt_dropped']:>7} {med:>10.2f} / {mx:<9.2f}")
    rows.append({"line": name, "sprays": len(r["actuations"]), "done": r["done"], "failed": r["failed"], "ack_rtt": a,
                 "link": l, "open_error_ms": {"p50": med, "max": mx}})
json.dump(rows, open("benches/out/bridge_latency.json", "w"), indent=1)
print("wrote benches/out/bridge_latency.json (host and MCU share this machine: a pty, not a UART at the configured baud)")
PY
