#!/usr/bin/env bash
# Runs on the GPU machine: the checks for how the GPU loads a checkpoint, in one call.
#   1. scripts/reference/compare.py --backends cuda: vtensor's logits, with the weights read
#      straight from the mapped safetensors (CheckpointLayout), against transformers on the
#      reference models (Llama 3, Qwen2 with biases, Mistral, SmolLM).
#   2. scripts/gpu-serve-check.sh: `vtensor serve` over a transformers-built Llama-3-8B (the
#      "model loaded in" line is the load time), the openai checks, latency at 1 and 32 clients.
# Usage: scripts/gpu-load-check.sh [OUTDIR]   (carry gpu-pack, .whl, gpu-tok, and gpu-kcache when there is one)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
timeout 300 python3 scripts/reference/compare.py "$bin" --backends cuda --out "$out/reference" > "$out/reference.txt" 2>&1
ref_rc=$?
scripts/gpu-serve-check.sh "$out" > "$out/serve-check.txt" 2>&1
serve_rc=$?
save_kernel_cache "$out/kernel-cache.tgz"
{ echo "== reference logits, cuda (rc=$ref_rc)"; tail -12 "$out/reference.txt"; echo "== serve check (rc=$serve_rc)"; } >> "$out/summary.txt"
(cd "$out" && tar czf /tmp/load-details.tgz --exclude=summary.txt --exclude=kernel-cache.tgz . 2>/dev/null \
  && find . -mindepth 1 ! -name summary.txt ! -name kernel-cache.tgz -delete && mv /tmp/load-details.tgz details.tgz)
cat "$out/summary.txt"
