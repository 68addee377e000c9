#!/usr/bin/env bash
# Runs on the GPU machine: does a kernel run slower while the mapper unmaps chunks? Shared
# prefix's last gap to paged (+0.17 ms of decode attention a step, 0.991x) appears only when the
# KV budget is full and cached chunks are evicted and unmapped through the decode steps
# (2026-12-06, fourth session, call 2); at 32 groups, nothing evicted, vTensor matched paged.
# `bench vmm --only launch,churn` times a 256 MiB copy kernel (plain memory) idle, while the
# mapper maps, unmaps (4,000 chunks) and creates chunks, and then one layer's K/V reads of 64 x
# 2,048 tokens in the blocked layout (mapped chunks, as decode attention reads them) idle, while
# the mapper maps 4,000 chunks into another tensor and while it unmaps them; three runs.
# Predicted, if unmaps slow kernels (GPU TLB invalidations): reads 2-10% slower while unmapping
# than idle or mapping (shared prefix at 64 groups: +0.17 ms on 12.1 ms of attention a step,
# 1.4%, at ~9 unmaps a step); else within 1%.
# Usage: [RUN_DEADLINE=400] scripts/gpu-unmap-interference.sh [OUTDIR]   (carry gpu-pack)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary
# First, the CUDA path of this binary's memory manager (the slot table now keeps a mark of the
# slots mapped from 0 on, VirtualTensor.leadingMapped): selftest's VMM, KV and attention checks.
run selftest 240 "$bin" selftest
for i in 1 2 3; do run vmm-launch-$i 90 "$bin" bench vmm --backend cuda --only launch,churn --json-out "$out/vmm-launch-$i.json"; done
# Whether the driver unmaps a run of adjacent mappings in one call (--unmap-per-run changed
# nothing at 64 groups: rare adjacency, or a driver that takes one mapping a call).
run vmm-access 90 "$bin" bench vmm --backend cuda --only access --json-out "$out/vmm-access.json"
{ echo "== selftest"; grep -E "^FAIL|passed|failed" "$out/selftest.txt" | tail -5
  for i in 1 2 3; do echo "== run $i"; grep -E "copy kernel|mapper|kernel running|GPU idle|reads|^idle|^mapping|^unmapping" "$out/vmm-launch-$i.txt" | sed 's/   */  /g'; done
  echo "== access"; grep -E "unmaps a run|^run|^ *[0-9]+ " "$out/vmm-access.txt" | sed 's/   */  /g' | head -12
  echo "== rcs"; cat "$out/rcs.txt"; } >> "$out/summary.txt"
pack_details
cat "$out/summary.txt"
