#!/usr/bin/env bash
# Runs on the GPU machine: does where the KV's address ranges lie change how fast it is read?
# Call 1 of 2026-12-06 (sixth session, H100): one layer's K/V reads of 64 requests (blocked
# layout) ran at 2.81-3.08 TB/s with each request's range reserved exactly, but 2.40-2.60 TB/s
# (-14 to -16%) with the ranges reserved 4x longer than mapped (as the engine reserves a whole
# --max-model-len) in 6 of 8 placements; the other 2 read as fast as exact ones.
# This call: the reach stage's arms (exact or 4x reserved; 64 MiB slabs or single chunks;
# reservations aligned to a chunk, 64 MiB or 1 GiB; per-layer) at 16 and 48 GiB of KV, twice,
# each arm's ranges' alignment printed; then shared prefix (64 groups, a full budget) with the
# engine's ranges aligned to 1 GiB against the default and paged, and multi-turn the same.
# Predicted: if the alignment of a range decides, the aligned 4x arms read like the exact ones
# in every pass and the slow ones have small alignments; shared prefix with aligned ranges
# reaches paged's throughput (0.987-0.991x now). If the gaps between ranges decide, the
# aligned 4x arms stay slow.
# Usage: [RUN_DEADLINE=330] scripts/gpu-kv-reach.sh [OUTDIR]   (carry gpu-pack)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary

run vmm-reach 150 "$bin" bench vmm --backend cuda --only reach --json-out "$out/vmm-reach.json"
run sp-on 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/sp-on.json"
run sp-aligned 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv-reservation-alignment-mib 1024 --json-out "$out/sp-aligned.json"
run sp-paged 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --json-out "$out/sp-paged.json"
run mt-aligned 90 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --kv-reservation-alignment-mib 1024 --json-out "$out/mt-aligned.json"
run mt-on 90 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --json-out "$out/mt-on.json"
run sp-aligned-b 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv-reservation-alignment-mib 1024 --json-out "$out/sp-aligned-b.json"

python3 - "$out" <<'PY' >> "$out/summary.txt"
import json, os, sys
out = sys.argv[1]
def load(n):
    try: return json.load(open(os.path.join(out, n + ".json")))
    except Exception: return None
print(f"{'run':13} {'out tok/s':>9} {'decode-only ms':>14} {'hit rate':>8}")
for name in ("sp-on", "sp-aligned", "sp-paged", "sp-aligned-b", "mt-on", "mt-aligned"):
    r = load(name)
    if not r: print(f"{name:13} missing"); continue
    print(f"{name:13} {r['output_tokens_per_second']:9.0f} {r.get('decode_only_step_mean_ms', r['decode_step_mean_ms']):14.2f} {r.get('prefix_cache_hit_rate', 0):8.3f}")
def ratio(a, b):
    x, y = load(a), load(b)
    return f"{x['output_tokens_per_second'] / y['output_tokens_per_second']:.3f}" if x and y else "?"
print(f"shared prefix: on/paged {ratio('sp-on', 'sp-paged')}x, aligned/paged {ratio('sp-aligned', 'sp-paged')}x and {ratio('sp-aligned-b', 'sp-paged')}x; "
      f"multi-turn aligned/on {ratio('mt-aligned', 'mt-on')}x")
PY
{ echo "== KV reads by where their ranges lie (bench vmm --only reach)"; sed -n '/One layer.s K\/V reads of 64 requests/,/^$/p' "$out/vmm-reach.txt"
  echo "== rcs"; cat "$out/rcs.txt"; } >> "$out/summary.txt"
pack_details
cat "$out/summary.txt"
