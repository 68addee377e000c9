#!/usr/bin/env bash
# Runs on the GPU machine: does where a request's KV chunks sit change decode attention's reads?
# Shared prefix's decode attention is 1.4% slower than paged's only when the KV budget is full
# (64 groups; at 32 groups, 0.999x; docs/perf.md, 2026-12-06). Unmaps under running kernels are
# ruled out (2026-12-06, fifth session: reads within 0.4% of idle while 4,000 chunks unmap). On
# CUDA a slab is mapped only whole, so a full budget gives slabs back and grows requests from
# single 2 MiB allocations. `bench vmm --only placement` reads one layer's K/V of 64 x 2,048
# tokens from slabs of 32 chunks, from single chunks, and in the per-layer layout from single
# chunks (a layer's read touches 1/32 of the pages, like paged's per-layer pools), against one
# layer in a plain allocation; the arms in turn, 7 rounds; two runs.
# Call 1 (H100): blocked reads 0.215 ms a layer from slabs and singles alike (median; least 0.183),
# per-layer and plain 0.181: the layout, not the placement. This version times phases: the
# blocked slab arm alone, with two more arms mapped, in turn with them, after a plain allocation
# is made, read and freed; every timing printed. Predicted: alone 0.182 (as the churn stage),
# slower once other memory is mapped or read in between (which one says TLB reach or walks).
# Call 2: alone, mapped together and in turn all 0.181; after a plain allocation (cuMemAlloc 2
# GiB) was made, read and freed, the blocked read 0.215 every time (+18.6%), per-layer and plain
# unaffected. Now: does it last, and is it the allocation, the free, or the size; then each
# trigger in a fresh process (`--placement-trigger`: cuMemAlloc + cuMemFree of 2 GiB or 2 MiB,
# cuMemAlloc kept, VMM chunks unmapped and kept, VMM chunks unmapped and released, address space
# reserved and freed); the engine's decode attention kernel over the same KV, before and after.
# Predicted: the free (cuMemFree or cuMemRelease) is the trigger, the slow read lasts, and decode
# attention slows less than the plain read (the engine matched paged with nothing released).
# On an H200 it then runs multi-turn with and without the prefix cache (issue 12's 2.4x).
# Call 4: only a large cuMemFree slows reads (2 GiB +18%, 512 MiB +14%, 2 MiB nothing), for a few
# milliseconds, every layout and decode attention alike; VMM unmaps and releases of single
# chunks and freed address space cost nothing. Call 5: slab-release (8 slabs of 64 MiB released)
# costs nothing either.
# Usage: [RUN_DEADLINE=420] [PHASES=0] [TRIGGERS="none slab-release"] scripts/gpu-kv-placement.sh [OUTDIR]   (carry gpu-pack)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary
[ "${PHASES:-1}" = 1 ] && run placement-1 120 "$bin" bench vmm --backend cuda --only placement --json-out "$out/placement-1.json"
triggers=${TRIGGERS:-"none alloc-free-2g alloc-free-2m alloc-kept vmm-unmap vmm-release slab-release address-free"}
for t in $triggers; do run trigger-$t 60 "$bin" bench vmm --backend cuda --only placement --placement-trigger $t --json-out "$out/trigger-$t.json"; done
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  run mt-on 150 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --json-out "$out/mt-on.json"
  run mt-nocache 150 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --no-prefix-cache --json-out "$out/mt-nocache.json"
fi
{ [ -f "$out/placement-1.txt" ] && { echo "== placement phases"; sed -n '/by where the chunks sit/,/^$/p' "$out/placement-1.txt" | sed 's/   */  /g' | cut -c1-230; }
  for t in $triggers; do echo "== trigger $t"; sed -n '/by where the chunks sit/,/^$/p' "$out/trigger-$t.txt" | grep -E "^(before|after|then|each|per-layer)" | sed 's/   */  /g' | cut -c1-200; done
  python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(n):
    try: return json.load(open(os.path.join(out, n + ".json")))
    except Exception: return None
a, b = load("mt-on"), load("mt-nocache")
if a and b:
    later = lambda r: r.get("first_token_p50_later_rounds_seconds") or 0
    print(f"multi-turn: {a['output_tokens_per_second']:.0f} / {b['output_tokens_per_second']:.0f} tok/s = "
          f"{a['output_tokens_per_second'] / b['output_tokens_per_second']:.3f}x no cache; later rounds' first token p50 "
          f"{later(a) * 1000:.0f} / {later(b) * 1000:.0f} ms = {later(a) / later(b) if later(b) else 0:.2f}")
PY
  echo "== rcs"; cat "$out/rcs.txt"; } >> "$out/summary.txt"
pack_details
cat "$out/summary.txt"
