"""The real client libraries against a running `fieldkit serve`: tritonclient[http] (KServe v2 /
Open Inference Protocol: health, metadata, readiness, infer) and prometheus_client's OpenMetrics
parser on /metrics. Exits non-zero on any mismatch.

usage: serve_clients.py HOST:PORT MODEL ONNX   (ONNX: the served model, run in onnxruntime for parity)
"""
import sys

import numpy as np
import onnxruntime as ort
import tritonclient.http as httpclient
import urllib.request
from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main():
    url, model, onnx_path = sys.argv[1], sys.argv[2], sys.argv[3]
    c = httpclient.InferenceServerClient(url=url)
    assert c.is_server_live(), "not live"
    assert c.is_server_ready(), "not ready"
    assert c.is_model_ready(model), "model not ready"
    meta = c.get_model_metadata(model)
    inp, out = meta["inputs"][0], meta["outputs"][0]
    shape = [int(d) for d in inp["shape"]]
    print(f"metadata: input {inp['name']} {inp['datatype']} {shape}, output {out['name']} {out['shape']}")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    ti = httpclient.InferInput(inp["name"], shape, "FP32")
    ti.set_data_from_numpy(x, binary_data=False)
    to = httpclient.InferRequestedOutput(out["name"], binary_data=False)
    r = c.infer(model, [ti], outputs=[to], request_id="parity-1")
    got = r.as_numpy(out["name"])
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    diff = float(np.abs(got.reshape(-1) - want.reshape(-1)).max())
    print(f"infer via tritonclient vs onnxruntime: max abs diff {diff:.2e}")
    assert diff <= 1e-4, diff
    # The binary tensor extension (tritonclient's default).
    tb = httpclient.InferInput(inp["name"], shape, "FP32")
    tb.set_data_from_numpy(x, binary_data=True)
    got_b = c.infer(model, [tb]).as_numpy(out["name"])
    diff_b = float(np.abs(got_b.reshape(-1) - want.reshape(-1)).max())
    print(f"infer with a binary input tensor: max abs diff {diff_b:.2e}")
    assert diff_b <= 1e-4, diff_b
    text = urllib.request.urlopen(f"http://{url}/metrics").read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ["fieldkit_requests", "fieldkit_queue_wait_seconds", "fieldkit_inference_seconds", "fieldkit_queue_depth",
                 "fieldkit_models_loaded", "fieldkit_worker_busy_ratio", "fieldkit_resident_memory_bytes"]:
        assert name in families, f"{name} missing from /metrics: {sorted(families)}"
    infer_ok = [s for s in families["fieldkit_requests"].samples
                if s.labels.get("route") == "/v2/models/{name}/infer" and s.labels.get("status") == "200"]
    assert infer_ok and infer_ok[0].value >= 1, infer_ok
    print(f"/metrics parsed by prometheus_client (OpenMetrics): {len(families)} families")
    print("ok")


if __name__ == "__main__":
    main()
