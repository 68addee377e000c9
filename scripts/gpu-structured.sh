#!/usr/bin/env bash
# Runs on the GPU machine: structured output (constrained decoding) on the device, in one call.
#   1. kernels compile --filter sampling: the sampler and the mask kernel compile (NVRTC).
#   2. dev sample: the GPU sampler against its float64 oracle, now with rows carrying grammar
#      masks (the mask kernel, then the sampler) beside rows without.
#   3. vtensor serve on a random Llama-3-8B (scripts/reference/build_served_model.py, the carried
#      tokenizer): scripts/reference/structured_serve_check.py sends 64 constrained chat requests
#      at once (JSON schema, regular expression) and 16 forced tool calls; every answer must be valid.
#   4. The cost: bench serve, random 400 requests (128-512 in, 128-256 out, ignore_eos), with a
#      regular expression that never completes (so lengths match) on 0, 25% and 100% of them.
#      Prediction: the host mask walk is ~0.05-0.09 ms a new state at a 128k vocabulary (bench
#      structured on the development machine) and cached states cost ~0.1 us; the 16 KB a row of
#      masks is nothing next to a step; the cost that shows is the synchronized step (the
#      engine waits for each constrained row's pick before the next draw): pipelining was worth
#      1.22x (docs/perf.md), so 100% constrained should run at about 0.8x, 25% about the same
#      (any constrained row synchronizes the whole step).
#   5. The same server with late draws (the default since 2026-12-05; the runs above set --late-draws off) (a step whose draws need the previous picks queues
#      its forward pass, then its sampling once those picks are in): the structured check again
#      (validity through the late path), 25% and 100% constrained, and a repetition penalty on
#      every request (penalties need the previous pick too; SmolLM2-style defaults add one to
#      every request) both ways. Prediction: late draws bring the constrained and penalized runs
#      back to within a few % of share 0 (the masks, ~0.05-0.09 ms a new state, are built while the
#      forward pass runs, 10-40 ms).
# Usage: scripts/gpu-structured.sh [OUTDIR]   (carry gpu-pack, gpu-kcache, and gpu-tok or gpu-assets:
#   scripts/fetch-gpu-assets.sh)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary

run compile 120 "$bin" kernels compile --filter sampling
run dev-sample 180 "$bin" dev sample

model=/tmp/served-llama-3-8b
tokenizer=gpu-assets/tokenizer.json
[ -f gpu-tok/tokenizer.json.gz ] && { gunzip -c gpu-tok/tokenizer.json.gz > /tmp/tokenizer.json; tokenizer=/tmp/tokenizer.json; }
if [ ! -f "$model/config.json" ]; then
  run build-model 300 python3 scripts/reference/build_served_model.py "$model" --tokenizer "$tokenizer" --shape llama-3-8b
fi
port=8125
base=http://127.0.0.1:$port
regex='{"structured_outputs": {"regex": "[a-z ,.]*"}}'
penalty='{"repetition_penalty": 1.1}'
bench_share() {  # bench_share NAME BODY SHARE (every run starts with an empty prefix cache: the runs repeat their prompts)
  run "bench-$1" 240 "$bin" bench serve --base-url "$base" --model served --tokenizer "$model" --dataset random --num-prompts 400 \
    --random-input-len 320 --random-output-len 192 --random-range-ratio 0.6 --ignore-eos --seed 1 --no-progress --reset-prefix-cache \
    --extra-body "$2" --extra-body-share $3 --json-out "$out/bench-$1.json"
}
start() {  # start FLAGS...
  "$bin" serve --model "$model" --backend cuda --port $port --served-model-name served "$@" >> "$out/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do curl -sf "$base/health" > /dev/null && break; kill -0 $pid 2>/dev/null || break; sleep 0.5; done
}
stop() { curl -s "$base/metrics" > "$out/metrics-$1.txt"; kill -TERM $pid; wait $pid 2>/dev/null; }
start --late-draws off
run structured-check 300 python3 scripts/reference/structured_serve_check.py "$base" served --requests 64
for share in 0 1; do bench_share "share-$share" "$regex" $share; done
bench_share penalty "$penalty" 1
bench_share share-0-again "$regex" 0
stop sync
start  # late draws: the default
run structured-check-late 300 python3 scripts/reference/structured_serve_check.py "$base" served --requests 64
for share in 0 0.25 1; do bench_share "late-share-$share" "$regex" $share; done
bench_share late-penalty "$penalty" 1
stop late
save_kernel_cache "$out/kernel-cache.tgz"

{
  echo "== dev sample (grammar masks rows)"; grep -E "grammar masks|pass|FAIL" "$out/dev-sample.txt" | head -12
  echo "== structured answers (synchronized, then late draws)"; cat "$out/structured-check.txt" "$out/structured-check-late.txt"
  echo "== cost: output tok/s by share of constrained requests (regex), and a repetition penalty on all"
  for name in share-0 share-1 penalty share-0-again late-share-0 late-share-0.25 late-share-1 late-penalty; do
    python3 -c "import json,sys; r=json.load(open('$out/bench-$name.json')); c=r.get('server_counters') or {}; print(f'{\"$name\":16s} {r[\"output_throughput\"]:8.1f} tok/s, TPOT mean {r[\"mean_tpot_ms\"]:6.1f} ms, {r[\"completed\"]} done, synchronized {c.get(\"vtensor:synchronized_steps_total\", 0):.0f}, mask ms {1000 * c.get(\"vtensor:structured_output_mask_seconds_total\", 0):.0f}')" 2>/dev/null || echo "$name: no result"
  done
} > "$out/table.txt"
cat "$out/rcs.txt" "$out/table.txt"
