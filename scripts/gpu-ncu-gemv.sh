#!/usr/bin/env bash
# On the GPU machine: Nsight Compute on the decode matmuls of a short batch-1 decode (down
# projection and gate/up), for stall reasons, occupancy and memory throughput.
# Usage: scripts/gpu-ncu-gemv.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
ncu --clock-control none -k 'regex:dgemv_residual|dgemv_swiglu' --launch-skip 200 --launch-count 4 \
  --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --section LaunchStats \
  "$bin" bench model --backend cuda --load-format dummy --model llama-3-8b --prompt-tokens 128 --decode-tokens 8 \
  > "$out/ncu.txt" 2>&1
grep -E "dgemv|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Warp Cycles Per Issued|Stall|L2 Hit|Registers Per|Grid Size" "$out/ncu.txt" | grep -v "^\s*-" | head -60
