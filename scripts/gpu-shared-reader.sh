#!/usr/bin/env bash
# Runs on the GPU machine (issue 12): tiles of one prefix read it through one request.
# The profile of 2026-12-06 (scripts/gpu-issue12-profile.sh, H100) found vTensor's decode
# attention 0.30 ms a decode-only step slower than paged's with the same 74,236 tiles (12.25
# against 11.95 ms), everything else equal. Each tile read the shared keys through its own first
# member: for one prefix, four tiles at four virtual addresses, and where a member mapped a copy
# (the packed slab) rather than its source, two physical copies. Now every tile of a prefix reads
# through the first request of the order holding it (`SharedPrefix.reader`).
# Predicted: every decode check passes; decode attention at paged's time; shared prefix from
# 0.970x toward ~0.98x of paged.
# Usage: [RUN_DEADLINE=400] scripts/gpu-shared-reader.sh [OUTDIR]   (carry gpu-pack)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary

run checks 150 "$bin" dev decode --skip-timing --json-out "$out/checks.json"
run sp-on 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/sp-on.json"
run sp-paged 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --json-out "$out/sp-paged.json"
run sp-prof 120 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --profile-operations --json-out "$out/sp-prof.json"
run sp-paged-prof 120 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --profile-operations --json-out "$out/sp-paged-prof.json"
run sp-paged-2 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --json-out "$out/sp-paged-2.json"
run sp-on-2 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/sp-on-2.json"

python3 - "$out" <<'PY' >> "$out/summary.txt"
import json, os, sys
out = sys.argv[1]
def load(n):
    try: return json.load(open(os.path.join(out, n + ".json")))
    except Exception: return None
c = load("checks")
if c:
    failed = [x for x in c["checks"] if not x["passed"]]
    print(f"== dev decode checks: {len(c['checks']) - len(failed)} passed, {len(failed)} failed")
    for x in failed[:10]: print("FAIL", x["name"], x["detail"][:300])
print(f"{'run':14} {'out tok/s':>9} {'vs paged':>8} {'step ms':>8} {'decode ms':>9} {'idle ms':>8} {'map wait ms':>11} {'tiles':>7}")
for a, b in [("sp-on", "sp-paged"), ("sp-on-2", "sp-paged-2"), ("sp-prof", "sp-paged-prof")]:
    for name in (a, b):
        r = load(name)
        if not r: print(f"{name:14} missing"); continue
        p = load(b)
        ratio = f"{r['output_tokens_per_second'] / p['output_tokens_per_second']:8.3f}" if p and name == a else f"{'':8}"
        print(f"{name:14} {r['output_tokens_per_second']:9.0f} {ratio} {r['step_mean_ms']:8.2f} {r['decode_step_mean_ms']:9.2f} "
              f"{r.get('gpu_idle_gap_ms_per_step') or 0:8.2f} {r['mapping_wait_ms_total']:11.0f}")
a, b = load("sp-prof"), load("sp-paged-prof")
if a and b:
    for kind, n in [("decode_step_operations_ms", "profiled_decode_steps"), ("prompt_step_operations_ms", "profiled_prompt_steps")]:
        ta, tb, na, nb = a["gpu_step_totals"][kind], b["gpu_step_totals"][kind], a["gpu_step_totals"][n], b["gpu_step_totals"][n]
        print(f"{kind} a step, vtensor ({na} steps) vs paged ({nb}):")
        for k in sorted(set(ta) | set(tb), key=lambda k: -(ta.get(k, 0))):
            print(f"  {k:28} {ta.get(k,0)/max(na,1):8.3f} {tb.get(k,0)/max(nb,1):8.3f}")
PY
{ for f in sp-on sp-on-2 sp-prof; do [ -f "$out/$f.txt" ] && { echo "== $f"; grep -E "^GPU per step|shared-prefix decode|mapping waits|^per step|cuBLASLt shapes" "$out/$f.txt" | sed 's/   */  /g' | cut -c1-700; }; done
  echo "== rcs"; cat "$out/rcs.txt"; } >> "$out/summary.txt"
pack_details
cat "$out/summary.txt"
