#!/usr/bin/env bash
# Runs on the GPU machine (issue 12): where shared prefix's last gap to paged comes from. On
# H100s (2026-12-06, third session) the GPU's own time differed only in decode attention:
# +0.17 ms a decode-only step (12.09 against 11.92 ms, profiled), +0.06-0.21 across calls, while
# the kernel alone on the same shapes (dev decode, 256 x 2,304, groups of 16) matched paged
# (0.293 against 0.294 ms). Mapping decode growth ahead (--map-ahead-tokens 256) did not change
# it. What the engine run has that the kernel check does not: a full KV budget, so cached chunks
# are evicted and unmapped all through the decode steps (each unmap may invalidate the GPU's
# TLBs while attention runs), and prefixes packed into slabs.
# Arms, all with --profile-operations (CUDA events per operation, graphs off):
#   64 groups (the issue's default; the budget fills, eviction runs): vTensor, paged, and vTensor
#   with --unmap-per-run on (one cuMemUnmap a run of adjacent chunks instead of one a chunk);
#   32 groups (the whole run fits; nothing is evicted): vTensor, paged.
# Predicted, if unmaps during decode are the cause: at 32 groups decode attention equal to
# paged's (within 0.05 ms), at 64 groups +0.1-0.2 ms, less with unmap runs. If 32 groups keeps
# the gap, the cause is the layout of what attention reads (aliases of packed slabs), not unmaps.
# Usage: [RUN_DEADLINE=400] scripts/gpu-decode-gap.sh [OUTDIR]   (carry gpu-pack)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary

spg=(--dataset shared-prefix --prompts-per-group 16 --system-len 2048 --question-len 128 --output-len 256 --profile-operations)
run sp64-paged 100 "$bin" bench throughput "${dummy[@]}" "${spg[@]}" --groups 64 --kv paged --json-out "$out/sp64-paged.json"
run sp64-on 100 "$bin" bench throughput "${dummy[@]}" "${spg[@]}" --groups 64 --json-out "$out/sp64-on.json"
run sp64-unmap-runs 100 "$bin" bench throughput "${dummy[@]}" "${spg[@]}" --groups 64 --unmap-per-run on --json-out "$out/sp64-unmap-runs.json"
run sp32-paged 100 "$bin" bench throughput "${dummy[@]}" "${spg[@]}" --groups 32 --kv paged --json-out "$out/sp32-paged.json"
run sp32-on 100 "$bin" bench throughput "${dummy[@]}" "${spg[@]}" --groups 32 --json-out "$out/sp32-on.json"

{ printf '%-16s %10s %10s %12s %14s\n' run "out tok/s" "decode ms" "attention ms" "evicted chunks"
  for f in sp64-on sp64-unmap-runs sp64-paged sp32-on sp32-paged; do
    [ -f "$out/$f.txt" ] || { echo "$f missing"; continue; }
    python3 - "$out/$f.json" "$out/$f.txt" "$f" <<'PY'
import json, re, sys
r = json.load(open(sys.argv[1])); text = open(sys.argv[2]).read()
m = re.search(r"GPU ms a decode-only step.*?attention ([0-9.]+)", text)
ev = r.get("statistics", {}).get("prefix_evicted_chunks", r.get("statistics", {}).get("prefixEvictedChunks", "?"))
print(f"{sys.argv[3]:16} {r['output_tokens_per_second']:10.0f} {r['decode_step_mean_ms']:10.2f} {m.group(1) if m else '?':>12} {ev!s:>14}")
PY
  done
  for f in sp64-on sp32-on; do echo "== $f"; grep -E "^GPU ms a" "$out/$f.txt" | sed 's/   */  /g' | cut -c1-400; done
  echo "== rcs"; cat "$out/rcs.txt"; } >> "$out/summary.txt"
pack_details
cat "$out/summary.txt"
