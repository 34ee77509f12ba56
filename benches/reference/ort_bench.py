"""fieldkit (tract) vs onnxruntime, side by side in one invocation, interleaved in rounds
so machine noise hits both alike. Prints a table with the ratios and writes JSON.

    python ort_bench.py --fieldkit target/release/fieldkit --model M.onnx [--model ...]
                        [--runs 50] [--rounds 3] [--threads 2] [--layout nchw,nhwc] [--json OUT]

Each model needs its card (<model>.json): the input name and size come from it. Both sides
time inference only (tensor in, tensor out) on the same deterministic input. With several
--layout values, fieldkit runs each model once per layout in every round (one row each).
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np
import onnxruntime as ort


def ort_p50(path, input_name, shape, runs, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    x = ((np.arange(int(np.prod(shape)), dtype=np.int64) * 7919) % 256).astype(np.float32).reshape(shape) / 255
    for _ in range(5):
        s.run(None, {input_name: x})
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        s.run(None, {input_name: x})
        t.append((time.perf_counter() - t0) * 1e3)
    return float(np.percentile(t, 50)), float(np.percentile(t, 99))


def fieldkit_bench(exe, path, runs, threads, layout):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "b.json")
        workers = "1" if threads == 1 else f"1,{threads}"
        subprocess.run([exe, "bench", "--model", path, "--runs", str(runs), "--workers", workers, "--layout", layout,
                        "--json", out],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        m = json.load(open(out))["models"][0]
        return m["p50_ms"], m["p99_ms"], {t["workers"]: t["images_per_s"] for t in m["throughput"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fieldkit", default="target/release/fieldkit")
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layout", default="nhwc", help="fieldkit's layout(s), comma-separated")
    ap.add_argument("--json")
    a = ap.parse_args()
    layouts = [l for l in a.layout.split(",") if l]
    rows = []
    for path in a.model:
        card = json.load(open(os.path.splitext(path)[0] + ".json"))
        shape = [1 if d < 0 else d for d in card["input"]["shape"]]
        ours = {l: {"fieldkit_p50": [], "fieldkit_p99": [], "fieldkit_ips": []} for l in layouts}
        ort1, ortk = [], []
        for _ in range(a.rounds):
            for l in layouts:
                p50, p99, ips = fieldkit_bench(a.fieldkit, path, a.runs, a.threads, l)
                ours[l]["fieldkit_p50"].append(p50)
                ours[l]["fieldkit_p99"].append(p99)
                ours[l]["fieldkit_ips"].append(ips.get(a.threads, ips.get(1)))
            ort1.append(ort_p50(path, card["input"]["name"], shape, a.runs, 1)[0])
            ortk.append(ort_p50(path, card["input"]["name"], shape, a.runs, a.threads)[0])
        for l in layouts:
            med = {k: statistics.median(v) for k, v in ours[l].items()}
            med["model"] = os.path.basename(path) + (f" [{l}]" if len(layouts) > 1 else "")
            med["layout"] = l
            med["ort1_p50"] = statistics.median(ort1)
            med["ortk_p50"] = statistics.median(ortk)
            med["ratio_vs_ort1"] = med["fieldkit_p50"] / med["ort1_p50"]
            med["ratio_vs_ortk"] = med["fieldkit_p50"] / med["ortk_p50"]
            med["ort_k_threads_ips"] = 1e3 / med["ortk_p50"]
            rows.append(med)
    print(f"\nonnxruntime {ort.__version__}, {a.rounds} interleaved rounds x {a.runs} runs, medians of round p50s")
    print(f"{'model':44} {'fieldkit p50':>12} {'ORT 1t p50':>11} {'ratio':>6} {'ORT ' + str(a.threads) + 't p50':>11} "
          f"{'ratio':>6} {'fieldkit ' + str(a.threads) + 'w img/s':>18} {'ORT ' + str(a.threads) + 't img/s':>14}")
    for m in rows:
        print(f"{m['model']:44} {m['fieldkit_p50']:>10.2f}ms {m['ort1_p50']:>9.2f}ms {m['ratio_vs_ort1']:>5.2f}x "
              f"{m['ortk_p50']:>9.2f}ms {m['ratio_vs_ortk']:>5.2f}x {m['fieldkit_ips']:>18.1f} {m['ort_k_threads_ips']:>14.1f}")
    if a.json:
        json.dump({"onnxruntime": ort.__version__, "runs": a.runs, "rounds": a.rounds, "threads": a.threads, "models": rows},
                  open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
