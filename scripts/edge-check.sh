#!/usr/bin/env bash
# The slim aarch64 build against the x86_64 one, both from the `edge` profile: the runtime
# crate's tests (goldens from onnxruntime) under qemu-aarch64, then `fieldkit predict` on the shared
# MobileNetV2 features and YOLOX-nano with both binaries, and `bench` on a tiny classifier; the
# outputs must agree (features <= 1e-4 max abs, the same detections with scores <= 1e-4 and
# boxes <= 0.01 px). Timings under qemu are emulation, not performance numbers.
#   bash scripts/edge-check.sh            (needs ../shared or FIELDKIT_SHARED)
# EDGE_X86_BIN=PATH compares against that x86 binary (CI: its release build, same code) instead
# of building the x86 edge binary. The aarch64 binary must stay within EDGE_MAX_MB (16; 15 until tracking and streaming video
# joined the slim build, +0.2 MB).
# EDGE_INT8_MODEL=PATH (an INT8 QDQ classifier with its card, e.g. `fieldkit demo`'s
# model.int8.onnx; CI sets it) adds the quantized path: x86 and the aarch64 binary on three
# emulated cores (Cortex-A76: SDOT, Cortex-A72: plain NEON, qemu's max: SVE) classify eight
# vendored weed images with it (the same top-1 on each, probabilities within 1e-3), and each
# core's `bench --profile` must show its integer products on the kernel that core should take.
# EDGE_F16_MODEL=PATH (an fp32 classifier with its card; CI: the demo's) runs it with
# `--precision f16` on the Cortex-A76 (FEAT_FP16: tract's arm64fp16 kernels, which its profile
# must show) and the A72 (no FEAT_FP16: emulated): the same top-1 as x86's fp32 on the eight
# images, probabilities within 0.05 (half-precision rounding; measured 0.014).
# Writes runs/edge/{sizes.json,agreement.json} and both binaries' predictions.
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${FIELDKIT_SHARED:-$(pwd)/../shared}/assets"
out=runs/edge; rm -rf "$out"; mkdir -p "$out"
tdir="${CARGO_TARGET_DIR:-target}"
# Under qemu a YOLOX-nano inference takes ~90 s, so two shared-model tests that check no
# aarch64 kernel of their own are left to the x86 ignored tier: the reference-pipeline detections
# (the predict comparison below holds the aarch64 pipeline to x86 on the same four images, more
# tightly) and the NNEF cache round trip (serialisation, not kernels). The raw YOLOX and
# MobileNetV2 goldens still run here, in both layouts.
FIELDKIT_SHARED="$(dirname "$shared")" bash scripts/build-aarch64.sh --test -- --include-ignored \
  --skip yolox_nano_detections_match_reference_pipeline --skip shared_models_from_the_nnef_cache_match_onnx_bit_for_bit
if [ -n "${EDGE_X86_BIN:-}" ]; then
  x86="$EDGE_X86_BIN"
else
  cargo build --profile edge --no-default-features --bin fieldkit
  x86="$tdir/edge/fieldkit"
fi
arm="$tdir/aarch64-unknown-linux-gnu/edge/fieldkit"
qemu=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
cp "$shared/models/mobilenetv2-imagenet/mobilenetv2_features_bnfolded.onnx" "$work/mnv2.onnx"
cp "$shared/models/yolox-nano-coco/yolox_nano_416x416.onnx" "$work/yolox.onnx"
"$x86" card init --model "$work/mnv2.onnx" --preset features --classes features --size 224 > /dev/null
"$x86" card init --model "$work/yolox.onnx" --preset yolox --size 416 --classes "$shared/models/yolox-nano-coco/coco.names" > /dev/null
for m in mnv2 yolox; do
  "$x86" predict --model "$work/$m.onnx" --no-images --conf 0.25 --out "$out/x86_$m" "$shared/images" > /dev/null
  "${qemu[@]}" "$arm" predict --model "$work/$m.onnx" --no-images --conf 0.25 --out "$out/arm_$m" "$shared/images" > /dev/null
done
echo "--- fieldkit bench under qemu-aarch64 (emulated: not performance numbers)"
# Only that the command works on aarch64 matters here, so it measures the runtime's tiny test
# classifier: the shared models' aarch64 outputs are checked by predict above, and one
# MobileNetV2-224 inference alone takes ~65 s under qemu (YOLOX-nano more).
cp runtime/tests/golden/tiny_classifier.onnx "$work/tiny.onnx"
cp runtime/tests/fixtures/tiny_classifier.card.json "$work/tiny.json"
"${qemu[@]}" "$arm" bench --model "$work/tiny.onnx" --runs 5 --warmup 1 --workers 1 --json "$out/arm_bench.json"
# Eight images for the classifier checks: every sixth file of the vendored weed valid split.
mkdir -p "$work/weed_images"
find assets/data/weed-mini/valid -type f | sort | awk 'NR % 6 == 1' | head -n 8 | xargs -I{} cp {} "$work/weed_images/"
# on_core TAG CPU MODEL [FLAGS...]: the aarch64 binary under an emulated CPU classifies the eight
# images (into $out/arm_TAG_CPU) and profiles one run (into $out/arm_TAG_profile_CPU.txt),
# then names the kernels its products ran on.
on_core() {
  local tag="$1" cpu="$2" model="$3"
  shift 3
  "${qemu[@]}" -cpu "$cpu" "$arm" predict --model "$model" "$@" --no-images --top-k 9 \
    --out "$out/arm_${tag}_$cpu" "$work/weed_images" > /dev/null
  "${qemu[@]}" -cpu "$cpu" "$arm" bench --model "$model" "$@" --runs 1 --warmup 0 --workers 1 --profile 1 \
    --json "$out/arm_${tag}_profile_$cpu.json" > "$out/arm_${tag}_profile_$cpu.txt" 2>&1
  # The kernels come from every node of the JSON profile: the printed table lists only the eight
  # slowest nodes, and under emulation those can all be float ops (CI once showed no product).
  kernels_in "$out/arm_${tag}_profile_$cpu.json" > "$out/arm_${tag}_kernels_$cpu.txt"
  echo "$cpu: $(grep -m1 'kernels for' "$out/arm_${tag}_profile_$cpu.txt"); products on" \
    "$(tr '\n' ' ' < "$out/arm_${tag}_kernels_$cpu.txt")"
}
# kernels_in PROFILE_JSON: the matrix-product kernels named in any node of a `bench --json` profile,
# one per line, as `with [NAME]`.
kernels_in() {
  python3 - "$1" <<'PY'
import json, re, sys
doc = json.load(open(sys.argv[1]))
names = {k for p in doc.get("profiles", []) for n in p["profile"]["nodes"]
         for k in re.findall(r"with \[[a-z0-9_]*\]", n.get("detail", ""))}
print("\n".join(sorted(names)))
PY
}
if [ -n "${EDGE_INT8_MODEL:-}" ]; then
  echo "--- INT8: $EDGE_INT8_MODEL on x86 and on three emulated ARM cores"
  cp "$EDGE_INT8_MODEL" "$work/int8.onnx"
  cp "${EDGE_INT8_MODEL%.onnx}.json" "$work/int8.json"
  "$x86" predict --model "$work/int8.onnx" --no-images --top-k 9 --out "$out/x86_int8" "$work/weed_images" > /dev/null
  # Each core takes another integer kernel: the Pi 5's Cortex-A76 (and the Orin's A78AE) SDOT,
  # the Pi 4's Cortex-A72 plain NEON, qemu's `max` SVE.
  for cpu in cortex-a76 cortex-a72 max; do
    on_core int8 "$cpu" "$work/int8.onnx"
  done
fi
if [ -n "${EDGE_F16_MODEL:-}" ]; then
  echo "--- --precision f16: $EDGE_F16_MODEL on two emulated ARM cores against x86 fp32"
  cp "$EDGE_F16_MODEL" "$work/f32.onnx"
  cp "${EDGE_F16_MODEL%.onnx}.json" "$work/f32.json"
  "$x86" predict --model "$work/f32.onnx" --no-images --top-k 9 --out "$out/x86_f32" "$work/weed_images" > /dev/null
  for cpu in cortex-a76 cortex-a72; do
    on_core f16 "$cpu" "$work/f32.onnx" --precision f16
  done
fi
python3 - "$out" "$x86" "$arm" "${EDGE_MAX_MB:-16}" <<'PY'
import json, os, sys
out, x86, arm, max_mb = sys.argv[1:5]
def load(p):
    return [json.loads(l) for l in open(p)]
report = {"sizes_bytes": {"x86_64": os.path.getsize(x86), "aarch64": os.path.getsize(arm)}}
ok = True
for m in ("mnv2", "yolox"):
    a, b = load(f"{out}/x86_{m}/predictions.jsonl"), load(f"{out}/arm_{m}/predictions.jsonl")
    assert [r["image"] for r in a] == [r["image"] for r in b], "different images"
    worst_feat = worst_score = worst_box = 0.0
    same = True
    for ra, rb in zip(a, b):
        if "features" in ra:
            worst_feat = max(worst_feat, max(abs(x - y) for x, y in zip(ra["features"], rb["features"])))
        if "detections" in ra:
            da, db = ra["detections"], rb["detections"]
            if [d["class"] for d in da] != [d["class"] for d in db]:
                same = False
                continue
            for x, y in zip(da, db):
                worst_score = max(worst_score, abs(x["score"] - y["score"]))
                worst_box = max(worst_box, max(abs(p - q) for p, q in zip(x["bbox"], y["bbox"])))
    n_det = sum(len(r.get("detections", [])) for r in a)
    good = same and worst_feat <= 1e-4 and worst_score <= 1e-4 and worst_box <= 0.01
    ok &= good
    report[m] = {"images": len(a), "detections": n_det, "same_detections": same, "max_abs_feature": worst_feat,
                 "max_abs_score": worst_score, "max_abs_box_px": worst_box, "agree": good}
    print(f"{m}: {len(a)} images, {n_det} detections, same classes {same}, max |diff| features {worst_feat:.2e}, "
          f"scores {worst_score:.2e}, boxes {worst_box:.2e} px -> {'agree' if good else 'DISAGREE'}")
def compare_classes(x86_dir, arm_dir):
    """Images, whether every image has the same top-1, and the largest probability difference."""
    a, b = load(f"{out}/{x86_dir}/predictions.jsonl"), load(f"{out}/{arm_dir}/predictions.jsonl")
    probs = lambda r: {c["index"]: c["score"] for c in r["classes"]}
    same_top = len(a) == len(b) == 8 and all(ra["classes"][0]["index"] == rb["classes"][0]["index"] for ra, rb in zip(a, b))
    worst = max(abs(probs(ra)[i] - probs(rb).get(i, 0.0)) for ra, rb in zip(a, b) for i in probs(ra))
    return len(b), same_top, worst
if os.path.exists(f"{out}/x86_int8/predictions.jsonl"):
    # The integer products are exact on every kernel; the requantization and the float ops
    # around them round alike, so a difference beyond float noise is a wrong aarch64 path.
    report["int8"] = {}
    kernels = {"cortex-a76": "arm64simd_mmm_i32_8x8_dot", "cortex-a72": "arm64simd_mmm_i32_8x8", "max": "sve_mmm_i32_8x8"}
    for cpu, kernel in kernels.items():
        n, same_top, worst = compare_classes("x86_int8", f"arm_int8_{cpu}")
        ran = f"with [{kernel}]" in open(f"{out}/arm_int8_kernels_{cpu}.txt").read()
        good = same_top and worst <= 1e-3 and ran
        ok &= good
        report["int8"][cpu] = {"images": n, "same_top1": same_top, "max_abs_probability": worst,
                               "kernel": kernel, "profile_shows_kernel": ran, "agree": good}
        print(f"int8 on {cpu}: {n} images, same top-1 {same_top}, max |diff| probabilities {worst:.2e}, "
              f"{kernel} in its profile {ran} -> {'agree' if good else 'DISAGREE'}")
if os.path.exists(f"{out}/x86_f32/predictions.jsonl"):
    report["f16"] = {}
    for cpu in ("cortex-a76", "cortex-a72"):
        n, same_top, worst = compare_classes("x86_f32", f"arm_f16_{cpu}")
        profile = open(f"{out}/arm_f16_kernels_{cpu}.txt").read()
        native = "with [arm64fp16_mmm_f16" in profile
        good = same_top and worst <= 0.05 and (native or cpu != "cortex-a76")
        ok &= good
        report["f16"][cpu] = {"images": n, "same_top1_as_x86_fp32": same_top, "max_abs_probability": worst,
                              "native_f16_kernels": native, "agree": good}
        print(f"f16 on {cpu}: {n} images, same top-1 as x86 fp32 {same_top}, max |diff| probabilities {worst:.2e}, "
              f"native f16 kernels {native} -> {'agree' if good else 'DISAGREE'}")
arm_mb = report["sizes_bytes"]["aarch64"] / 1e6
print(f"binary sizes: aarch64 edge {arm_mb:.2f} MB (budget {max_mb} MB), x86_64 {report['sizes_bytes']['x86_64'] / 1e6:.2f} MB ({x86})")
if arm_mb > float(max_mb):
    print(f"the aarch64 binary is over its {max_mb} MB budget")
    ok = False
json.dump(report, open(f"{out}/agreement.json", "w"), indent=2)
sys.exit(0 if ok else 1)
PY
