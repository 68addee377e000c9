#!/usr/bin/env bash
# Runs on the GPU machine (issue 12): where the shared-prefix run's two remaining gaps to paged
# come from. On an H100 (binary ed24fc4) vTensor reached 0.982 / 0.988x of paged: ~0.14 ms a
# step more GPU idle, most of it the ramp (steps 14-21, 8-34 ms gaps where paged has 2-9 ms),
# and decode-only steps 0.16 ms longer.
# 1. The ramp: in those steps the model's queueing takes as long as the GPU's step (~220 ms),
#    so the pipeline drains and the engine's plan and map (25 ms for vTensor: aliasing ahead;
#    5 for paged) show as idle. Suspect: lazy module loading (CUDA 12+ loads a kernel at its
#    first launch, which may synchronize the context), hit by cuBLASLt kernels new to each
#    ramp step's row count. The idle gaps now carry the model's host split (plan, launch,
#    sampling). Predicted: the stall sits in launch; with CUDA_MODULE_LOADING=EAGER the ramp's
#    gaps fall to a few ms in both arms.
# 2. Decode: suspect the mapper's page-table updates during decode steps (each map, unmap or
#    set access may invalidate the GPU's TLBs). With --map-ahead-tokens 256 every request's
#    decode chunks map at admission, so decode-only steps map nothing. Predicted: if the
#    suspicion holds, decode-only steps fall to paged's time.
# Measured (7f0d005, H100): the stall sat in the launch (~200 ms); EAGER loading kept it (and
# slowed every step ~5%); --map-ahead-tokens 256 left decode-only steps as they were (20.63 ms
# against 20.62): neither hypothesis held. scripts/experiments/ramp-launch-probe.sh then named
# the LM head's first run at each new row count (fixed by --matmul-buckets).
# Usage: [RUN_DEADLINE=400] scripts/gpu-ramp-probe.sh [OUTDIR]   (carry gpu-pack)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary

run sp-on 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/sp-on.json"
run sp-paged 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --json-out "$out/sp-paged.json"
run sp-on-eager 90 env CUDA_MODULE_LOADING=EAGER "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/sp-on-eager.json"
run sp-paged-eager 90 env CUDA_MODULE_LOADING=EAGER "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --json-out "$out/sp-paged-eager.json"
run sp-on-ahead 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --map-ahead-tokens 256 --json-out "$out/sp-on-ahead.json"

python3 - "$out" <<'PY' >> "$out/summary.txt"
import json, os, sys
out = sys.argv[1]
def load(n):
    try: return json.load(open(os.path.join(out, n + ".json")))
    except Exception: return None
print(f"{'run':15} {'out tok/s':>9} {'vs paged':>8} {'hit':>6} {'step ms':>8} {'decode ms':>9} {'idle ms':>8} {'map wait ms':>11}")
for name, base in [("sp-on", "sp-paged"), ("sp-paged", None), ("sp-on-eager", "sp-paged-eager"), ("sp-paged-eager", None), ("sp-on-ahead", "sp-paged")]:
    r = load(name)
    if not r: print(f"{name:15} missing"); continue
    p = load(base) if base else None
    ratio = f"{r['output_tokens_per_second'] / p['output_tokens_per_second']:8.3f}" if p else f"{'':8}"
    print(f"{name:15} {r['output_tokens_per_second']:9.0f} {ratio} {100*(r.get('prefix_cache_hit_rate') or 0):5.1f}% {r['step_mean_ms']:8.2f} "
          f"{r['decode_step_mean_ms']:9.2f} {r.get('gpu_idle_gap_ms_per_step') or 0:8.2f} {r['mapping_wait_ms_total']:11.0f}")
PY
{ for f in sp-on sp-paged sp-on-eager sp-paged-eager sp-on-ahead; do [ -f "$out/$f.txt" ] && { echo "== $f"; grep -E "^GPU per step|^longest GPU|^engine thread at" "$out/$f.txt" | sed 's/   */  /g' | cut -c1-1400; }; done
  echo "== rcs"; cat "$out/rcs.txt"; } >> "$out/summary.txt"
pack_details
cat "$out/summary.txt"
