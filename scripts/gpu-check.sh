#!/usr/bin/env bash
# Runs on the GPU machine: every GPU check and benchmark of the static binary in one go.
# Usage: scripts/gpu-check.sh OUTDIR   (the device tool passes $OUT)
# Writes details under OUTDIR and prints a short summary last.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary

"$bin" info > "$out/info.txt" 2>&1; info_rc=$?
"$bin" selftest > "$out/selftest.txt" 2>&1; selftest_rc=$?
"$bin" bench vmm --steps 400 --json-out "$out/bench-vmm.json" > "$out/bench-vmm.txt" 2>&1; bench_rc=$?
"$bin" bench attention --json-out "$out/bench-attention" > "$out/bench-attention.txt" 2>&1; attention_rc=$?

{
  echo "== info (rc=$info_rc)"; cat "$out/info.txt"
  echo "== selftest (rc=$selftest_rc)"; grep -E "^FAIL|passed|skipped|device:" "$out/selftest.txt"
  echo "== bench vmm (rc=$bench_rc)"; grep -v "^measuring" "$out/bench-vmm.txt"
  echo "== bench attention (rc=$attention_rc)"; cat "$out/bench-attention.txt"
} >> "$out/summary.txt"
cat "$out/summary.txt"
[ $selftest_rc -eq 0 ] && [ $bench_rc -eq 0 ] && [ $attention_rc -eq 0 ]
