#!/usr/bin/env bash
# Runs on the GPU machine: the trained-model check with the cuBLASLt autotune on and off, on
# byte-level models trained here from other seeds (scripts/gpu-autotune-accuracy.sh used seed 0):
# whether the autotune moves the engine-against-alone agreement at all.
# Usage: [RUN_DEADLINE=240] scripts/gpu-autotune-accuracy-seeds.sh [OUTDIR]   (carry gpu-pack)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary
for s in 1 2; do
  (PYTHONUNBUFFERED=1 python3 scripts/reference/train_tiny.py /tmp/tiny$s --steps 600 --seed $s > "$out/train-$s.txt" 2>&1; echo "train-$s: rc=$?" >> "$out/rcs.txt") &
done
wait
for s in 1 2; do
  python3 - $s <<'PY2'
import json, random, sys
s = sys.argv[1]
p = json.load(open(f"/tmp/tiny{s}/prompts.json")); random.seed(5)
out = [p[k % 4][:600] + p[4 + k % 20][:random.randint(10, 200)] for k in range(24)]
json.dump(out, open(f"/tmp/tiny{s}/shared.json", "w"))
PY2
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
