#!/usr/bin/env bash
# On the GPU machine: builds and runs read_patterns.cu, then torch's read for comparison.
set -uo pipefail
cd "$(dirname "$0")"
out=${OUT:-/tmp/read-patterns}; mkdir -p "$out"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv | tee "$out/card.txt"
nvcc -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xptxas -v -o /tmp/read_patterns read_patterns.cu > "$out/build.txt" 2>&1 || { tail -30 "$out/build.txt"; exit 1; }
/tmp/read_patterns | tee "$out/read_patterns.txt"
python3 torch_read.py | tee "$out/torch_read.txt"
