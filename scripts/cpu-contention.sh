#!/usr/bin/env bash
# Decode on the CPU with one core held busy by another process (issue 11's contention bar):
# the default thread count against --threads 1, as interleaved rounds, medians last.
#   scripts/cpu-contention.sh [BINARY] [ROUNDS] [CONTEXT] [STEPS]
# Compare with a quiet machine by running it with BUSY=0.
set -euo pipefail
BIN=${1:-.build/release/vtensor}
ROUNDS=${2:-5}
CONTEXT=${3:-128}
STEPS=${4:-128}
BUSY=${BUSY:-1}
OUT=${OUT:-/tmp/cpu-contention}
mkdir -p "$OUT"
busy_pid=""
cleanup() { if [[ -n "$busy_pid" ]]; then kill "$busy_pid" 2>/dev/null || true; wait "$busy_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
if [[ "$BUSY" == 1 ]]; then
    # A spinning process of our own (stress-ng --cpu 1 does the same where installed).
    yes > /dev/null &
    busy_pid=$!
    sleep 1
fi
: > "$OUT/runs.tsv"
for round in $(seq 1 "$ROUNDS"); do
    for threads in default 1; do
        args=(bench model --backend cpu --prompt-tokens "$CONTEXT" --decode-tokens "$STEPS" --json-out "$OUT/r$round-$threads.json")
        [[ "$threads" == 1 ]] && args+=(--threads 1)
        "$BIN" "${args[@]}" > /dev/null
        ms=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["decodeStepMedianMs"])' "$OUT/r$round-$threads.json")
        printf '%s\t%s\t%s\n' "$round" "$threads" "$ms" >> "$OUT/runs.tsv"
    done
done
python3 - "$OUT/runs.tsv" "$BUSY" <<'PY'
import statistics, sys
rows = [l.split('\t') for l in open(sys.argv[1]).read().split('\n') if l]
by = {}
for _, threads, ms in rows: by.setdefault(threads, []).append(float(ms))
busy = 'one core busy (yes)' if sys.argv[2] == '1' else 'quiet'
print(f'decode step on the CPU, {busy}, medians of {len(by["1"])} interleaved rounds')
print('threads   step ms (median)  min-max          tok/s')
for t in ['default', '1']:
    v = by[t]
    print(f'{t:8}  {statistics.median(v):16.2f}  {min(v):6.2f}-{max(v):<8.2f}  {1000/statistics.median(v):6.1f}')
print(f'ratio default/1 (tok/s): {statistics.median(by["1"]) / statistics.median(by["default"]):.3f}')
PY
