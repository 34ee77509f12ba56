#!/usr/bin/env bash
# Installs what building and testing fieldkit needs on a Debian machine with rustup.
# Idempotent; CI runs it first.
set -euo pipefail
need_apt=()
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
command -v cc >/dev/null || need_apt+=(gcc)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
# `fieldkit predict` decodes video through ffmpeg when present; its tests use it (optional).
if ! command -v ffmpeg >/dev/null; then
  if [ "$(id -u)" = 0 ]; then need_apt+=(ffmpeg); else echo "note: ffmpeg not found: video input to fieldkit predict is untested" >&2; fi
fi
# `fieldkit run`'s stream tests serve a clip from GStreamer's RTSP server (Debian's Python
# bindings, tests/support/rtsp_server.py) and cut it mid-run.
if ! /usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0")' 2>/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    need_apt+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)
  else
    echo "note: GStreamer's RTSP server not found: fieldkit run's stream-loss test is skipped" >&2
  fi
fi
# The GPU training tests (trainer/tests/gpu.rs, tests/cli_gpu.rs) run on Mesa's software
# Vulkan, lavapipe, where no GPU is present: wgpu sees it as an adapter like any other.
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then need_apt+=(mesa-vulkan-drivers); else echo "note: no software Vulkan (mesa-vulkan-drivers): the GPU training tests skip" >&2; fi
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" > /dev/null
  else
    echo "missing: ${need_apt[*]} (install with apt-get)" >&2
    exit 1
  fi
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup" >&2; exit 1; }
# The firmware-bridge protocol core is checked to build for a Cortex-M4F microcontroller.
rustup target list --installed 2>/dev/null | grep -qx thumbv7em-none-eabihf || rustup target add thumbv7em-none-eabihf
# `.ci/run` checks formatting (rustfmt.toml) and clippy's lints first.
for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done
rustc --version
cargo --version
