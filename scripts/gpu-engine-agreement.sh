#!/usr/bin/env bash
# Runs on the GPU machine: the engine's batched outputs against each request alone (bf16).
# Usage: scripts/gpu-engine-agreement.sh [OUTDIR]
#   A byte-level Llama trained here for a few seconds (scripts/reference/train_tiny.py: clear
#   margins, unlike a random model's), with held-out prompts, through `vtensor dev engine`:
#   mixed chunked preempted batches; the alone path itself (1 at a time, no chunks: must be exact);
#   then the random model with and without chunking and preemption, for its margins.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary
PYTHONUNBUFFERED=1 run train 240 python3 scripts/reference/train_tiny.py /tmp/tiny --steps 600
tiny=(--model /tmp/tiny --prompts /tmp/tiny/prompts.json)
run trained-batched 240 "$bin" dev engine --backend cuda "${tiny[@]}" --json-out "$out/trained-batched.json"
run trained-one-at-a-time 240 "$bin" dev engine --backend cuda "${tiny[@]}" --max-num-seqs 1 --max-num-batched-tokens 1024 --kv-chunks 8
run trained-batched-no-chunks 240 "$bin" dev engine --backend cuda "${tiny[@]}" --max-num-batched-tokens 1024 --kv-chunks 64
run random-batched-no-chunks 240 "$bin" dev engine --backend cuda --max-num-batched-tokens 1024 --kv-chunks 64
{
  echo "== return codes"; cat "$out/rcs.txt"
  echo "== training"; tail -3 "$out/train.txt"
  for f in trained-batched trained-one-at-a-time trained-batched-no-chunks random-batched-no-chunks; do
    echo "== dev engine $f"; grep -vE "^---|^check" "$out/$f.txt" | tail -9
  done
} >> "$out/summary.txt"
cat "$out/summary.txt"
