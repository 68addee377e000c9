#!/usr/bin/env bash
# Runs on the GPU machine (issue 12, multi-turn's 2.4x): cuBLASLt products chosen by timing at
# load (--matmul-autotune, off by default until this measures it).
# Counted (METHOD.md): a decode-only step of 128 rows reads 15.0 GB of weights (a layer's qkv
# 50.3 MB, o proj 33.6, gate+up 234.9, down 117.4; the LM head 1.05 GB): 4.8 ms at an H100's
# 3.13 TB/s read ceiling. Profiled (2026-12-06): 6.6 ms, the small products slowest (o proj 1.7
# TB/s, qkv 1.9, down 2.1, gate+up 2.6). Multi-turn's 2.4x over no cache needs its decode-only
# steps at ~14.35 ms (17.07 now).
# Predicted: the autotune switches some of the small products (o proj, qkv, down) at 64-256 rows;
# a layer's products at 128 rows from ~190 us toward 150-165 us; decode steps of 128 rows 0.8-1.3 ms
# shorter; multi-turn against no cache 2.28x -> ~2.33x (both arms gain in decode-only steps).
# Correctness: dev model's 352 checks pass with the chosen algorithms.
# Usage: [RUN_DEADLINE=520] scripts/gpu-matmul-autotune.sh [OUTDIR]   (carry gpu-pack)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary

run dev-model-tuned 150 "$bin" dev model --matmul-autotune --json-out "$out/dev-model-tuned.json"
model=(bench model --backend cuda --load-format dummy --model llama-3-8b --batch 128 --prompt-tokens 256 --decode-tokens 32)
run model-base 90 "$bin" "${model[@]}" --json-out "$out/model-base.json"
run model-tuned 120 "$bin" "${model[@]}" --matmul-autotune on --json-out "$out/model-tuned.json"
run mt-tuned 90 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --matmul-autotune on --json-out "$out/mt-tuned.json"
run mt-nocache-tuned 120 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --no-prefix-cache --matmul-autotune on --json-out "$out/mt-nocache-tuned.json"
run mt-on 90 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --json-out "$out/mt-on.json"
run mt-nocache 120 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --no-prefix-cache --json-out "$out/mt-nocache.json"

python3 - "$out" <<'PY' >> "$out/summary.txt"
import json, os, sys
out = sys.argv[1]
def load(n):
    try: return json.load(open(os.path.join(out, n + ".json")))
    except Exception: return None
for name in ("model-base", "model-tuned"):
    r = load(name)
    if r: print(f"{name:12} decode step of 128 rows, median {r['decodeStepMedianMs']:.3f} ms")
print(f"{'run':17} {'out tok/s':>9} {'step ms':>8} {'decode ms':>9}")
for name in ("mt-tuned", "mt-nocache-tuned", "mt-on", "mt-nocache"):
    r = load(name)
    if not r: print(f"{name:17} missing"); continue
    print(f"{name:17} {r['output_tokens_per_second']:9.0f} {r['step_mean_ms']:8.2f} {r['decode_step_mean_ms']:9.2f}")
for a, b in (("mt-tuned", "mt-nocache-tuned"), ("mt-on", "mt-nocache")):
    x, y = load(a), load(b)
    if x and y: print(f"{a} vs {b}: {x['output_tokens_per_second'] / y['output_tokens_per_second']:.3f}x")
PY
{ echo "== dev model, autotuned"; grep -E "FAIL|passed|failed" "$out/dev-model-tuned.txt" | tail -5
  for f in model-base model-tuned; do echo "== $f"; grep -vE "^\s*$" "$out/$f.txt" | head -30; done
  for f in mt-tuned mt-nocache-tuned; do echo "== $f"; grep -E "autotune" "$out/$f.txt" | sed 's/   */  /g' | cut -c1-900; done
  echo "== rcs"; cat "$out/rcs.txt"; } >> "$out/summary.txt"
pack_details
cat "$out/summary.txt"
