#!/usr/bin/env bash
# Runs on the GPU machine: does a kernel run slower while the mapper unmaps chunks? Shared
# prefix's last gap to paged (+0.17 ms of decode attention a step, 0.991x) appears only when the
# KV budget is full and cached chunks are evicted and unmapped through the decode steps
# (2026-12-06, fourth session, call 2); at 32 groups, nothing evicted, vTensor matched paged.
# `bench vmm --only launch` times a 256 MiB copy kernel idle, while the mapper maps, unmaps
# (4,000 chunks) and creates chunks; three runs for the spread.
# Predicted, if unmaps slow kernels (GPU TLB invalidations): the copy 2-10% slower while
# unmapping than idle or mapping; else within 1%.
# Usage: [RUN_DEADLINE=150] scripts/gpu-unmap-interference.sh [OUTDIR]   (carry gpu-pack)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary
for i in 1 2 3; do run vmm-launch-$i 60 "$bin" bench vmm --backend cuda --only launch --json-out "$out/vmm-launch-$i.json"; done
{ for i in 1 2 3; do echo "== run $i"; grep -E "copy kernel|mapper|kernel running|GPU idle" "$out/vmm-launch-$i.txt" | sed 's/   */  /g'; done
  echo "== rcs"; cat "$out/rcs.txt"; } >> "$out/summary.txt"
pack_details
cat "$out/summary.txt"
