#!/usr/bin/env bash
# On the GPU machine, only when it is an H200 (else it says so and stops): what keeps reads,
# decode attention and batch-1 decode below the card's ceiling there. The read-pattern
# experiment (bulk copies, cp.async, registers, decode's head pieces, torch's read), the decode
# attention timings at the issue-3 shapes next to torch's cuDNN and FlashAttention on the same card,
# and batch-1 decode (the card's default L2 hint against it forced on, graphs, batches 4 and 8).
# Usage: scripts/gpu-h200-explore.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
if ! nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  echo "not an H200: $(nvidia-smi --query-gpu=name --format=csv,noheader)"; exit 0
fi
start_summary
OUT="$out/read" bash scripts/experiments/run_read_patterns.sh | tail -42
python3 scripts/experiments/torch_decode_anchor.py 2>&1 | tee "$out/torch-decode-anchor.txt"
"$bin" dev decode --skip-checks --ab --filter "x" --json-out "$out/decode.json" > "$out/decode.txt" 2>&1
grep -E "read ceiling|TB/s" "$out/decode.txt" | head -30
for v in "default:" "hint-on:--l2-hint on" "graphs:--cuda-graphs on" "default-again:" "hint-on-again:--l2-hint on" \
         "batch4:--batch 4" "batch8:--batch 8"; do
  name=${v%%:*}; args=${v#*:}
  "$bin" bench model --backend cuda --load-format dummy --model llama-3-8b --prompt-tokens 128 --decode-tokens 64 $args \
    > "$out/decode-$name.txt" 2>&1
  echo "== $name ($args): $(grep -A2 '^batch' "$out/decode-$name.txt" | tail -1)"
done
