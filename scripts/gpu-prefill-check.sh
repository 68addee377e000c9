#!/usr/bin/env bash
# On the GPU machine: `vtensor dev model` (correctness), then prefill of 8192 tokens on a dummy
# Llama-3-8B twice with the per-operation profile (the issue-4 prefill roofline).
# Usage: scripts/gpu-prefill-check.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary
"$bin" dev model --json-out "$out/dev-model.json" > "$out/dev-model.txt" 2>&1; echo "dev model rc=$?: $(grep -E 'passed|agreement' "$out/dev-model.txt" | tr '\n' ' ')"
for run in 1 2; do
  "$bin" bench model --backend cuda --load-format dummy --model llama-3-8b --batch 1 --prompt-tokens 8192 --decode-tokens 4 --profile \
    > "$out/prefill-$run.txt" 2>&1
  echo "== prefill 8k run $run"; grep -E "ceiling" "$out/prefill-$run.txt" | head -2; grep -A2 "^batch" "$out/prefill-$run.txt" | tail -1
  grep -A12 "^prefill step, GPU" "$out/prefill-$run.txt" | tail -10
done
