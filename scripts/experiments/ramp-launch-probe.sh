#!/usr/bin/env bash
# GPU machine: which operation's launch blocks in the ramp of the shared-prefix run (issue 12).
# Usage: scripts/experiments/ramp-launch-probe.sh [OUTDIR]   (carry gpu-pack)
cd "$(dirname "$0")/../.."
set -uo pipefail
. scripts/gpu-common.sh
start_summary
sp=(--dataset shared-prefix --groups 64 --prompts-per-group 16 --system-len 2048 --question-len 128 --output-len 256)
run sp-paged 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --json-out "$out/sp-paged.json"
run sp-on 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/sp-on.json"
for f in sp-paged sp-on; do echo "== $f"; grep -E "^output|^steps|^GPU per step|^longest GPU|^engine thread at" "$out/$f.txt" | sed 's/   */  /g' | cut -c1-2400; done
