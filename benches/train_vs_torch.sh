#!/usr/bin/env bash
# Training throughput, fieldkit (burn flex) vs PyTorch CPU, side by side on this machine:
# MobileNetV2 with the vendored ImageNet weights, batch 16, for the head (feature
# extraction), partial (features.11..) and full strategies at 64 and 224 px. Each
# configuration runs in its own process (own peak RSS), the two tools interleaved.
#
#     bash benches/train_vs_torch.sh [STEPS] [OUT.json]
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-10}"
out="${2:-benches/results/train_vs_torch.json}"
mkdir -p "$(dirname "$out")"
bash benches/reference/setup-torch.sh
cargo build --release -q -p fieldkit-trainer --example train_bench
bench="${CARGO_TARGET_DIR:-target}/release/examples/train_bench"
weights=assets/models/mobilenetv2-imagenet/mobilenetv2_features.safetensors
results=()
printf "%-8s %5s %14s %14s %8s %12s %12s\n" strategy size "fieldkit img/s" "torch img/s" ratio "fk RSS MB" "torch RSS MB"
for size in 64 224; do
  for strategy in head partial full; do
    n=$steps; [ "$size" = 224 ] && [ "$strategy" != head ] && n=$(( (steps + 1) / 2 ))
    fk=$("$bench" "$strategy" "$size" "$n" 16)
    th=$(/usr/bin/python3 benches/reference/torch_train_bench.py "$weights" "$strategy" "$size" "$n" 16)
    results+=("$fk" "$th")
    python3 - "$fk" "$th" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{a['strategy']:<8} {a['size']:>5} {a['images_per_s']:>14.1f} {b['images_per_s']:>14.1f} {a['images_per_s']/b['images_per_s']:>8.2f} {a['peak_rss_mb']:>12.0f} {b['peak_rss_mb']:>12.0f}")
PY
  done
done
printf '%s\n' "${results[@]}" | python3 -c "import json,sys; json.dump([json.loads(l) for l in sys.stdin], open('$out','w'), indent=1)"
echo "wrote $out (ratio = fieldkit / torch images per second)"
