#!/usr/bin/env bash
# Runs on the GPU machine: decode with the RMSNorm sums of squares in double (new binary,
# gpu-pack) against float (the binary before, gpu-pack-base): NVRTC compiles the kernels, then
#   1. decode speed A/B, alternating: dummy Llama-3-8B, 128-token prompts, 64 decode steps, batch 1 and 32;
#   2. determinism: `vtensor serve` over a transformers-built random Llama-3-8B, the same greedy
#      request repeated alone, seeded n=4 repeated, min_tokens (scripts/reference/determinism_probe.py),
#      with each binary.
# Usage: scripts/gpu-determinism-check.sh [OUTDIR]   (carry gpu-pack, gpu-pack-base with vtensor.xz, gpu-tok)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary
mkdir -p gpu-bin-base && xz -dc gpu-pack-base/vtensor.xz > gpu-bin-base/vtensor && chmod +x gpu-bin-base/vtensor
# The tokenizer, compressed to fit the carry (gpu-tok/tokenizer.json.gz), else gpu-assets/tokenizer.json.
tokenizer=gpu-assets/tokenizer.json
[ -f gpu-tok/tokenizer.json.gz ] && { gunzip -c gpu-tok/tokenizer.json.gz > /tmp/tokenizer.json; tokenizer=/tmp/tokenizer.json; }
echo "base binary: $(cat gpu-pack-base/COMMIT)" | tee -a "$out/summary.txt"
work=$(mktemp -d)
"$bin" kernels compile > "$work/kernels-compile.txt" 2>&1; echo "kernels compile (new): rc=$? $(tail -1 "$work/kernels-compile.txt")" | tee -a "$out/summary.txt"

for round in 1 2; do
  for b in 1 32; do
    for v in base new; do
      exe=$bin; [ $v = base ] && exe=gpu-bin-base/vtensor
      "$exe" bench model --backend cuda --load-format dummy --model llama-3-8b --prompt-tokens 128 --decode-tokens 64 --batch $b \
        > "$work/decode-$v-b$b-r$round.txt" 2>&1
      echo "decode $v batch $b round $round: $(grep -A2 '^batch' "$work/decode-$v-b$b-r$round.txt" | tail -1)" | tee -a "$out/summary.txt"
    done
  done
done

model=/tmp/served-llama-3-8b
if [ ! -f "$model/config.json" ]; then
  python3 scripts/reference/build_served_model.py "$model" --tokenizer "$tokenizer" > "$work/build-model.txt" 2>&1 \
    || { tail -20 "$work/build-model.txt"; exit 1; }
fi
port=8125
for v in new base; do
  exe=$bin; [ $v = base ] && exe=gpu-bin-base/vtensor
  "$exe" serve --model "$model" --backend cuda --port $port --served-model-name served > "$work/serve-$v.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 400); do curl -sf http://127.0.0.1:$port/health > /dev/null && break; kill -0 $pid 2>/dev/null || break; sleep 0.5; done
  grep -m1 "model loaded" "$work/serve-$v.log" | sed "s/^/$v: /" | tee -a "$out/summary.txt"
  python3 scripts/reference/determinism_probe.py http://127.0.0.1:$port served > "$work/probe-$v.txt" 2>&1
  sed "s/^/$v: /" "$work/probe-$v.txt" | tee -a "$out/summary.txt"
  kill -TERM $pid; wait $pid
done
# For the issue-14 comparison: what the machine's transformers offers as a server.
{ python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  python3 -m pip list 2>/dev/null | grep -iE "^(fastapi|uvicorn|starlette|pydantic|openai|rich|accelerate|kernels|flash|huggingface)"
  timeout 60 transformers serve --help 2>&1 | head -100; } > "$work/transformers-serve-probe.txt" 2>&1
head -3 "$work/transformers-serve-probe.txt" | tee -a "$out/summary.txt"
tar czf "$out/determinism.tgz" -C "$work" .
echo; grep -E "^decode|distinct|min_tokens" "$out/summary.txt"
