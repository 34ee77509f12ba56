#!/usr/bin/env bash
# Cross-builds the slim fieldkit for 64-bit ARM (Raspberry Pi 4/5 on a 64-bit OS, Jetson Orin /
# Xavier) on an x86_64 Debian machine: no burn (--no-default-features), the size-tuned `edge`
# profile. Installs what it needs (Debian's aarch64 cross gcc + glibc, qemu-user, the rustup
# target) when missing.
#   bash scripts/build-aarch64.sh          builds $TARGET_DIR/aarch64-unknown-linux-gnu/edge/fieldkit
#   bash scripts/build-aarch64.sh --test [-- TEST ARGS]   also runs the runtime crate's tests under
#                                          qemu-aarch64 (e.g. -- --include-ignored with FIELDKIT_SHARED)
# The linker and the qemu runner are set in .cargo/config.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
need_apt=()
command -v aarch64-linux-gnu-gcc >/dev/null || need_apt+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || need_apt+=(qemu-user)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" > /dev/null
  else
    echo "missing: ${need_apt[*]} (sudo apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
fi
rustup target list --installed 2>/dev/null | grep -qx "$target" || rustup target add "$target"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
cargo build --profile edge --no-default-features --target "$target" --bin fieldkit
bin="${CARGO_TARGET_DIR:-target}/$target/edge/fieldkit"
echo "built $bin: $(stat -c %s "$bin") bytes ($(file -b "$bin" | cut -d, -f1-2))"
# The newest glibc symbol version it needs is the oldest glibc it runs on.
echo "needs glibc >= $(readelf --dyn-syms -W "$bin" | grep -oE 'GLIBC_[0-9.]+' | sort -uV | tail -n 1 | cut -d_ -f2)"
if [ "${1:-}" = "--test" ]; then
  shift
  [ "${1:-}" = "--" ] && shift
  # The shipped profile, so the tests see the optimiser's output that users run. The root
  # package is selected too (none of its targets are): cargo resolves features for the
  # packages a command selects, and for fieldkit-runtime alone it picks other features of
  # libc, serde_json, syn and more than the binary's build above did, so every dependency
  # was compiled a second time in this fat-LTO profile (13 min here). With both selected, the
  # build above is reused and only the runtime's test binaries compile.
  tests=(--lib)
  for t in runtime/tests/*.rs; do tests+=(--test "$(basename "$t" .rs)"); done
  cargo test --profile edge --no-default-features --target "$target" -p fieldkit -p fieldkit-runtime "${tests[@]}" -- "$@"
fi
