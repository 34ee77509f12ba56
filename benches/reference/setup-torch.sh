#!/usr/bin/env bash
# PyTorch CPU for the training comparison (benches/train_vs_torch.sh): Debian's packages
# (torch 1.13 / torchvision 0.14 on bookworm) into the system /usr/bin/python3 (not a venv or a
# python3 earlier on PATH). PyPI's default torch
# wheel bundles CUDA (gigabytes), which a CPU comparison does not need. Debian's torch calls
# the system BLAS for matrix products (linear layers, RoI heads): the reference libblas3 does
# ~4 GFLOP/s here, OpenBLAS ~50, so OpenBLAS is installed too (update-alternatives picks it).
set -euo pipefail
if /usr/bin/python3 -c "import torch, torchvision, numpy" 2>/dev/null \
   && [ -e /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 ]; then
  exit 0
fi
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
sudo_ apt-get update -q
DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -q python3-torch python3-torchvision python3-numpy \
  libopenblas0-pthread
