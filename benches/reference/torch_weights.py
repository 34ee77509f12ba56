"""The shared ImageNet MobileNetV2 safetensors (torchvision key names) as a torch state dict,
for the torch reference scripts; no safetensors package needed."""
import json
import struct

import numpy as np
import torch


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", f"{k}: dtype {v['dtype']} (F32 expected)"
        a, b = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(body[a:b], dtype=np.float32).reshape(v["shape"]).copy())
    return out
