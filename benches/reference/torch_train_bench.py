"""PyTorch CPU reference for benches/train_vs_torch.sh: the same MobileNetV2 (torchvision
layout, the same ImageNet weights), the same strategy, input size, batch and step count as
fieldkit's `train_bench` example; prints one JSON line with images/s and peak RSS.

    python3 torch_train_bench.py WEIGHTS.safetensors STRATEGY SIZE [STEPS] [BATCH] [DEVICE] [PRECISION]

STRATEGY: head (frozen backbone forward in eval mode under no_grad: building the head
strategy's feature cache), partial (features.11.. and the classifier train; frozen BatchNorm
in eval mode), full. AdamW, plain cross-entropy, torch threads = cores. DEVICE: cpu (default)
or cuda (benches/train_gpu.sh; the clock waits for the GPU at each step's end). PRECISION:
f32 (default), f16 or bf16: torch.autocast with f32 master weights, and a GradScaler for f16,
what fieldkit's `--precision` does (autocast on the GPU only, as fieldkit).
"""
import json
import resource
import sys
import time

import numpy as np
import torch
import torchvision
from torch_weights import load_safetensors


def main():
    weights, strategy, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    batch = int(sys.argv[5]) if len(sys.argv) > 5 else 16
    device = torch.device(sys.argv[6] if len(sys.argv) > 6 else "cpu")
    precision = sys.argv[7] if len(sys.argv) > 7 else "f32"
    half = {"f32": None, "f16": torch.float16, "bf16": torch.bfloat16}[precision]
    if half is not None and device.type != "cuda":
        sys.exit(f"--precision {precision} is benchmarked on cuda only")
    autocast = lambda: torch.autocast(device.type, dtype=half, enabled=half is not None)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=9)
    missing, unexpected = model.load_state_dict(load_safetensors(weights), strict=False)
    assert not unexpected and all(k.startswith("classifier") for k in missing), (missing, unexpected)
    model = model.to(device)
    i = torch.arange(batch * 3 * size * size, dtype=torch.int64)
    x = ((i * 7919) % 256).float().div(128.0).sub(1.0).reshape(batch, 3, size, size)
    y = torch.arange(batch) % 9
    x, y = x.to(device), y.to(device)
    timed = 0.0
    if strategy == "head":
        model.eval()
        with torch.no_grad():
            for k in range(steps + 2):
                t = time.perf_counter()
                f = torch.nn.functional.adaptive_avg_pool2d(model.features(x), 1).flatten(1)
                assert f.shape == (batch, 1280)
                sync()
                if k >= 2:
                    timed += time.perf_counter() - t
    else:
        frozen = 11 if strategy == "partial" else 0
        for j, layer in enumerate(model.features):
            if j < frozen:
                layer.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
        loss_fn = torch.nn.CrossEntropyLoss()
        scaler = torch.amp.GradScaler(device.type, enabled=half == torch.float16)
        for k in range(steps + 2):
            t = time.perf_counter()
            model.train()
            for j, layer in enumerate(model.features):
                if j < frozen:
                    layer.eval()  # frozen BatchNorm keeps its running statistics
            opt.zero_grad()
            with autocast():
                loss = loss_fn(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            assert torch.isfinite(loss)
            sync()
            if k >= 2:
                timed += time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"tool": f"torch {torch.__version__}", "strategy": strategy, "size": size, "batch": batch, "steps": steps,
                      "images_per_s": steps * batch / timed, "peak_rss_mb": rss, "threads": torch.get_num_threads(),
                      "device": str(device), "precision": precision}))


if __name__ == "__main__":
    main()
