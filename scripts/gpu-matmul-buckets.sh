#!/usr/bin/env bash
# Runs on the GPU machine (issue 12): cuBLASLt products at bucketed token counts, every bucket
# set up and run when the model loads (--matmul-buckets, on by default).
# Found (scripts/experiments/ramp-launch-probe.sh, H100, binary 7f0d005): in the shared-prefix
# ramp (steps 14-20) the LM head's launch took ~200 ms, as long as the GPU's step: the first
# run of each new row count's product waited for the device, so the pipeline drained and the
# engine's plan and map showed as GPU idle (vTensor 13-56 ms a step, paged 4-18).
# Predicted: those stalls go in both arms (the idle gaps of steps 14-21 fall to a few ms);
# shared prefix ~0.99x of paged or better (0.962-0.988 before), both arms a little faster;
# multi-turn unchanged or slightly faster. Correctness: dev model (GPU against the CPU forward
# pass, which pads products now) passes as before.
# Measured (binary 87092e1, H100; its --matmul-buckets off did not reach bench throughput, so
# both pairs ran bucketed): dev model 352/352; idle 0.28 -> 0.014 ms a step (vTensor) and
# 0.06 -> 0.001 (paged), the ramp's gaps now at most 1 ms; shared prefix 0.986 / 0.989x of
# paged, both arms ~1-4% faster than in the call before; multi-turn 1.004x paged, 2.29x no cache.
# This version: the A/B with the flag fixed, and the trained model through the engine.
# Measured (050acda): buckets +2.3% (vTensor) and +2.1% (paged); shared prefix 0.990x paged
# (0.988 with exact shapes); multi-turn 1.001x paged, 2.28x no cache; dev model 352/352;
# trained model 793/795 = 99.75% teacher-forced top-1 (100% before; two near ties).
# Usage: [RUN_DEADLINE=530] scripts/gpu-matmul-buckets.sh [OUTDIR]   (carry gpu-pack)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary

# Correctness: the GPU forward pass against the CPU's (padded products in every prompt step),
# then the byte-level model trained here through the engine with the prefix cache, against each
# request alone: teacher-forced top-1 at least 99%.
run dev-model 120 "$bin" dev model --json-out "$out/dev-model.json"
train_with_shared_prompts
run trained 100 "$bin" dev engine --backend cuda --model /tmp/tiny --prompts /tmp/tiny/shared.json --max-num-seqs 8 --kv-chunks 32
run sp-paged 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --json-out "$out/sp-paged.json"
run sp-on 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/sp-on.json"
run sp-on-exact 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --matmul-buckets off --json-out "$out/sp-on-exact.json"
run sp-paged-exact 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --matmul-buckets off --json-out "$out/sp-paged-exact.json"
run mt-on 90 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --json-out "$out/mt-on.json"
run mt-paged 90 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --kv paged --json-out "$out/mt-paged.json"
run mt-nocache 120 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --no-prefix-cache --json-out "$out/mt-nocache.json"

python3 - "$out" <<'PY' >> "$out/summary.txt"
import json, os, sys
out = sys.argv[1]
def load(n):
    try: return json.load(open(os.path.join(out, n + ".json")))
    except Exception: return None
print(f"{'run':15} {'out tok/s':>9} {'vs base':>8} {'hit':>6} {'step ms':>8} {'decode ms':>9} {'idle ms':>8} {'map wait ms':>11}")
for name, base in [("sp-on", "sp-paged"), ("sp-paged", None), ("sp-on-exact", "sp-paged-exact"), ("sp-paged-exact", None),
                   ("mt-on", "mt-paged"), ("mt-paged", None), ("mt-nocache", None)]:
    r = load(name)
    if not r: print(f"{name:15} missing"); continue
    p = load(base) if base else None
    ratio = f"{r['output_tokens_per_second'] / p['output_tokens_per_second']:8.3f}" if p else f"{'':8}"
    print(f"{name:15} {r['output_tokens_per_second']:9.0f} {ratio} {100*(r.get('prefix_cache_hit_rate') or 0):5.1f}% {r['step_mean_ms']:8.2f} "
          f"{r['decode_step_mean_ms']:9.2f} {r.get('gpu_idle_gap_ms_per_step') or 0:8.2f} {r['mapping_wait_ms_total']:11.0f}")
a, b = load("mt-on"), load("mt-nocache")
if a and b:
    print(f"multi-turn vs no cache: {a['output_tokens_per_second'] / b['output_tokens_per_second']:.3f}x")
    fa, fb = a.get("first_token_mean_by_round_seconds"), b.get("first_token_mean_by_round_seconds")
    if fa and fb: print("first token, mean by round, cache / no cache: " + ", ".join(f"{x / y:.2f}" for x, y in zip(fa, fb)))
PY
{ echo "== dev model"; grep -E "FAIL|passed|failed" "$out/dev-model.txt" | tail -5
  echo "== trained model through the engine"; grep -E "teacher-forced|^result|exact" "$out/trained.txt" | sed 's/   */  /g' | cut -c1-300
  for f in sp-on sp-paged sp-on-exact mt-on; do [ -f "$out/$f.txt" ] && { echo "== $f"; grep -E "^GPU per step|^longest GPU" "$out/$f.txt" | sed 's/   */  /g' | cut -c1-700; }; done
  echo "== rcs"; cat "$out/rcs.txt"; } >> "$out/summary.txt"
pack_details
cat "$out/summary.txt"
