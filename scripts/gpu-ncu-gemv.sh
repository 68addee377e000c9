#!/usr/bin/env bash
# On the GPU machine: Nsight Compute on the decode matmuls of a short batch-1 decode (the
# register-load dgemv and the bulk-copy dsgemv, down projection and gate/up), for stall reasons
# and memory throughput. Usage: scripts/gpu-ncu-gemv.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
for variant in registers stream; do
  ncu --clock-control none -k 'regex:dsgemv_residual|dgemv_residual|dsgemv_swiglu|dgemv_swiglu' --launch-skip 200 --launch-count 4 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --section LaunchStats \
    "$bin" bench model --backend cuda --load-format dummy --model llama-3-8b --prompt-tokens 128 --decode-tokens 8 --gemv-weights $variant \
    > "$out/ncu-$variant.txt" 2>&1
  echo "== $variant"
  grep -E "dgemv|dsgemv|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Warp Cycles Per Issued|Stall|L2 Hit|Registers Per|Grid Size|Dynamic Shared" "$out/ncu-$variant.txt" | grep -v "^\s*-" | head -60
done
