#!/usr/bin/env bash
# Runs on the GPU machine: the model runtime's GPU checks and timings in one go.
# Usage: scripts/gpu-model-check.sh OUTDIR   (the device tool passes $OUT)
#   1. vtensor dev model: the GPU forward pass (bf16) against the CPU forward pass (fp32).
#   2. scripts/reference/compare.py (when torch + transformers exist): vtensor against
#      transformers on randomly initialized reference models, CPU and CUDA backends.
#   3. vtensor bench model on a dummy Llama-3-8B: prefill of 8192 tokens, batch-1 decode.
# Writes details under OUTDIR and prints a short summary last.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary

"$bin" dev model --json-out "$out/dev-model.json" > "$out/dev-model.txt" 2>&1; dev_rc=$?
ref_rc=skipped
if [ -f scripts/reference/compare.py ] && python3 -c "import torch, transformers" 2>/dev/null; then
  timeout 300 python3 scripts/reference/compare.py "$bin" --backends cpu,cuda --out "$out/reference" > "$out/reference.txt" 2>&1; ref_rc=$?
fi
"$bin" bench model --backend cuda --load-format dummy --model llama-3-8b --batch 1 --prompt-tokens 8192 --decode-tokens 8 --profile \
  --json-out "$out/bench-model-prefill8k.json" > "$out/bench-model-prefill8k.txt" 2>&1; prefill_rc=$?
"$bin" bench model --backend cuda --load-format dummy --model llama-3-8b --batch 1 --prompt-tokens 128 --decode-tokens 64 --profile \
  --json-out "$out/bench-model-decode.json" > "$out/bench-model-decode.txt" 2>&1; decode_rc=$?
"$bin" bench model --backend cuda --load-format dummy --model llama-3-8b --batch 1 --prompt-tokens 128 --decode-tokens 64 --profile \
  --matmul cublas --json-out "$out/bench-model-decode-cublas.json" > "$out/bench-model-decode-cublas.txt" 2>&1

{
  echo "== dev model (rc=$dev_rc)"; grep -E "FAIL|passed|agreement|KV:" "$out/dev-model.txt" | tail -30
  echo "== reference (rc=$ref_rc)"; [ -f "$out/reference.txt" ] && tail -25 "$out/reference.txt"
  echo "== bench model prefill 8k (rc=$prefill_rc)"; head -30 "$out/bench-model-prefill8k.txt"
  echo "== bench model decode (rc=$decode_rc)"; grep -v ceiling "$out/bench-model-decode.txt"
  echo "== bench model decode, cuBLASLt for every matmul"; grep -v ceiling "$out/bench-model-decode-cublas.txt"
} >> "$out/summary.txt"
cat "$out/summary.txt"
[ $dev_rc -eq 0 ] && [ $prefill_rc -eq 0 ] && [ $decode_rc -eq 0 ]
