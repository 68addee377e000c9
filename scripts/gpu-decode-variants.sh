#!/usr/bin/env bash
# Runs on the GPU machine: batch-1 decode of a dummy Llama-3-8B under A/B variants
# (GEMV unroll, decode attention's smallest split), plus the dev model check for correctness.
# Usage: scripts/gpu-decode-variants.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
[ -n "${SKIP_DEV:-}" ] || "$bin" dev model --json-out "$out/dev-model.json" > "$out/dev-model.txt" 2>&1; echo "dev model rc=$?: $(grep -E 'passed|agreement' "$out/dev-model.txt" | tr '\n' ' ')"
run() {
  local name=$1; shift
  "$bin" bench model --backend cuda --load-format dummy --model llama-3-8b --prompt-tokens 128 --decode-tokens 64 --profile \
    --json-out "$out/decode-$name.json" "$@" > "$out/decode-$name.txt" 2>&1
  # (later options win: --prompt-tokens given in a variant overrides the 128 above)
  echo "== $name ($*)"; grep -A2 "^batch" "$out/decode-$name.txt" | tail -1; grep "host phases" "$out/decode-$name.txt"; grep -A12 "^decode step, GPU" "$out/decode-$name.txt" | tail -9
}
run default
run graphs --cuda-graphs on
run graphs-no-pdl --cuda-graphs on --pdl off
run graphs-persistent --cuda-graphs on --persistent on
run batch4 --batch 4
run batch4-graphs --batch 4 --cuda-graphs on
