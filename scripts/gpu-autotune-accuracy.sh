#!/usr/bin/env bash
# Runs on the GPU machine: does the cuBLASLt autotune cost accuracy? In the call of
# scripts/gpu-autotune-cache.sh (2026-12-06, fourth session, H100) the byte-level model trained
# here, through the engine with the prefix cache against each request alone, agreed on 791 of 795
# teacher-forced tokens (99.50%, the issue asks 99%) but its worst disagreement had a margin of
# 0.109, over dev engine's 0.1 tie line (793/795 and 0.0057 with the heuristic's picks, the
# session before). Suspect: candidates that split K and add the partial sums in bf16 (reduction
# schemes INPLACE and OUTPUT_TYPE) for the products with a bf16 output (qkv, gate+up). The
# candidates are now limited to fp32 partial sums for those products.
# Predicted: with the limit, every autotuned run passes dev engine's check (disagreements only
# near ties, < 0.1) like the heuristic's picks; the gains stay (at 128 rows the switched products,
# down and the LM head, write fp32 and are not limited): multi-turn ~+0.6% over autotune off.
# Usage: [RUN_DEADLINE=300] scripts/gpu-autotune-accuracy.sh [OUTDIR]   (carry gpu-pack)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary
rm -f "$VTENSOR_CACHE_DIR/matmul-tuning.json"

train_with_shared_prompts
trained=(dev engine --backend cuda --model /tmp/tiny --prompts /tmp/tiny/shared.json --max-num-seqs 8 --kv-chunks 32)
run trained-off 100 "$bin" "${trained[@]}" --matmul-autotune off
for i in 1 2 3; do run trained-on-$i 100 "$bin" "${trained[@]}"; done
run dev-model 120 "$bin" dev model --json-out "$out/dev-model.json"
run model-on 120 "$bin" bench model --backend cuda --load-format dummy --model llama-3-8b --batch 128 --prompt-tokens 256 --decode-tokens 32
run mt-on 120 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --json-out "$out/mt-on.json"
run mt-off 90 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --matmul-autotune off --json-out "$out/mt-off.json"

{ for f in trained-off trained-on-1 trained-on-2 trained-on-3; do
    echo "$f: $(grep -E "teacher-forced|^result|exact greedy" "$out/$f.txt" | sed 's/   */  /g' | tr '\n' ';' | cut -c1-240)"
  done
  echo "== dev model"; grep -E "FAIL|checks passed|failed" "$out/dev-model.txt" | tail -5
  echo "== bench model"; grep -E "autotune|^128 " "$out/model-on.txt" | cut -c1-400
  python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
r = {n: json.load(open(os.path.join(out, n + ".json"))) for n in ("mt-on", "mt-off") if os.path.exists(os.path.join(out, n + ".json"))}
for n, x in r.items(): print(f"{n}: {x['output_tokens_per_second']:.0f} out tok/s, decode-only step {x['decode_step_mean_ms']:.2f} ms")
if len(r) == 2: print(f"autotune on/off: {r['mt-on']['output_tokens_per_second'] / r['mt-off']['output_tokens_per_second']:.3f}x")
PY
  echo "== rcs"; cat "$out/rcs.txt"; } >> "$out/summary.txt"
pack_details
cat "$out/summary.txt"
