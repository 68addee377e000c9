#!/usr/bin/env bash
# On the GPU machine: `vtensor dev model` (correctness, SKIP_DEV=1 skips it), then the decode step
# of a dummy Llama-3-8B at batch 1-64 against the weight-read roofline: our kernels (GEMV up to 4
# rows, the tensor-core skinny kernel up to 64) and cuBLASLt for every matmul (--matmul cublas).
# Usage: scripts/gpu-batch-sweep.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
work=$(mktemp -d)
start_summary
[ -n "${SKIP_DEV:-}" ] || { "$bin" dev model --json-out "$work/dev-model.json" > "$work/dev-model.txt" 2>&1; echo "dev model rc=$?: $(grep -E 'passed|agreement' "$work/dev-model.txt" | tr '\n' ' ')"; }
for b in 1 4 5 8 16 32 64; do
  for m in auto cublas; do
    [ $b -le 4 ] && [ $m = cublas ] && continue
    "$bin" bench model --backend cuda --load-format dummy --model llama-3-8b --prompt-tokens 256 --decode-tokens 32 --batch $b --matmul $m \
      --json-out "$work/batch-$b-$m.json" > "$work/batch-$b-$m.txt" 2>&1
    echo "batch $b $m: $(grep -A2 '^batch' "$work/batch-$b-$m.txt" | tail -1)"
  done
done
tar czf "$out/batch-sweep.tgz" -C "$work" .
