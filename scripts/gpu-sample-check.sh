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
