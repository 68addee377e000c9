#!/usr/bin/env bash
# Runs on the GPU machine: the engine's GPU checks and throughput in one go.
# Usage: scripts/gpu-engine-check.sh [OUTDIR] [quick|seqs|prefetch|pipeline|ab|table|graphs]   (the device tool passes $OUT)
#   graphs: CUDA graphs for decode steps (padded batch-size buckets) checked (dev model, dev engine
#   on random and trained models, virtual tensors and paged) and A/B'd on ShareGPT, 8 and 64
#   requests; then ShareGPT with the longest-output-first admission order and other seat counts.
#   final: the service defaults (graphs on) on ShareGPT and random 1000, both KV modes, and lof.
#   workloads: multi-turn and shared-prefix throughput, prefix cache on and off, and paged.
#   lpm: the same workloads under fcfs and lpm (longest cached prefix first), also with a KV
#   budget small enough that the cache must evict (8 GiB).
#   alias: cached prefixes aliased on the mapper thread (pending aliases): the trained model on
#   shared prompts against each alone, then multi-turn (the small run, the issue's defaults, and
#   2048 tokens a step for first-token latency) and shared prefix, cache on and off, and paged.
#   prefixab: the prefix cache's A/B in one call: GPU checks (trained model on shared prompts,
#   virtual tensors and paged), then multi-turn (the issue's defaults and the small run) and
#   shared prefix, each with the cache on and off, virtual tensors and the paged baseline with
#   the same prefix cache.
#   publish: shared prefix and multi-turn (defaults), virtual tensors against paged, both with
#   the prefix cache (a running request's prompt chunks published when queued), and shared
#   prefix without the cache.
#   prefix: the prefix cache: shared-prefix prompts through the engine vs alone (trained model),
#   ShareGPT with the cache on and off.
#   table: decode attention's one shared item table (layer-0 bases + per-layer offsets) checked
#   (dev model, dev engine on the trained model) and A/B'd against a table per layer and paged.
#   ab: the three-way A/B on one workload (virtual tensors, the paged baseline, transformers'
#   generate_batch), the paged baseline on the trained model, and more sequences a step.
#   pipeline: the pipelined step (step N+1 planned and queued while N runs) checked against each
#   request alone (random and trained models), then A/B against one step at a time: 1000 random
#   requests, ShareGPT, and decode-heavy batches of 256 and 64 (the host-time target).
#   prefetch: the 1000-request random workload with admissions' first chunks mapped a step early
#   and without (A/B), and ShareGPT.
#   quick: dev engine and one small throughput run; seqs: the 1000-request workloads at 512 and
#   1024 sequences a step (the default is 256).
#   1. vtensor dev engine: batched (mixed, chunked, preempted) against each request alone, bf16.
#   2. vtensor dev model: the GPU forward pass against the CPU's, mixed decode + prefill steps included.
#   3. vtensor bench throughput, dummy Llama-3-8B: 256 requests of 128-1024 prompt tokens and
#      128 output tokens (the transformers anchor's workload), then the issue's 1000 requests of
#      128-1024 in and 128-512 out (decodes split from prompt chunks, then all on prefill
#      attention, for the A/B), then 1000 ShareGPT-shaped requests.
#   4. transformers' generate_batch (paged attention) on the first workload, same card.
# Writes details under OUTDIR and prints a short summary last.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary
quick=${2:-}

# The prefix cache's workloads (sharedprefix, workloads, lpm).
mt=(--dataset multi-turn --num-conversations 64 --rounds 5 --user-len 512 --answer-len 64 --max-in-flight 32)
sp=(--dataset shared-prefix --groups 16 --prompts-per-group 16 --system-len 2048 --question-len 128 --output-len 64)

[ "$quick" = alias ] || [ "$quick" = prefixab ] || [ "$quick" = publish ] || [ "$quick" = seqs ] || [ "$quick" = prefetch ] || [ "$quick" = pipeline ] || [ "$quick" = ab ] || [ "$quick" = table ] || [ "$quick" = graphs ] || [ "$quick" = final ] || [ "$quick" = prefix ] || [ "$quick" = workloads ] || [ "$quick" = sharedprefix ] || [ "$quick" = lpm ] || run dev-engine 240 "$bin" dev engine --backend cuda --json-out "$out/dev-engine.json"
if [ "$quick" = pipeline ]; then
  # In order of what matters most, each with its own time limit.
  run dev-engine 150 "$bin" dev engine --backend cuda --json-out "$out/dev-engine.json"
  run dev-engine-paged 150 "$bin" dev engine --backend cuda --kv paged
  PYTHONUNBUFFERED=1 run train 150 python3 scripts/reference/train_tiny.py /tmp/tiny --steps 600
  run dev-engine-trained 150 "$bin" dev engine --backend cuda --model /tmp/tiny --prompts /tmp/tiny/prompts.json
  sg=(--dataset sharegpt --num-prompts 1000)
  rnd=(--dataset random --input-len 128-1024 --output-len 128-512 --num-prompts 1000)
  run tp-sharegpt-on 150 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --json-out "$out/tp-sharegpt-on.json"
  run tp-sharegpt-off 150 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --pipeline-steps off --json-out "$out/tp-sharegpt-off.json"
  for p in on off; do
    run tp-b256-$p 100 "$bin" bench throughput "${dummy[@]}" --input-len 512 --output-len 128 --num-prompts 256 --pipeline-steps $p --json-out "$out/tp-b256-$p.json"
    run tp-b64-$p 100 "$bin" bench throughput "${dummy[@]}" --input-len 512 --output-len 256 --num-prompts 64 --pipeline-steps $p --json-out "$out/tp-b64-$p.json"
  done
  run tp-sharegpt-paged 150 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --kv paged --json-out "$out/tp-sharegpt-paged.json"
  run tp-1000-on 150 "$bin" bench throughput "${dummy[@]}" "${rnd[@]}" --json-out "$out/tp-1000-on.json"
  run tp-1000-paged 150 "$bin" bench throughput "${dummy[@]}" "${rnd[@]}" --kv paged --json-out "$out/tp-1000-paged.json"
  run tp-1000-off 150 "$bin" bench throughput "${dummy[@]}" "${rnd[@]}" --pipeline-steps off --json-out "$out/tp-1000-off.json"
elif [ "$quick" = graphs ]; then
  # CUDA graphs for decode steps (padded buckets) checked, then A/B'd; then the admission order.
  run dev-model 200 "$bin" dev model --json-out "$out/dev-model.json"
  run dev-engine-graphs 120 "$bin" dev engine --backend cuda --cuda-graphs on --requests 48 --max-num-seqs 40 --kv-chunks 24
  PYTHONUNBUFFERED=1 run train 150 python3 scripts/reference/train_tiny.py /tmp/tiny --steps 600
  run dev-engine-trained-graphs 120 "$bin" dev engine --backend cuda --model /tmp/tiny --prompts /tmp/tiny/prompts.json --cuda-graphs on --max-num-seqs 24
  run dev-engine-trained-graphs-paged 120 "$bin" dev engine --backend cuda --model /tmp/tiny --prompts /tmp/tiny/prompts.json --cuda-graphs on \
    --max-num-seqs 24 --kv paged
  sg=(--dataset sharegpt --num-prompts 1000)
  for g in on off; do
    run tp-sharegpt-g$g 120 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --cuda-graphs $g --json-out "$out/tp-sharegpt-g$g.json"
    run tp-b8-g$g 60 "$bin" bench throughput "${dummy[@]}" --input-len 512 --output-len 256 --num-prompts 8 --cuda-graphs $g --json-out "$out/tp-b8-g$g.json"
    run tp-b64-g$g 60 "$bin" bench throughput "${dummy[@]}" --input-len 512 --output-len 256 --num-prompts 64 --cuda-graphs $g --json-out "$out/tp-b64-g$g.json"
  done
  run tp-sharegpt-lof 120 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --schedule-policy lof --json-out "$out/tp-sharegpt-lof.json"
  run tp-sharegpt-lof128 120 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --schedule-policy lof --max-num-seqs 128 --json-out "$out/tp-sharegpt-lof128.json"
  run tp-sharegpt-fcfs192 120 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --max-num-seqs 192 --json-out "$out/tp-sharegpt-fcfs192.json"
elif [ "$quick" = prefix ]; then
  # The prefix cache on the GPU: requests sharing long prefixes through the engine (hits alias
  # cached chunks) against each request alone, on the trained model; ShareGPT with the cache on
  # (no shared prefixes: its cost only) and off.
  train_with_shared_prompts
  run dev-engine-prefix 150 "$bin" dev engine --backend cuda --model /tmp/tiny --prompts /tmp/tiny/shared.json --max-num-seqs 4 --kv-chunks 24
  run dev-engine-prefix-paged 150 "$bin" dev engine --backend cuda --model /tmp/tiny --prompts /tmp/tiny/shared.json --max-num-seqs 4 --kv-chunks 24 --kv paged
  sg=(--dataset sharegpt --num-prompts 1000)
  run tp-sharegpt 120 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --json-out "$out/tp-sharegpt.json"
  run tp-sharegpt-nocache 120 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --no-prefix-cache --json-out "$out/tp-sharegpt-nocache.json"
elif [ "$quick" = alias ]; then
  train_with_shared_prompts
  run dev-engine-prefix 150 "$bin" dev engine --backend cuda --model /tmp/tiny --prompts /tmp/tiny/shared.json --max-num-seqs 4 --kv-chunks 24
  mtd=(--dataset multi-turn --num-conversations 256 --rounds 5 --user-len 512 --answer-len 64 --max-in-flight 128)
  # CACHE_ONLY=1: the prefix-cache arms alone (a quick look between full runs).
  nocache() { if [ -z "${CACHE_ONLY:-}" ]; then run "$@"; fi; }
  run tp-multiturn 100 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --json-out "$out/tp-multiturn.json"
  nocache tp-multiturn-nocache 100 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --no-prefix-cache --json-out "$out/tp-multiturn-nocache.json"
  run tp-multiturn-2048 100 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --max-num-batched-tokens 2048 --json-out "$out/tp-multiturn-2048.json"
  nocache tp-multiturn-2048-nocache 100 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --max-num-batched-tokens 2048 --no-prefix-cache \
    --json-out "$out/tp-multiturn-2048-nocache.json"
  run tp-sharedprefix 100 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/tp-sharedprefix.json"
  nocache tp-sharedprefix-nocache 100 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --no-prefix-cache --json-out "$out/tp-sharedprefix-nocache.json"
  run tp-multiturn-defaults 150 "$bin" bench throughput "${dummy[@]}" "${mtd[@]}" --json-out "$out/tp-multiturn-defaults.json"
  nocache tp-multiturn-defaults-nocache 200 "$bin" bench throughput "${dummy[@]}" "${mtd[@]}" --no-prefix-cache --json-out "$out/tp-multiturn-defaults-nocache.json"
  nocache tp-multiturn-paged 100 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --kv paged --json-out "$out/tp-multiturn-paged.json"
elif [ "$quick" = prefixab ]; then
  train_with_shared_prompts
  run dev-engine-prefix 100 "$bin" dev engine --backend cuda --model /tmp/tiny --prompts /tmp/tiny/shared.json --max-num-seqs 4 --kv-chunks 24
  run dev-engine-prefix-paged 100 "$bin" dev engine --backend cuda --model /tmp/tiny --prompts /tmp/tiny/shared.json --max-num-seqs 4 --kv-chunks 24 --kv paged
  mtd=(--dataset multi-turn --num-conversations 256 --rounds 5 --user-len 512 --answer-len 64 --max-in-flight 128)
  run tp-multiturn-defaults 100 "$bin" bench throughput "${dummy[@]}" "${mtd[@]}" --json-out "$out/tp-multiturn-defaults.json"
  run tp-multiturn-defaults-nocache 120 "$bin" bench throughput "${dummy[@]}" "${mtd[@]}" --no-prefix-cache --json-out "$out/tp-multiturn-defaults-nocache.json"
  run tp-multiturn-defaults-paged 100 "$bin" bench throughput "${dummy[@]}" "${mtd[@]}" --kv paged --json-out "$out/tp-multiturn-defaults-paged.json"
  run tp-sharedprefix 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/tp-sharedprefix.json"
  run tp-sharedprefix-nocache 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --no-prefix-cache --json-out "$out/tp-sharedprefix-nocache.json"
  run tp-sharedprefix-paged 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --json-out "$out/tp-sharedprefix-paged.json"
  run tp-sharedprefix-paged-nocache 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --no-prefix-cache --json-out "$out/tp-sharedprefix-paged-nocache.json"
  run tp-multiturn 60 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --json-out "$out/tp-multiturn.json"
  run tp-multiturn-nocache 60 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --no-prefix-cache --json-out "$out/tp-multiturn-nocache.json"
  run tp-multiturn-paged 60 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --kv paged --json-out "$out/tp-multiturn-paged.json"
elif [ "$quick" = publish ]; then
  mtd=(--dataset multi-turn --num-conversations 256 --rounds 5 --user-len 512 --answer-len 64 --max-in-flight 128)
  run tp-sharedprefix 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/tp-sharedprefix.json"
  run tp-sharedprefix-paged 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --json-out "$out/tp-sharedprefix-paged.json"
  run tp-sharedprefix-nocache 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --no-prefix-cache --json-out "$out/tp-sharedprefix-nocache.json"
  run tp-multiturn-defaults 100 "$bin" bench throughput "${dummy[@]}" "${mtd[@]}" --json-out "$out/tp-multiturn-defaults.json"
  run tp-multiturn-defaults-paged 100 "$bin" bench throughput "${dummy[@]}" "${mtd[@]}" --kv paged --json-out "$out/tp-multiturn-defaults-paged.json"
elif [ "$quick" = sharedprefix ]; then
  # Shared prefixes with requests held back while another computes their prefix; multi-turn again.
  run tp-sharedprefix 100 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/tp-sharedprefix.json"
  run tp-sharedprefix-nocache 100 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --no-prefix-cache --json-out "$out/tp-sharedprefix-nocache.json"
  run tp-multiturn 100 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --json-out "$out/tp-multiturn.json"
elif [ "$quick" = lpm ]; then
  for policy in fcfs lpm; do
    run tp-multiturn-$policy 100 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --schedule-policy $policy --json-out "$out/tp-multiturn-$policy.json"
    run tp-sharedprefix-$policy 100 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --schedule-policy $policy --json-out "$out/tp-sharedprefix-$policy.json"
    run tp-multiturn-8g-$policy 100 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --kv-budget-mib 8192 --schedule-policy $policy --json-out "$out/tp-multiturn-8g-$policy.json"
    run tp-sharedprefix-8g-$policy 100 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv-budget-mib 8192 --schedule-policy $policy --json-out "$out/tp-sharedprefix-8g-$policy.json"
  done
elif [ "$quick" = workloads ]; then
  # The prefix cache's workloads, cache on and off, virtual tensors and paged (no cache there).
  run tp-multiturn 120 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --json-out "$out/tp-multiturn.json"
  run tp-multiturn-nocache 120 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --no-prefix-cache --json-out "$out/tp-multiturn-nocache.json"
  run tp-sharedprefix 120 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/tp-sharedprefix.json"
  run tp-sharedprefix-nocache 120 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --no-prefix-cache --json-out "$out/tp-sharedprefix-nocache.json"
  run tp-multiturn-paged 120 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --kv paged --json-out "$out/tp-multiturn-paged.json"
  run tp-sharedprefix-paged 120 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --json-out "$out/tp-sharedprefix-paged.json"
elif [ "$quick" = final ]; then
  # The service defaults (CUDA graphs on) on the issue's workloads, both KV modes, and the
  # longest-output-first admission order at several seat counts.
  sg=(--dataset sharegpt --num-prompts 1000)
  rnd=(--dataset random --input-len 128-1024 --output-len 128-512 --num-prompts 1000)
  run tp-sharegpt 120 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --json-out "$out/tp-sharegpt.json"
  run tp-sharegpt-paged 120 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --kv paged --json-out "$out/tp-sharegpt-paged.json"
  for n in 128 160 192; do
    run tp-sharegpt-lof$n 120 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --schedule-policy lof --max-num-seqs $n --json-out "$out/tp-sharegpt-lof$n.json"
  done
  run tp-sharegpt-lof128-paged 120 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --schedule-policy lof --max-num-seqs 128 --kv paged \
    --json-out "$out/tp-sharegpt-lof128-paged.json"
  run tp-1000 150 "$bin" bench throughput "${dummy[@]}" "${rnd[@]}" --json-out "$out/tp-1000.json"
  run tp-1000-paged 150 "$bin" bench throughput "${dummy[@]}" "${rnd[@]}" --kv paged --json-out "$out/tp-1000-paged.json"
elif [ "$quick" = table ]; then
  run dev-model 200 "$bin" dev model --json-out "$out/dev-model.json"
  PYTHONUNBUFFERED=1 run train 150 python3 scripts/reference/train_tiny.py /tmp/tiny --steps 600
  run dev-engine-trained 150 "$bin" dev engine --backend cuda --model /tmp/tiny --prompts /tmp/tiny/prompts.json
  w256=(--dataset random --input-len 128-1024 --output-len 128 --num-prompts 256)
  run tp-256x128-shared 100 "$bin" bench throughput "${dummy[@]}" "${w256[@]}" --json-out "$out/tp-256x128-shared.json"
  run tp-256x128-per-layer 100 "$bin" bench throughput "${dummy[@]}" "${w256[@]}" --decode-table per-layer --json-out "$out/tp-256x128-per-layer.json"
  run tp-256x128-paged 100 "$bin" bench throughput "${dummy[@]}" "${w256[@]}" --kv paged --json-out "$out/tp-256x128-paged.json"
  run tp-sharegpt-shared 120 "$bin" bench throughput "${dummy[@]}" --dataset sharegpt --num-prompts 1000 --json-out "$out/tp-sharegpt-shared.json"
elif [ "$quick" = ab ]; then
  PYTHONUNBUFFERED=1 run train 150 python3 scripts/reference/train_tiny.py /tmp/tiny --steps 600
  run dev-engine-trained-paged 150 "$bin" dev engine --backend cuda --model /tmp/tiny --prompts /tmp/tiny/prompts.json --kv paged
  w256=(--dataset random --input-len 128-1024 --output-len 128 --num-prompts 256)
  run tp-256x128-on 100 "$bin" bench throughput "${dummy[@]}" "${w256[@]}" --json-out "$out/tp-256x128-on.json"
  run tp-256x128-paged 100 "$bin" bench throughput "${dummy[@]}" "${w256[@]}" --kv paged --json-out "$out/tp-256x128-paged.json"
  PYTHONUNBUFFERED=1 run transformers-256x128 200 python3 scripts/reference/transformers_throughput.py --num-prompts 256 --input-len 128-1024 \
    --output-len 128 --json-out "$out/transformers-256x128.json"
  for n in 512 1024; do
    run tp-sharegpt-$n 120 "$bin" bench throughput "${dummy[@]}" --dataset sharegpt --num-prompts 1000 --max-num-seqs $n --json-out "$out/tp-sharegpt-$n.json"
  done
  run tp-1000-512 150 "$bin" bench throughput "${dummy[@]}" --dataset random --input-len 128-1024 --output-len 128-512 --num-prompts 1000 \
    --max-num-seqs 512 --json-out "$out/tp-1000-512.json"
  run tp-1000-512-paged 150 "$bin" bench throughput "${dummy[@]}" --dataset random --input-len 128-1024 --output-len 128-512 --num-prompts 1000 \
    --max-num-seqs 512 --kv paged --json-out "$out/tp-1000-512-paged.json"
elif [ "$quick" = prefetch ]; then
  run tp-1000 300 "$bin" bench throughput "${dummy[@]}" --dataset random --input-len 128-1024 --output-len 128-512 --num-prompts 1000 --json-out "$out/tp-1000.json"
  run tp-1000-no-prefetch 300 "$bin" bench throughput "${dummy[@]}" --dataset random --input-len 128-1024 --output-len 128-512 --num-prompts 1000 \
    --prefetch-admissions off --json-out "$out/tp-1000-no-prefetch.json"
  run tp-sharegpt 300 "$bin" bench throughput "${dummy[@]}" --dataset sharegpt --num-prompts 1000 --json-out "$out/tp-sharegpt.json"
elif [ "$quick" = seqs ]; then
  run bench-vmm 180 "$bin" bench vmm --backend cuda --json-out "$out/bench-vmm.json"
  run tp-sharegpt-256 300 "$bin" bench throughput "${dummy[@]}" --dataset sharegpt --num-prompts 1000 --json-out "$out/tp-sharegpt-256.json"
  for n in 512 1024; do
    run tp-sharegpt-$n 300 "$bin" bench throughput "${dummy[@]}" --dataset sharegpt --num-prompts 1000 --max-num-seqs $n --json-out "$out/tp-sharegpt-$n.json"
    run tp-1000-$n 300 "$bin" bench throughput "${dummy[@]}" --dataset random --input-len 128-1024 --output-len 128-512 --num-prompts 1000 \
      --max-num-seqs $n --json-out "$out/tp-1000-$n.json"
  done
elif [ "$quick" = quick ]; then
  run tp-small 240 "$bin" bench throughput "${dummy[@]}" --dataset random --input-len 128-1024 --output-len 32 --num-prompts 64 --json-out "$out/tp-small.json"
else
  run tp-256x128 300 "$bin" bench throughput "${dummy[@]}" --dataset random --input-len 128-1024 --output-len 128 --num-prompts 256 --json-out "$out/tp-256x128.json"
  run tp-1000 400 "$bin" bench throughput "${dummy[@]}" --dataset random --input-len 128-1024 --output-len 128-512 --num-prompts 1000 --json-out "$out/tp-1000.json"
  run tp-sharegpt 400 "$bin" bench throughput "${dummy[@]}" --dataset sharegpt --num-prompts 1000 --json-out "$out/tp-sharegpt.json"
  run tp-1000-prefill-attn 400 "$bin" bench throughput "${dummy[@]}" --dataset random --input-len 128-1024 --output-len 128-512 --num-prompts 1000 \
    --mixed-attention prefill --json-out "$out/tp-1000-prefill-attn.json"
  run dev-model 400 "$bin" dev model --json-out "$out/dev-model.json"
  PYTHONUNBUFFERED=1 run transformers-256x128 400 python3 scripts/reference/transformers_throughput.py --num-prompts 256 --input-len 128-1024 \
    --output-len 128 --json-out "$out/transformers-256x128.json"
fi

{
  echo "== return codes"; cat "$out/rcs.txt"
  [ -f "$out/dev-engine.txt" ] && { echo "== dev engine"; tail -12 "$out/dev-engine.txt"; }
  [ -f "$out/dev-engine-paged.txt" ] && { echo "== dev engine, paged KV"; grep -E "requests|batched|exact|teacher|divergence|result|rror" "$out/dev-engine-paged.txt"; }
  [ -f "$out/dev-engine-trained-paged.txt" ] && { echo "== dev engine, trained model, paged KV"; grep -E "requests|batched|exact|teacher|divergence|result|rror" "$out/dev-engine-trained-paged.txt"; }
  [ -f "$out/dev-engine-trained.txt" ] && { echo "== dev engine, trained model"; grep -E "batched|exact|teacher|result|rror" "$out/dev-engine-trained.txt"; }
  if [ "$quick" = table ]; then
    python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
for name in ["256x128-shared", "256x128-per-layer", "256x128-paged", "sharegpt-shared"]:
    f = os.path.join(out, f"tp-{name}.json")
    if not os.path.exists(f): print(name, "missing"); continue
    r = json.load(open(f))
    print(f"{name:20} out {r['output_tokens_per_second']:8.1f} tok/s  {r['seconds']:6.2f} s  decode-only {r.get('decode_step_mean_ms') or 0:6.2f} ms  "
          f"GPU span {r.get('gpu_span_ms_per_step') or 0:6.2f}  busy {100*(r.get('gpu_busy_share') or 0):5.1f}%  plan {r.get('model_plan_ms_per_step') or 0:.2f}  "
          f"queue {r.get('model_launch_ms_per_step') or 0:.2f}  host {r['engine_host_ms_per_step']:.2f} ms  KV {r['kv_mode']} peak {r['kv_peak_created_bytes']/2**30:.1f} GiB")
PY
  fi
  [ -f "$out/dev-engine-graphs.txt" ] && { echo "== dev engine, CUDA graphs, random model"; grep -E "requests|batched|CUDA|exact|teacher|result|rror" "$out/dev-engine-graphs.txt"; }
  for f in dev-engine-trained-graphs dev-engine-trained-graphs-paged dev-engine-prefix dev-engine-prefix-paged; do
    [ -f "$out/$f.txt" ] && { echo "== $f"; grep -E "batched|CUDA|prefix|exact|teacher|divergence|result|rror" "$out/$f.txt"; }
  done
  if [ "$quick" = graphs ] || [ "$quick" = final ]; then
    python3 - "$out" "$quick" <<'PY'
import json, os, sys
out = sys.argv[1]
names = ["sharegpt-gon", "sharegpt-goff", "b8-gon", "b8-goff", "b64-gon", "b64-goff", "sharegpt-lof", "sharegpt-lof128", "sharegpt-fcfs192"]
if sys.argv[2] == "final":
    names = ["sharegpt", "sharegpt-paged", "sharegpt-lof128", "sharegpt-lof160", "sharegpt-lof192", "sharegpt-lof128-paged", "1000", "1000-paged"]
print("run                tok/s     steps  step ms  decode ms  GPU span  idle gap  busy%   graphs (replayed/captured/direct)  KV peak GiB")
for name in names:
    f = os.path.join(out, f"tp-{name}.json")
    if not os.path.exists(f): print(f"{name:18} missing"); continue
    r = json.load(open(f)); g = r.get("gpu_step_totals") or {}
    print(f"{name:18} {r['output_tokens_per_second']:8.1f} {r['steps']:6d} {r['step_mean_ms']:8.3f} {r.get('decode_step_mean_ms') or 0:9.3f} "
          f"{r.get('gpu_span_ms_per_step') or 0:9.3f} {r.get('gpu_idle_gap_ms_per_step') or 0:9.3f} {100*(r.get('gpu_busy_share') or 0):6.1f}   "
          f"{g.get('graph_replays',0)}/{g.get('graph_captures',0)}/{g.get('graph_direct',0)}   {r['kv_mode']} {r['kv_peak_created_bytes']/2**30:.1f}")
PY
  fi
  if [ "$quick" = workloads ] || [ "$quick" = sharedprefix ] || [ "$quick" = lpm ] || [ "$quick" = alias ] || [ "$quick" = prefixab ] || [ "$quick" = publish ]; then
    python3 - "$out" "$quick" <<'PY'
import json, os, sys
out = sys.argv[1]
print("run                       tok/s out  total    s     reqs  hit rate  prompt computed  TTFT p50 (first / later rounds)  KV peak GiB  GPU free GiB before/lowest/after of total")
names = ["multiturn", "multiturn-nocache", "multiturn-paged", "sharedprefix", "sharedprefix-nocache", "sharedprefix-paged"]
if any(os.path.exists(os.path.join(out, f"tp-{w}-fcfs.json")) for w in ["multiturn"]):
    names = [f"{w}-{p}" for w in ["multiturn", "sharedprefix", "multiturn-8g", "sharedprefix-8g"] for p in ["fcfs", "lpm"]]
if sys.argv[2] == "prefixab":
    names = ["multiturn-defaults", "multiturn-defaults-nocache", "multiturn-defaults-paged", "sharedprefix", "sharedprefix-nocache",
             "sharedprefix-paged", "sharedprefix-paged-nocache", "multiturn", "multiturn-nocache", "multiturn-paged"]
if sys.argv[2] == "publish":
    names = ["sharedprefix", "sharedprefix-paged", "sharedprefix-nocache", "multiturn-defaults", "multiturn-defaults-paged"]
if sys.argv[2] == "alias":
    names = ["multiturn", "multiturn-nocache", "multiturn-paged", "multiturn-2048", "multiturn-2048-nocache",
             "multiturn-defaults", "multiturn-defaults-nocache", "sharedprefix", "sharedprefix-nocache"]
for name in names:
    f = os.path.join(out, f"tp-{name}.json")
    if not os.path.exists(f): print(f"{name:24} missing"); continue
    r = json.load(open(f)); st = r["statistics"]
    a, b = r.get("first_token_p50_first_round_seconds"), r.get("first_token_p50_later_rounds_seconds")
    ttft = f"{a*1000:8.1f} / {b*1000:8.1f} ms" if a is not None else f"p50 {r['first_token_p50_seconds']*1000:8.1f} ms"
    print(f"{name:24} {r['output_tokens_per_second']:9.1f} {r['total_tokens_per_second']:9.1f} {r['seconds']:6.2f} {r['requests']:5d} {100*r['prefix_cache_hit_rate']:7.1f}%  "
          f"{st['prompt_tokens_computed']:9d}   {ttft}   {r['kv_mode']} {r['kv_peak_created_bytes']/2**30:.1f}   "
          + ("/".join(f"{(r.get(k) or 0)/2**30:.1f}" for k in ["device_free_before_bytes", "device_free_lowest_bytes", "device_free_after_trim_bytes", "device_total_bytes"])))
print("run                       steps  step ms  GPU idle gap ms  busy%  host ms  mapping waits blocked/all (ms)  TTFT by round p50/mean (queue p50) ms")
for name in names:
    f = os.path.join(out, f"tp-{name}.json")
    if not os.path.exists(f): continue
    r = json.load(open(f)); st = r["statistics"]
    rounds = ""
    if r.get("first_token_p50_by_round_seconds"):
        rounds = " ".join(f"{a*1000:.0f}/{b*1000:.0f}({q*1000:.0f})" for a, b, q in zip(r["first_token_p50_by_round_seconds"], r["first_token_mean_by_round_seconds"], r["queue_p50_by_round_seconds"]))
    print(f"{name:24} {r['steps']:6d} {r['step_mean_ms']:8.2f} {r.get('gpu_idle_gap_ms_per_step') or 0:10.3f} {100*(r.get('gpu_busy_share') or 0):9.1f} {r['engine_host_ms_per_step']:7.3f}  "
          f"{st['blocked_mapping_waits']}/{st['mapping_waits']} ({r['mapping_wait_ms_total']:.0f})  takeovers {r.get('prefix_takeovers') or 0}  "
          f"committed peak {r['kv_peak_committed_bytes']/2**30:.1f} GiB  {rounds}")
PY
  fi
  if [ "$quick" = pipeline ]; then
    python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
print("== pipelined (on) vs one step at a time (off)")
print("run            pipe  tok/s     steps  step ms  GPU span ms  idle gap ms  busy%  queued ahead  plan/queue/wait ms   host ms")
for name in ["b64", "b256", "sharegpt", "1000"]:
    for p in ["on", "off", "paged"]:
        f = os.path.join(out, f"tp-{name}-{p}.json")
        if not os.path.exists(f):
            if p != "paged" or name in ("sharegpt", "1000"): print(f"{name:14} {p:5}  missing")
            continue
        r = json.load(open(f)); st = r["statistics"]
        print(f"{name:14} {p:4}  {r['output_tokens_per_second']:8.1f} {r['steps']:6d} {r['step_mean_ms']:8.3f} {r.get('gpu_span_ms_per_step') or 0:11.3f} "
              f"{r.get('gpu_idle_gap_ms_per_step') or 0:11.3f} {100*(r.get('gpu_busy_share') or 0):6.1f} {r.get('queued_ahead_share') or 0:12.3f}  "
              f"{r.get('model_plan_ms_per_step') or 0:.2f}/{r.get('model_launch_ms_per_step') or 0:.2f}/{r.get('model_wait_ms_per_step') or 0:.2f}  {r['engine_host_ms_per_step']:8.3f}"
              f"  KV {r.get('kv_mode','?')} peak {r['kv_peak_created_bytes']/2**30:.1f} GiB, end {r['kv_held_after_trim_bytes']/2**30:.2f} GiB, preempt {st['preemptions']}, disc {st.get('discarded_rows',0)}")
PY
  fi
  [ -f "$out/bench-vmm.txt" ] && { echo "== bench vmm: mapper"; grep -E "mappings/s|latency p50" "$out/bench-vmm.txt"; }
  [ -f "$out/dev-model.txt" ] && { echo "== dev model"; grep -cE "^PASS" "$out/dev-model.txt"; grep -E "FAIL|mixed" "$out/dev-model.txt" | head -20; }
  for f in tp-sharegpt-nocache tp-256x128-on tp-256x128-paged tp-1000-512-paged tp-small tp-256x128 tp-1000 tp-1000-no-prefetch tp-1000-prefill-attn tp-sharegpt tp-sharegpt-256 tp-sharegpt-512 tp-1000-512 tp-sharegpt-1024 tp-1000-1024; do
    [ -f "$out/$f.txt" ] && { echo "== bench throughput $f"; grep -vE "^---" "$out/$f.txt" | tail -12; }
  done
  [ -f "$out/transformers-256x128.txt" ] && { echo "== transformers generate_batch"; tail -20 "$out/transformers-256x128.txt"; }
} >> "$out/summary.txt"
cat "$out/summary.txt"
