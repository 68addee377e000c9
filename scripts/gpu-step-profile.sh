#!/usr/bin/env bash
# Runs on the GPU machine: where a decode step's GPU time goes at the batch sizes the engine runs
# (dummy Llama-3-8B, 512-token prompts), with CUDA events around every operation.
# Usage: scripts/gpu-step-profile.sh [OUTDIR]
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary
for b in 1 8 32 64 128 256; do
  timeout 120 "$bin" bench model --backend cuda --load-format dummy --model llama-3-8b --batch $b --prompt-tokens 512 --decode-tokens 16 \
    --profile --json-out "$out/bench-model-$b.json" > "$out/bench-model-$b.txt" 2>&1
  echo "== batch $b (rc=$?)" >> "$out/summary.txt"
  grep -vE "^---" "$out/bench-model-$b.txt" | tail -28 >> "$out/summary.txt"
done
cat "$out/summary.txt"
