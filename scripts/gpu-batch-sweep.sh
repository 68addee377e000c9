#!/usr/bin/env bash
# On the GPU machine: decode step time of a dummy Llama-3-8B at batch 1-64 (the fused GEMV path
# takes up to 4 rows, cuBLASLt the rest), against the weight-read roofline.
# Usage: scripts/gpu-batch-sweep.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary
for b in 1 2 4 5 8 16 32 64; do
  "$bin" bench model --backend cuda --load-format dummy --model llama-3-8b --prompt-tokens 256 --decode-tokens 32 --batch $b \
    --json-out "$out/batch-$b.json" > "$out/batch-$b.txt" 2>&1
  echo "batch $b: $(grep -A2 '^batch' "$out/batch-$b.txt" | tail -1)"
done
