#!/usr/bin/env bash
# A/B of one patched-tract knob in one binary: `fieldkit bench` with the knob set (the patch
# off, or another choice) and unset (the default), alternated round by round, so that the
# machine's drift hits both sides alike. Prints p50 per round and the ratio, writes JSON.
#
#   bash benches/tract_knob_ab.sh KNOB=VALUE OUT.json ROUNDS RUNS MODEL...
#   bash benches/tract_knob_ab.sh TRACT_QDQ_DEPTHWISE=0 benches/results/x.json 3 200 a.onnx b.onnx
#
# Each MODEL needs its card beside it (fieldkit's own exports have one).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 5 ] || [[ "$1" != *=* ]]; then
  echo "usage: $0 KNOB=VALUE OUT.json ROUNDS RUNS MODEL..." >&2
  exit 2
fi
knob="$1" out="$2" rounds="$3" runs="$4"
shift 4
fk="${CARGO_TARGET_DIR:-target}/release/fieldkit"
[ -x "$fk" ] || { echo "build first: cargo build --release ($fk missing)" >&2; exit 2; }
models=()
for m in "$@"; do models+=(--model "$m"); done
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for r in $(seq "$rounds"); do
  env "$knob" "$fk" bench "${models[@]}" --runs "$runs" --workers 1 --json "$work/knob-$r.json" > /dev/null 2>&1
  "$fk" bench "${models[@]}" --runs "$runs" --workers 1 --json "$work/default-$r.json" > /dev/null 2>&1
done
python3 - "$work" "$knob" "$rounds" "$out" <<'EOF'
import json, statistics, sys
work, knob, rounds, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def p50s(side):
    rows = {}
    for r in range(1, rounds + 1):
        for m in json.load(open(f"{work}/{side}-{r}.json"))["models"]:
            rows.setdefault(m["model"], []).append(m["p50_ms"])
    return rows
knob_rows, default_rows = p50s("knob"), p50s("default")
system = json.load(open(f"{work}/default-1.json")).get("system")
result = {"knob": knob, "rounds": rounds, "system": system, "models": []}
print(f"{'model':40s} {knob + ' p50 ms':>34s} {'default p50 ms':>26s}  default/knob")
for model, knob_p50 in knob_rows.items():
    default_p50 = default_rows[model]
    ratio = statistics.median(default_p50) / statistics.median(knob_p50)
    fmt = lambda xs: " / ".join(f"{x:.2f}" for x in xs)
    print(f"{model:40s} {fmt(knob_p50):>34s} {fmt(default_p50):>26s}  {ratio:.2f}x")
    result["models"].append({"model": model, "knob_p50_ms": knob_p50, "default_p50_ms": default_p50,
                             "default_over_knob": round(ratio, 3)})
# Within one bench call the models run back to back, so their ratio drifts less than either.
models = list(knob_rows)
for model in models[1:]:
    per_round = lambda rows: [a / b for a, b in zip(rows[model], rows[models[0]])]
    k, d = statistics.median(per_round(knob_rows)), statistics.median(per_round(default_rows))
    print(f"{model} / {models[0]} within rounds (median): {knob} {k:.2f}x, default {d:.2f}x")
    result.setdefault("within_round_ratios", []).append(
        {"model": model, "over": models[0], "knob": round(k, 3), "default": round(d, 3)})
tmp = out + ".tmp"
with open(tmp, "w") as f:
    json.dump(result, f, indent=1)
import os
os.replace(tmp, out)
print(f"wrote {out}")
EOF
