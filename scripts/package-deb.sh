#!/usr/bin/env bash
# Builds the slim fieldkit (profile `edge`, no burn) and packages it as a .deb: /usr/bin/fieldkit,
# the fieldkit-serve systemd unit, /etc/fieldkit/serve.toml (a conffile: kept across upgrades),
# a udev rule for USB-serial adapters, the licence; postinst creates the `fieldkit` system user
# (in dialout, for the bridge) and /var/lib/fieldkit/models, then enables and starts the service
# when systemd runs.
#   bash scripts/package-deb.sh [amd64|arm64] [OUT_DIR]     (default: this machine's, dist/)
# FIELDKIT_BIN=PATH packages that binary instead of building one (e.g. CI's release build, to
# test the install path without another long build). Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
arch="${1:-$(dpkg --print-architecture)}"; out="${2:-dist}"
if [ -n "${FIELDKIT_BIN:-}" ]; then
  bin="$FIELDKIT_BIN"
else case "$arch" in
  amd64) [ "$(uname -m)" = x86_64 ] || { echo "amd64 packages are built on x86_64" >&2; exit 2; }
         cargo build --profile edge --no-default-features --bin fieldkit >&2
         bin="${CARGO_TARGET_DIR:-target}/edge/fieldkit" ;;
  arm64) bash scripts/build-aarch64.sh >&2
         bin="${CARGO_TARGET_DIR:-target}/aarch64-unknown-linux-gnu/edge/fieldkit" ;;
  *) echo "architecture $arch: use amd64 or arm64" >&2; exit 2 ;;
esac; fi
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
glibc="$(readelf --dyn-syms -W "$bin" | grep -oE 'GLIBC_[0-9.]+' | sort -uV | tail -n 1 | cut -d_ -f2)"
root="$(mktemp -d)"; trap 'rm -rf "$root"' EXIT
install -Dm755 "$bin" "$root/usr/bin/fieldkit"
install -Dm644 deploy/fieldkit-serve.service "$root/lib/systemd/system/fieldkit-serve.service"
install -Dm644 deploy/debian/serve.toml "$root/etc/fieldkit/serve.toml"
install -Dm644 deploy/debian/60-fieldkit-serial.rules "$root/lib/udev/rules.d/60-fieldkit-serial.rules"
mkdir -p "$root/usr/share/doc/fieldkit"
{ echo "fieldkit: Apache-2.0"; echo; cat LICENSE; echo; echo "Embedded font (report rendering): DejaVu Sans Mono"; echo; cat core/assets/fonts/LICENSE-DejaVu.txt; } > "$root/usr/share/doc/fieldkit/copyright"
install -Dm644 docs/deploy.md "$root/usr/share/doc/fieldkit/deploy.md"
install -Dm644 firmware-bridge/bridge.toml "$root/usr/share/doc/fieldkit/examples/bridge.toml"
mkdir -p "$root/DEBIAN"
for s in postinst prerm postrm; do install -m755 "deploy/debian/$s" "$root/DEBIAN/$s"; done
echo /etc/fieldkit/serve.toml > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/control" <<CONTROL
Package: fieldkit
Version: $version
Architecture: $arch
Maintainer: fieldkit developers <fieldkit@example.invalid>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: libc6 (>= $glibc), adduser | passwd
Section: science
Priority: optional
Homepage: https://example.invalid/fieldkit
Description: farm-robot vision models from workstation to field
 One binary to check, evaluate, quantize (INT8/FP16), benchmark and serve ONNX vision models
 with tract, and to drive a spray microcontroller from detections. This edge build has no
 training backend. The fieldkit-serve service answers HTTP and KServe v2 on 127.0.0.1:8080.
CONTROL
mkdir -p "$out"
deb="$out/fieldkit_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb.tmp" >&2
mv "$deb.tmp" "$deb"
echo "$deb"
