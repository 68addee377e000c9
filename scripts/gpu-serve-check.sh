#!/usr/bin/env bash
# Runs on the GPU machine: `vtensor serve` over a model built there with transformers, driven by
# the official `openai` client (the CPU suite's checks, Tests/ServerTests/openai_client_check.py)
# and timed at 1 and 32 concurrent streaming clients with `vtensor bench serve`.
# Also the determinism probe (scripts/reference/determinism_probe.py) against the same server.
# Usage: scripts/gpu-serve-check.sh [OUTDIR]   (carry gpu-pack, .whl and gpu-tok or gpu-assets)
#   gpu-pack: scripts/build-gpu-binary.sh; .whl: scripts/fetch-gpu-wheels.sh;
#   gpu-assets/tokenizer.json: a byte-level BPE tokenizer (scripts/fetch-gpu-assets.sh), or the
#   same gzipped as gpu-tok/tokenizer.json.gz when the carry is short of room.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || { echo "wheels did not install" | tee -a "$out/summary.txt"; exit 1; }

# The GPU sampler against its float64 reference (logit bias and min_tokens included).
"$bin" dev sample --json-out "$out/sample.json" > "$out/sample.txt" 2>&1
echo "dev sample rc=$? ($(tail -1 "$out/sample.txt"))" | tee -a "$out/summary.txt"

shape=${SHAPE:-llama-3-8b}
model=/tmp/served-$shape
tokenizer=gpu-assets/tokenizer.json
[ -f gpu-tok/tokenizer.json.gz ] && { gunzip -c gpu-tok/tokenizer.json.gz > /tmp/tokenizer.json; tokenizer=/tmp/tokenizer.json; }
# A machine still warm from an earlier call keeps the model it built.
if [ ! -f "$model/config.json" ]; then
  python3 scripts/reference/build_served_model.py "$model" --tokenizer "$tokenizer" --shape "$shape" \
    > "$out/build-model.txt" 2>&1 || { tail -20 "$out/build-model.txt"; exit 1; }
  tail -1 "$out/build-model.txt" | tee -a "$out/summary.txt"
fi

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
python3 Tests/ServerTests/openai_client_check.py "$base/v1" served --near-ties > "$out/openai-client.txt" 2>&1
rc=$?
echo "openai client checks: rc=$rc ($(( $(date +%s) - t0 )) s); last line: $(tail -1 "$out/openai-client.txt")" | tee -a "$out/summary.txt"
grep -E "^(FAIL|note:)" "$out/openai-client.txt" | tee -a "$out/summary.txt"
python3 scripts/reference/determinism_probe.py "$base" served > "$out/determinism.txt" 2>&1
grep -v "^{" "$out/determinism.txt" | tee -a "$out/summary.txt"

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
nvidia-smi --query-gpu=memory.used --format=csv,noheader | sed 's/^/GPU memory used while serving: /' | tee -a "$out/summary.txt"
grep -E "^vllm:kv_cache_usage_perc|^vtensor:kv_device_memory_bytes|^vllm:num_preemptions_total|^vllm:request_success_total" "$out/metrics.txt" >> "$out/summary.txt"
kill -TERM $pid; wait $pid; echo "server exit status $?" | tee -a "$out/summary.txt"

# For the issue-14 comparison: what the machine's transformers offers as a server.
{ python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  python3 -m pip list 2>/dev/null | grep -iE "^(fastapi|uvicorn|starlette|pydantic|openai|rich|accelerate|kernels|flash)" 
  timeout 60 transformers serve --help 2>&1 | head -80; } > "$out/transformers-serve-probe.txt" 2>&1

# The short table, last.
python3 - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
print(f"{'clients':>8} {'done':>5} {'fail':>5} {'TTFT mean ms':>13} {'TTFT p99 ms':>12} {'TPOT mean ms':>13} {'out tok/s':>10} {'req/s':>7}")
for c in (1, 32):
    path = os.path.join(out, f"bench-c{c}.json")
    if not os.path.exists(path):
        print(f"{c:>8} no result"); continue
    r = json.load(open(path))
    print(f"{c:>8} {r.get('completed', 0):>5} {r.get('failed', 0):>5} {r.get('mean_ttft_ms', 0):>13.1f} {r.get('p99_ttft_ms', 0):>12.1f} "
          f"{r.get('mean_tpot_ms', 0):>13.2f} {r.get('output_throughput', 0):>10.1f} {r.get('request_throughput', 0):>7.2f}")
PY

