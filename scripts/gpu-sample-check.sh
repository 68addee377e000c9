#!/usr/bin/env bash
# Runs on the GPU machine: `vtensor dev sample` (GPU sampling against the float64 reference,
# then its time per step). On an H200 it also runs the read-pattern experiment, which has
# only run on H100 so far.
# Usage: scripts/gpu-sample-check.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary
"$bin" dev sample --json-out "$out/sample.json" > "$out/sample.txt" 2>&1; rc=$?
cat "$out/sample.txt"; echo "dev sample rc=$rc"
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  OUT="$out/read" bash scripts/experiments/run_read_patterns.sh | tail -45
fi
# Generation end to end on the GPU (the Generator samples there): the llama3 reference model
# with a byte-level tokenizer; greedy with logprobs on cuda and on cpu, then a seeded draw twice.
ref=/tmp/vtensor-sample-ref
python3 scripts/reference/models.py --out "$ref" --models llama3 > "$out/ref-build.txt" 2>&1 && python3 scripts/reference/add_byte_tokenizer.py "$ref/llama3" >> "$out/ref-build.txt"
for backend in cuda cpu; do
  echo "== generate greedy, $backend"
  "$bin" generate --model "$ref/llama3" --backend $backend --max-tokens 8 --temperature 0 --ignore-eos --logprobs 2 "hello world" 2>&1 | tail -9
done
for run in 1 2; do
  echo "== generate top-p 0.9 seed 5, cuda, run $run"
  "$bin" generate --model "$ref/llama3" --backend cuda --max-tokens 8 --temperature 0.9 --top-p 0.9 --seed 5 --ignore-eos --logprobs 1 "hello world" 2>&1 | tail -9 | cut -c1-60
done
