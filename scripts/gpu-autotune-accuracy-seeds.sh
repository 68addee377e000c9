#!/usr/bin/env bash
# Runs on the GPU machine: the trained-model check with the cuBLASLt autotune on and off, on
# byte-level models trained here from other seeds (scripts/gpu-autotune-accuracy.sh used seed 0):
# whether the autotune moves the engine-against-alone agreement at all.
# Usage: [RUN_DEADLINE=240] scripts/gpu-autotune-accuracy-seeds.sh [OUTDIR]   (carry gpu-pack)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary
for s in 1 2; do train_with_shared_prompts /tmp/tiny$s $s train-$s & done
wait
for s in 1 2; do
  for a in off on; do
    run trained-$s-$a 100 "$bin" dev engine --backend cuda --model /tmp/tiny$s --prompts /tmp/tiny$s/shared.json --max-num-seqs 8 --kv-chunks 32 --matmul-autotune $a
  done
done
{ for f in trained-1-off trained-1-on trained-2-off trained-2-on; do
    echo "$f: $(grep -E "teacher-forced|^result|exact greedy" "$out/$f.txt" | sed 's/   */  /g' | tr '\n' ';' | cut -c1-240)"
  done
  echo "== rcs"; cat "$out/rcs.txt"; } >> "$out/summary.txt"
pack_details
cat "$out/summary.txt"
