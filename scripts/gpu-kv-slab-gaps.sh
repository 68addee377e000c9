#!/usr/bin/env bash
# Runs on the GPU machine: which part of "slabs in ranges reserved longer than mapped" slows reads?
# Call 2 of 2026-12-06 (sixth session, H100): one layer's K/V reads of 64 requests ran 15% slower
# (2.57-2.67 against 3.04-3.17 TB/s) when the chunks came as 64 MiB slabs into ranges reserved
# 4x longer than mapped, in 3 of 4 placements; the same ranges filled chunk by chunk always read
# at full speed, and aligning the ranges (64 MiB, 1 GiB) changed nothing.
# This call: slabs of 32, 8 and 2 chunks into 4x ranges; 2x ranges; exact ranges with 3x unmapped
# address space reserved between them; single chunks; at 16 and 48 GiB, twice. Then the engine
# (which maps fresh runs and packed prefixes as 64 MiB slabs into --max-model-len ranges) with
# slabs of 32 (the default), of 8, and single chunks (--fresh-slab-chunks 0 --pack-prefix-chunks 0),
# and with ranges about as long as a request gets (--max-model-len 2432 / 2944, slabs of 32),
# shared prefix at 64 groups and multi-turn, and paged.
# Predicted: smaller slabs slow less; the gaps alone slow like 4x ranges if address space is the
# cause. The engine with single chunks or near-exact ranges: decode-only steps 0-3% shorter if
# its slabs in long ranges cost reads (shared prefix up to ~paged's throughput); single chunks
# also cost more mapping time on the host.
# Usage: [RUN_DEADLINE=330] scripts/gpu-kv-slab-gaps.sh [OUTDIR]   (carry gpu-pack)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary

run vmm-reach 120 "$bin" bench vmm --backend cuda --only reach --json-out "$out/vmm-reach.json"
singles=(--fresh-slab-chunks 0 --pack-prefix-chunks 0)
# Ranges about as long as a request ever gets (shared prefix: 2,176 prompt + 256 out; multi-turn:
# 5 x (512 + 64) by the last answer), with the default slabs: the engine's "exact ranges" arm.
run sp-exact 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --max-model-len 2432 --json-out "$out/sp-exact.json"
run sp-on 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/sp-on.json"
run sp-singles 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" "${singles[@]}" --json-out "$out/sp-singles.json"
run mt-exact 90 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --max-model-len 2944 --json-out "$out/mt-exact.json"
run mt-on 90 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --json-out "$out/mt-on.json"
run mt-singles 90 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" "${singles[@]}" --json-out "$out/mt-singles.json"
run sp-paged 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --json-out "$out/sp-paged.json"
run sp-slabs8 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --fresh-slab-chunks 8 --pack-prefix-chunks 8 --json-out "$out/sp-slabs8.json"

python3 - "$out" <<'PY' >> "$out/summary.txt"
import json, os, sys
out = sys.argv[1]
def load(n):
    try: return json.load(open(os.path.join(out, n + ".json")))
    except Exception: return None
print(f"{'run':11} {'out tok/s':>9} {'decode-only ms':>14} {'host ms/step':>12} {'GPU idle ms/step':>16} {'hit rate':>8}")
for name in ("sp-exact", "sp-on", "sp-singles", "sp-slabs8", "sp-paged", "mt-exact", "mt-on", "mt-singles"):
    r = load(name)
    if not r: print(f"{name:11} missing"); continue
    print(f"{name:11} {r['output_tokens_per_second']:9.0f} {r['decode_step_mean_ms']:14.2f} {r.get('engine_host_ms_per_step', 0):12.3f} "
          f"{r.get('gpu_idle_gap_ms_per_step', 0):16.3f} {r.get('prefix_cache_hit_rate', 0):8.3f}")
def ratio(a, b):
    x, y = load(a), load(b)
    return f"{x['output_tokens_per_second'] / y['output_tokens_per_second']:.3f}" if x and y else "?"
print(f"shared prefix: slabs/paged {ratio('sp-on', 'sp-paged')}x, exact ranges/paged {ratio('sp-exact', 'sp-paged')}x, "
      f"singles/paged {ratio('sp-singles', 'sp-paged')}x, slabs of 8/paged {ratio('sp-slabs8', 'sp-paged')}x; "
      f"multi-turn exact/default {ratio('mt-exact', 'mt-on')}x, singles/default {ratio('mt-singles', 'mt-on')}x")
PY
{ echo "== KV reads by where their ranges lie (bench vmm --only reach)"; sed -n '/One layer.s K\/V reads of 64 requests/,/^$/p' "$out/vmm-reach.txt" | cut -c1-110
  echo "== rcs"; cat "$out/rcs.txt"; } >> "$out/summary.txt"
pack_details
cat "$out/summary.txt"
