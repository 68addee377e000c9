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
# Predicted, if the GPU's TLB reaches further over slabs: blocked singles 2-5% slower than slabs,
# per-layer singles at the slabs' speed; else all within 1%.
# On an H200 it then runs multi-turn with and without the prefix cache (issue 12's 2.4x).
# Usage: [RUN_DEADLINE=420] scripts/gpu-kv-placement.sh [OUTDIR]   (carry gpu-pack)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary
for i in 1 2; do run placement-$i 120 "$bin" bench vmm --backend cuda --only placement --json-out "$out/placement-$i.json"; done
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  run mt-on 150 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --json-out "$out/mt-on.json"
  run mt-nocache 150 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --no-prefix-cache --json-out "$out/mt-nocache.json"
fi
{ for i in 1 2; do echo "== placement run $i"; sed -n '/by where the chunks sit/,/^$/p' "$out/placement-$i.txt" | sed 's/   */  /g'; done
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
