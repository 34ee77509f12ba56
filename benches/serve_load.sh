#!/usr/bin/env bash
# The inference daemon under load: `fieldkit loadtest` against `fieldkit serve` with 1 and with
# 2 workers, the same model and image, N requests at concurrency C each. Reports throughput,
# p50/p99, status counts (errors = neither 200 nor an explicit 503 shed) and the daemon's RSS
# before and after the run (after a warm-up, so start = steady state), then the 2-vs-1 ratio.
#   bash benches/serve_load.sh [MODEL.onnx] [REQUESTS] [CONCURRENCY]
# Without MODEL, a MobileNetV2-224 weed classifier is fine-tuned from the vendored assets first
# (head strategy, a few epochs; the accuracy does not matter here, the graph does).
# Writes runs/serve_load/{workers1,workers2,summary}.json.
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-}"; requests="${2:-10000}"; concurrency="${3:-16}"
out=runs/serve_load; mkdir -p "$out"
cargo build --release --quiet
fk="${CARGO_TARGET_DIR:-target}/release/fieldkit"
if [ -z "$model" ]; then
  model="$out/model/model.onnx"
  if [ ! -f "$model" ]; then
    "$fk" train classify --data assets/data/weed-mini --out "$out/model" \
      --weights assets/models/mobilenetv2-imagenet/mobilenetv2_features.safetensors \
      --strategy head --size 224 --epochs 3 --quiet
  fi
fi
# A camera-sized frame: decoding and resizing it is part of every request.
image="$(find assets/data/sesame-mini/images -name '*.jpg' | sort | head -n 1)"

port=18437
run() {
  local workers="$1"
  "$fk" serve --bind "127.0.0.1:$port" --workers "$workers" --queue 64 --model "m=$model" 2> "$out/serve$workers.log" &
  local pid=$!
  for _ in $(seq 300); do grep -q "serving" "$out/serve$workers.log" && break; sleep 0.1; done
  grep -q "serving" "$out/serve$workers.log" || { cat "$out/serve$workers.log"; kill "$pid"; exit 1; }
  "$fk" loadtest --url "http://127.0.0.1:$port" --model m --image "$image" --concurrency "$concurrency" --requests 200 > /dev/null
  echo "--- $workers worker(s): $requests requests at concurrency $concurrency"
  local rc=0
  "$fk" loadtest --url "http://127.0.0.1:$port" --model m --image "$image" --concurrency "$concurrency" \
    --requests "$requests" --json "$out/workers$workers.json" || rc=$?
  kill -TERM "$pid"; wait "$pid"
  return $rc
}
rc=0
run 1 || rc=$?
run 2 || rc=$?
python3 - "$out" "$model" "$image" <<'PY'
import json, os, sys
out, model, image = sys.argv[1:4]
w1, w2 = (json.load(open(os.path.join(out, f"workers{k}.json"))) for k in (1, 2))
ratio = w2["throughput_rps"] / w1["throughput_rps"]
summary = {"model": model, "image": image, "cores": os.cpu_count(), "workers1": w1, "workers2": w2, "throughput_ratio_2_vs_1": ratio}
tmp = os.path.join(out, "summary.json.tmp")
json.dump(summary, open(tmp, "w"), indent=2)
os.replace(tmp, os.path.join(out, "summary.json"))
print(f"\n| workers | req/s | p50 ms | p99 ms | statuses | errors | RSS start -> end MB |")
print("|---|---|---|---|---|---|---|")
for k, r in ((1, w1), (2, w2)):
    print(f"| {k} | {r['throughput_rps']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['statuses']} | {r['errors']} | {r['rss_start_mb']:.1f} -> {r['rss_end_mb']:.1f} |")
print(f"throughput 2 workers / 1 worker: {ratio:.2f}x on {os.cpu_count()} cores (load generator on the same cores)")
PY
exit $rc
