#!/usr/bin/env bash
# On the GPU machine: batch-1/4/8 decode with the L2::256B hint as the card's default chooses
# (auto: off on H200) against it forced on and off, alternating.
# Usage: scripts/gpu-l2hint-ab.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary
work=$(mktemp -d)
for v in "auto:" "on:--l2-hint on" "off:--l2-hint off" "auto-2:" "on-2:--l2-hint on" "off-2:--l2-hint off" \
         "b4-auto:--batch 4" "b4-on:--batch 4 --l2-hint on" "b8-auto:--batch 8" "b8-on:--batch 8 --l2-hint on"; do
  name=${v%%:*}; args=${v#*:}
  "$bin" bench model --backend cuda --load-format dummy --model llama-3-8b --prompt-tokens 128 --decode-tokens 64 $args \
    > "$work/decode-$name.txt" 2>&1
  echo "== $name ($args): $(grep -A2 '^batch' "$work/decode-$name.txt" | tail -1)"
done
tar czf "$out/l2hint.tgz" -C "$work" .
