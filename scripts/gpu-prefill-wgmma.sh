#!/usr/bin/env bash
# On the GPU machine: the Hopper (wgmma) prefill kernel against the CPU oracle and against the
# mma.sync kernel and torch's FlashAttention-2 / cuDNN on the same card.
# 1. `vtensor dev prefill --checks-only`: every check case, every tile shape (wgmma ones on sm_90).
# 2. `vtensor dev prefill --timing-only`: all shapes, cuBLASLt ceiling in the same run.
# 3. torch SDPA anchors (scripts/experiments/torch_prefill_anchor.py).
# 4. With MODEL=1: `vtensor dev model` (the GPU model, now on the default prefill kernel, against
#    the CPU) and an 8k-token prefill of a dummy Llama-3-8B with the per-operation profile.
# Usage: scripts/gpu-prefill-wgmma.sh [OUTDIR] [extra dev prefill options]
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
shift || true
start_summary
timeout 240 "$bin" dev prefill --checks-only --json-out "$out/checks.json" "$@" > "$out/checks.txt" 2>&1
echo "checks rc=$?: $(grep -cE 'PASS$' "$out/checks.txt") PASS rows, $(grep -cE 'FAIL$' "$out/checks.txt") FAIL rows" | tee -a "$out/summary.txt"
timeout 200 "$bin" dev prefill --timing-only --json-out "$out/timing.json" "$@" > "$out/timing.txt" 2>&1
echo "timing rc=$?" | tee -a "$out/summary.txt"
timeout 120 python3 scripts/experiments/torch_prefill_anchor.py > "$out/torch.txt" 2>&1
if [ "${MODEL:-0}" = 1 ]; then
  timeout 200 "$bin" dev model --json-out "$out/dev-model.json" > "$out/dev-model.txt" 2>&1
  echo "dev model rc=$?: $(grep -E 'passed|agreement' "$out/dev-model.txt" | tr '\n' ' ')" | tee -a "$out/summary.txt"
  timeout 120 "$bin" bench model --backend cuda --load-format dummy --model llama-3-8b --batch 1 --prompt-tokens 8192 --decode-tokens 4 --profile \
    > "$out/prefill-8k.txt" 2>&1
  echo "== prefill 8k"; grep -E "ceiling" "$out/prefill-8k.txt" | head -2; grep -A2 "^batch" "$out/prefill-8k.txt" | tail -1
  grep -A12 "^prefill step, GPU" "$out/prefill-8k.txt" | tail -10
fi
echo "== correctness: $(grep -E 'wgmma.*PASS$' "$out/checks.txt" | wc -l) wgmma rows PASS; failing rows:"; grep -E "FAIL$" "$out/checks.txt" | cut -c1-170 | head -20
echo "== timing"; sed -n '/^timing on/,$p' "$out/timing.txt" | head -60
echo "== torch"; cat "$out/torch.txt"
