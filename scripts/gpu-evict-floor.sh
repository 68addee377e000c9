#!/usr/bin/env bash
# Runs on the GPU machine (issue 12): eviction a step ahead with a floor of a full step's prompt
# chunks (at most a sixteenth of the budget). On an H100 the shared-prefix run waited 230 ms at
# two steps (787, 788) whose wave of prompts grew more than any of the 16 steps before, so they
# evicted for themselves and waited for the step in flight. Also reports the longest GPU idle
# gaps by step next to the longest mapping waits.
# Predicted: those two waits go (mapping waits ~0.39 -> ~0.15 s), the same hit rate; shared
# prefix a little closer to paged (0.958-0.976x before, noise ~1%); multi-turn unchanged.
# Measured (binary 3df7691, H100): waits 128 ms, 0.961 / 0.973x; the idle left was the ramp,
# steps 14-23. Since then aliasing ahead attaches ~1,024 chunks a step at most (modeled: the
# ramp's idle goes): predicted ~0.98-0.99x of paged, the ramp's gaps gone from the list.
# Measured (ed24fc4, H100): 0.982 / 0.988x of paged, waits 77-96 ms, multi-turn 1.000x; the
# ramp stayed (8-34 ms gaps): the model's queueing blocked for a whole step there (found next:
# the LM head's first run at each new row count; see scripts/gpu-matmul-buckets.sh).
# Usage: [RUN_DEADLINE=400] scripts/gpu-evict-floor.sh [OUTDIR]   (carry gpu-pack)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary

run sp-on 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/sp-on.json"
run sp-paged 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --json-out "$out/sp-paged.json"
run mt-on 90 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --json-out "$out/mt-on.json"
run mt-paged 90 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --kv paged --json-out "$out/mt-paged.json"
run sp-paged-2 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --json-out "$out/sp-paged-2.json"
run sp-on-2 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/sp-on-2.json"

python3 - "$out" <<'PY' >> "$out/summary.txt"
import json, os, sys
out = sys.argv[1]
def load(n):
    try: return json.load(open(os.path.join(out, n + ".json")))
    except Exception: return None
print(f"{'run':12} {'out tok/s':>9} {'vs paged':>8} {'hit':>6} {'step ms':>8} {'decode ms':>9} {'idle ms':>8} {'map wait ms':>11} {'evicted ahead':>13}")
for a, b in [("sp-on", "sp-paged"), ("sp-on-2", "sp-paged-2"), ("mt-on", "mt-paged")]:
    for name in (a, b):
        r = load(name)
        if not r: print(f"{name:12} missing"); continue
        p = load(b)
        ratio = f"{r['output_tokens_per_second'] / p['output_tokens_per_second']:8.3f}" if p and name == a else f"{'':8}"
        print(f"{name:12} {r['output_tokens_per_second']:9.0f} {ratio} {100*(r.get('prefix_cache_hit_rate') or 0):5.1f}% {r['step_mean_ms']:8.2f} "
              f"{r['decode_step_mean_ms']:9.2f} {r.get('gpu_idle_gap_ms_per_step') or 0:8.2f} {r['mapping_wait_ms_total']:11.0f} {r['statistics']['chunks_evicted_ahead']:13}")
PY
{ for f in sp-on sp-on-2 mt-on; do [ -f "$out/$f.txt" ] && { echo "== $f"; grep -E "^GPU per step|mapping waits|^longest|^per step|^engine thread at" "$out/$f.txt" | sed 's/   */  /g' | cut -c1-900; }; done
  echo "== rcs"; cat "$out/rcs.txt"; } >> "$out/summary.txt"
pack_details
cat "$out/summary.txt"
