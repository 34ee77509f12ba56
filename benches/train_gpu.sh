#!/usr/bin/env bash
# Training throughput per backend (issue 25): images/s of full optimisation steps for the
# classification recipes (MobileNetV2 at 224 px, `partial` = features.11.. and `full`, batch 16)
# and the detection default (320 px, features.4.., batch 16), on every `--device` this build
# and machine can run (`fieldkit train devices`), with PyTorch beside them on the same device:
# CPU always, CUDA where torch sees one. Each GPU backend runs in every `--precision` it
# accepts (f32, f16, bf16; one it refuses is reported and skipped), torch on CUDA the same
# with autocast. On Mesa's software Vulkan (llvmpipe) the wgpu figures only show the path runs.
#
#     bash benches/train_gpu.sh [STEPS] [OUT.json]
#
# A GPU machine has no network: build first (`cargo build --release --features cuda
# --examples -p fieldkit-trainer`) and carry target/release/examples and the torch venv.
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-6}"
out="${2:-benches/results/train_gpu.json}"
mkdir -p "$(dirname "$out")"
features=()
[ -n "${FIELDKIT_CUDA:-}" ] && features=(--features cuda)
# --workspace: `-p fieldkit-trainer` would resolve features for that package alone and build
# the whole stack a second time.
cargo build --release -q --workspace "${features[@]}" --example train_bench --example detect_bench --bin fieldkit
bin="${CARGO_TARGET_DIR:-target}/release"
py="${TORCH_PYTHON:-/usr/bin/python3}"
weights=assets/models/mobilenetv2-imagenet/mobilenetv2_features.safetensors
# The backends that open here; a line like "wgpu (NVIDIA H100 80GB HBM3)".
mapfile -t devices < <("$bin/fieldkit" train devices | grep -v unavailable | grep -v '^ndarray' | cut -d' ' -f1 | grep -v '^vulkan$')
torch_devices=(cpu)
"$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null && torch_devices+=(cuda)
echo "backends: ${devices[*]}; torch: ${torch_devices[*]}"
results=()
printf "%-8s %-10s %-5s %-44s %10s\n" task recipe prec tool "img/s"
row() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(f"{sys.argv[2]:<8} {sys.argv[3]:<10} {r.get('precision', 'f32'):<5} {r['tool'][:44]:<44} {r['images_per_s']:>10.1f}")
PY
}
precisions() { case "$1" in flex|cpu) echo f32 ;; *) echo f32 f16 bf16 ;; esac; }
# One configuration; a failure (a refused precision, a device short of memory: lavapipe
# cannot allocate the 150 MB a 320-px detector batch of 16 asks) is reported and the rest runs.
measure() {
  local task="$1" recipe="$2" label="$3"; shift 3
  local err; err="$(mktemp)"
  if r=$("$@" 2> "$err"); then
    results+=("$r"); row "$r" "$task" "$recipe"
  else
    printf "%-8s %-10s %-5s %-44s %10s\n" "$task" "$recipe" "" "$label: failed:" "-"
    grep -m1 -A0 "can't allocate\|panicked\|precision" "$err" || tail -n 3 "$err"
  fi
  rm -f "$err"
}
for strategy in partial full; do
  for d in "${devices[@]}"; do
    for p in $(precisions "$d"); do
      measure classify "$strategy" "fieldkit on $d in $p" "$bin/examples/train_bench" "$strategy" 224 "$steps" 16 "$d" "$p"
    done
  done
  for d in "${torch_devices[@]}"; do
    for p in $(precisions "$d"); do
      measure classify "$strategy" "torch on $d in $p" "$py" benches/reference/torch_train_bench.py "$weights" "$strategy" 224 "$steps" 16 "$d" "$p"
    done
  done
done
for d in "${devices[@]}"; do
  for p in $(precisions "$d"); do
    measure detect default "fieldkit on $d in $p" "$bin/examples/detect_bench" 320 4 "$steps" 16 "$d" "$p"
  done
done
printf '%s\n' "${results[@]}" | python3 -c "import json,sys; json.dump([json.loads(l) for l in sys.stdin], open('$out','w'), indent=1)"
echo "wrote $out"
