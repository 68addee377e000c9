#!/usr/bin/env bash
# Runs on the GPU machine: batch-1 decode of a dummy Llama-3-8B under A/B variants
# (GEMV unroll, decode attention's smallest split), plus the dev model check for correctness.
# Usage: scripts/gpu-decode-variants.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/.."
# Unpack the carried binary (scripts/build-gpu-binary.sh writes gpu-pack/vtensor.gz).
if [ -f gpu-pack/vtensor.gz ] && [ -z "${VTENSOR_BIN:-}" ]; then
  mkdir -p gpu-bin && gunzip -c gpu-pack/vtensor.gz > gpu-bin/vtensor && cp gpu-pack/COMMIT gpu-bin/COMMIT
fi
out=${1:-${OUT:-/tmp/vtensor-gpu}}
bin=${VTENSOR_BIN:-gpu-bin/vtensor}
mkdir -p "$out"
export VTENSOR_CACHE_DIR=${VTENSOR_CACHE_DIR:-/tmp/vtensor-cache}
chmod +x "$bin"
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
