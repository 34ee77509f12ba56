#!/usr/bin/env bash
# Runs a command as if the CPU had another cache geometry, to catch results that depend on it.
#
#   bash scripts/cache-geometry.sh L1D_SIZE L1D_WAYS -- COMMAND...
#   bash scripts/cache-geometry.sh 32K 8 -- cargo test --release -p fieldkit-trainer
#
# Why: burn's flex backend multiplies through the `gemm` crate, which sizes its blocks from the
# caches Linux lists under /sys/devices/system/cpu/cpu*/cache. The L1 data cache sets the
# reduction block (kc): 512 for a 32 KiB 8-way L1 (Zen 4, Intel client cores), 1024 for a
# 48 KiB 12-way one (Zen 5, Sapphire Rapids). A product with k between the two is summed in
# one block on one machine and two on the other, so a training run's losses part in the 7th
# digit after the first step and a test tuned on one CPU can fail on another (issue 27).
#
# How: a private mount namespace (root, or an unprivileged user namespace where the kernel
# allows one) in which a made-up cpu tree, with the same CPUs and the L1D given, is bound over
# /sys/devices/system/cpu. Only the cache description changes: instruction set, core count
# and everything else stay the machine's.
set -euo pipefail
if [ $# -lt 4 ] || [ "$3" != "--" ]; then
  echo "usage: $0 L1D_SIZE L1D_WAYS -- COMMAND..." >&2
  exit 2
fi
l1_size="$1" l1_ways="$2"
shift 3
case "$l1_size" in *K) ;; *) echo "L1D_SIZE like 32K, got '$l1_size'" >&2; exit 2 ;; esac
case "$l1_ways" in '' | *[!0-9]*) echo "L1D_WAYS a number, got '$l1_ways'" >&2; exit 2 ;; esac
real=/sys/devices/system/cpu
fake="$(mktemp -d)"
trap 'rm -rf "$fake"' EXIT
for f in online possible present kernel_max; do
  [ -f "$real/$f" ] && cat "$real/$f" > "$fake/$f"
done
for cpu in "$real"/cpu[0-9]*; do
  [ -d "$cpu/cache" ] || continue
  for index in "$cpu"/cache/index*; do
    out="$fake/$(basename "$cpu")/cache/$(basename "$index")"
    mkdir -p "$out"
    for f in level type size ways_of_associativity coherency_line_size shared_cpu_list number_of_sets; do
      [ -f "$index/$f" ] && cat "$index/$f" > "$out/$f"
    done
    if [ "$(cat "$index/level")" = 1 ] && [ "$(cat "$index/type")" = Data ]; then
      echo "$l1_size" > "$out/size"
      echo "$l1_ways" > "$out/ways_of_associativity"
      rm -f "$out/number_of_sets"
    fi
  done
done
[ -d "$fake/cpu0/cache" ] || { echo "no cache description under $real: nothing to replace" >&2; exit 2; }
if [ "$(id -u)" = 0 ]; then ns=(unshare -m); else ns=(unshare -r -m); fi
# shellcheck disable=SC2016
"${ns[@]}" sh -c 'mount --bind "$1" /sys/devices/system/cpu && shift && echo "L1d as seen: $(cat /sys/devices/system/cpu/cpu0/cache/index0/size) $(cat /sys/devices/system/cpu/cpu0/cache/index0/ways_of_associativity)-way" >&2 && exec "$@"' sh "$fake" "$@"
