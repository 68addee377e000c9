#!/usr/bin/env bash
# Runs on the GPU machine: `vtensor serve` over a model built there with transformers, driven by
# the official `openai` client (the CPU suite's checks, Tests/ServerTests/openai_client_check.py)
# and timed at 1 and 32 concurrent streaming clients with `vtensor bench serve`.
# Usage: scripts/gpu-serve-check.sh [OUTDIR]   (carry gpu-pack, .whl and gpu-assets)
#   gpu-pack: scripts/build-gpu-binary.sh; .whl: scripts/fetch-gpu-wheels.sh;
#   gpu-assets/tokenizer.json: a byte-level BPE tokenizer (scripts/fetch-gpu-assets.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || { echo "wheels did not install" | tee -a "$out/summary.txt"; exit 1; }

shape=${SHAPE:-llama-3-8b}
model=/tmp/served-$shape
python3 scripts/reference/build_served_model.py "$model" --tokenizer gpu-assets/tokenizer.json --shape "$shape" \
  > "$out/build-model.txt" 2>&1 || { tail -20 "$out/build-model.txt"; exit 1; }
tail -1 "$out/build-model.txt" | tee -a "$out/summary.txt"

port=8123
base=http://127.0.0.1:$port
"$bin" serve --model "$model" --backend cuda --port $port --served-model-name served ${SERVE_FLAGS:-} > "$out/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 240); do
  curl -sf "$base/health" > /dev/null && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.5
done
if ! curl -sf "$base/health" > /dev/null; then
  echo "server did not come up" | tee -a "$out/summary.txt"; tail -30 "$out/serve.log"; exit 1
fi
grep -m1 "model loaded" "$out/serve.log" | tee -a "$out/summary.txt"

t0=$(date +%s)
python3 Tests/ServerTests/openai_client_check.py "$base/v1" served > "$out/openai-client.txt" 2>&1
rc=$?
echo "openai client checks: rc=$rc ($(( $(date +%s) - t0 )) s); last line: $(tail -1 "$out/openai-client.txt")" | tee -a "$out/summary.txt"

# Time to first token and tokens/s at 1 and 32 concurrent clients (random prompts, 512 in, 128 out).
for c in 1 32; do
  n=$(( c == 1 ? 16 : 256 ))
  "$bin" bench serve --base-url "$base" --model served --tokenizer "$model" --dataset random --random-input-len 512 \
    --random-output-len 128 --num-prompts $n --max-concurrency $c --request-rate inf --ignore-eos --seed 1 \
    --json-out "$out/bench-c$c.json" > "$out/bench-c$c.txt" 2>&1
  echo "bench serve, $c concurrent: rc=$?" >> "$out/summary.txt"
  cat "$out/bench-c$c.txt" >> "$out/summary.txt"
done
curl -s "$base/metrics" > "$out/metrics.txt"
kill -TERM $pid; wait $pid; echo "server exit status $?" | tee -a "$out/summary.txt"
