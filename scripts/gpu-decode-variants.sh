#!/usr/bin/env bash
# Runs on the GPU machine: batch-1 decode of a dummy Llama-3-8B under A/B variants (each line
# of `run` below; edit the list per experiment), after `vtensor dev model` for correctness
# (SKIP_DEV=1 skips it). Details go to OUTDIR/decode-variants.tgz (one file: the device tool
# brings back a limited number), the summary to stdout.
# Usage: scripts/gpu-decode-variants.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
work=$(mktemp -d)
[ -n "${SKIP_DEV:-}" ] || { "$bin" dev model --json-out "$work/dev-model.json" > "$work/dev-model.txt" 2>&1; echo "dev model rc=$?: $(grep -E 'passed|agreement' "$work/dev-model.txt" | tr '\n' ' ')"; }
run() {
  local name=$1; shift
  "$bin" bench model --backend cuda --load-format dummy --model llama-3-8b --prompt-tokens 128 --decode-tokens 64 --profile \
    --json-out "$work/decode-$name.json" "$@" > "$work/decode-$name.txt" 2>&1
  # (later options win: --prompt-tokens given in a variant overrides the 128 above)
  echo "== $name ($*)"; grep -A2 "^batch" "$work/decode-$name.txt" | tail -1; grep "host phases" "$work/decode-$name.txt" | cut -c1-120
  [ -n "${QUIET:-}" ] || grep -A12 "^decode step, GPU" "$work/decode-$name.txt" | tail -9
}
QUIET=1
run default
run graphs --cuda-graphs on
run no-attention --skip-attention
run default-again
run graphs-again --cuda-graphs on
run batch4 --batch 4
run batch8 --batch 8
unset QUIET
run profile-default
tar czf "$out/decode-variants.tgz" -C "$work" .
