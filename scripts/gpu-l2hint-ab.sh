#!/usr/bin/env bash
# On the GPU machine: batch-1/4 decode with and without the L2::256B hint on weight and K/V
# loads (it helped a little on H100; on an H200 a plain read lost 7% with it), alternating.
# Usage: scripts/gpu-l2hint-ab.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary
for v in "hint:" "no-hint:--l2-hint off" "hint-2:" "no-hint-2:--l2-hint off" "hint-3:" "no-hint-3:--l2-hint off" \
         "b4-hint:--batch 4" "b4-no-hint:--batch 4 --l2-hint off" "b8-hint:--batch 8" "b8-no-hint:--batch 8 --l2-hint off"; do
  name=${v%%:*}; args=${v#*:}
  "$bin" bench model --backend cuda --load-format dummy --model llama-3-8b --prompt-tokens 128 --decode-tokens 64 $args \
    > "$out/decode-$name.txt" 2>&1
  echo "== $name ($args): $(grep -A2 '^batch' "$out/decode-$name.txt" | tail -1)"
done
