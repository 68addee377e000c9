#!/usr/bin/env bash
# Runs on the GPU machine: issue 14's end-to-end serving comparison. One card, one call, the same
# random Llama-3-8B (built by transformers, scripts/reference/build_served_model.py) for every
# system, each driven by `vtensor bench serve` over HTTP:
#   vtensor   `vtensor serve` with virtual tensors and the prefix cache (the defaults)
#   nocache   the same with --no-prefix-cache
#   paged     the same with --kv paged (16-token pages, block tables, budget reserved up front)
#   vtensor-prefetch3  vtensor with --prefetch-steps 3 (a burst's prompts mapped three steps ahead)
#   vtensor-runs  vtensor with --access-per-run on --unmap-per-run on (driver calls per run of chunks)
#   vtensor-noprefetch, vtensor-noalias  vtensor with no prefetched admissions (--prefetch-steps 0),
#                 with no cached prefixes aliased ahead (--alias-ahead-chunks 0)
#   vtensor-sized, nocache-sized  vtensor and nocache with steps sized to the work waiting
#                 (--step-overhead-tokens 512)
#   vtensor-packed  vtensor with published prefixes packed into slabs (--pack-prefix-chunks 32:
#                 each request aliasing a shared system prompt maps it with one driver call)
#   VTENSOR_FLAGS="..." adds flags to every vtensor server (vtensor, nocache, paged and the variants)
#   hf        `transformers serve --continuous-batching` (needs the carried web wheels)
# Usage: SYSTEMS="vtensor nocache paged hf" WORKLOADS="random sharegpt shared-prefix multi-turn sweep" \
#          [WORKLOADS_paged="sharegpt ..."] SCALE=1 [HF_SCALE=0.1] [MULTI_TURN_SCALE=1] [BENCH_TIMEOUT=300] [DEADLINE=S] [OPENAI_CHECK=1] scripts/gpu-serve-compare.sh [OUTDIR]
#   (carry gpu-pack, .whl (scripts/fetch-gpu-wheels.sh: the openai client and transformers serve's web
#   packages), and gpu-tok (tokenizer.json.gz, sharegpt-4000.json.gz) or gpu-assets; SCALE < 1 shrinks
#   every workload for a quick run; HF_SCALE shrinks transformers serve's, which runs some 12x slower:
#   its request counts are in its JSON and the table shows them; WORKLOADS_<system> replaces
#   WORKLOADS for one system, its hyphens written as underscores)
# transformers serve refuses fields it does not know (422), so it gets no ignore_eos: its requests
# may end early at an end-of-sequence token, and the table shows each system's mean output length.
# It takes prompts only as strings, so every system gets text prompts cut to exact lengths (but
# for multi-turn on our servers: MULTI_TURN_FORM, below).
# Writes OUTDIR/SYSTEM-WORKLOAD.json (vLLM's keys), OUTDIR/SYSTEM-server.log, GPU memory samples
# while each system serves, and a table last.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary
script_start=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || { echo "wheels did not install" | tee -a "$out/summary.txt"; exit 1; }

systems=${SYSTEMS:-vtensor nocache paged hf}
workloads=${WORKLOADS:-random sharegpt shared-prefix multi-turn}
scale=${SCALE:-1}
shape=${SHAPE:-llama-3-8b}
model=/tmp/served-$shape
assets=gpu-assets
[ -f gpu-tok/tokenizer.json.gz ] && { gunzip -c gpu-tok/tokenizer.json.gz > /tmp/tokenizer.json; assets=gpu-tok; }
tokenizer=gpu-assets/tokenizer.json; [ $assets = gpu-tok ] && tokenizer=/tmp/tokenizer.json
if [ ! -f "$model/config.json" ]; then
  python3 scripts/reference/build_served_model.py "$model" --tokenizer "$tokenizer" --shape "$shape" \
    > "$out/build-model.txt" 2>&1 || { tail -20 "$out/build-model.txt"; exit 1; }
fi
[ -f /tmp/sharegpt.json ] || gunzip -c $assets/sharegpt-4000.json.gz > /tmp/sharegpt.json
# transformers serve lists models from the Hugging Face cache, which this machine does not have.
export HF_HUB_CACHE=/tmp/hf-cache && mkdir -p $HF_HUB_CACHE
n() { python3 -c "import math; print(max(1, math.ceil($1 * ${2:-$scale})))"; }  # n COUNT [SCALE]
system_scale=$scale

port=8124
base=http://127.0.0.1:$port
pid=
start_server() {
  local system=$1
  # The port must be free: a server that is still up would answer for the next one.
  if curl -sf "$base/health" > /dev/null; then echo "$system: port $port still answers" | tee -a "$out/summary.txt"; return 1; fi
  # `exec`, so $! is the server itself and stop_server's signal reaches it.
  (case $system in
    vtensor) exec "$bin" serve --model "$model" --backend cuda --port $port --served-model-name served ${VTENSOR_FLAGS:-} ;;
    vtensor-prefetch3) exec "$bin" serve --model "$model" --backend cuda --port $port --served-model-name served --prefetch-steps 3 ${VTENSOR_FLAGS:-} ;;
    vtensor-runs) exec "$bin" serve --model "$model" --backend cuda --port $port --served-model-name served --access-per-run on --unmap-per-run on ${VTENSOR_FLAGS:-} ;;
    nocache) exec "$bin" serve --model "$model" --backend cuda --port $port --served-model-name served --no-prefix-cache ${VTENSOR_FLAGS:-} ;;
    vtensor-noprefetch) exec "$bin" serve --model "$model" --backend cuda --port $port --served-model-name served --prefetch-steps 0 ${VTENSOR_FLAGS:-} ;;
    vtensor-noalias) exec "$bin" serve --model "$model" --backend cuda --port $port --served-model-name served --alias-ahead-chunks 0 ${VTENSOR_FLAGS:-} ;;
    vtensor-packed) exec "$bin" serve --model "$model" --backend cuda --port $port --served-model-name served --pack-prefix-chunks 32 ${VTENSOR_FLAGS:-} ;;
    vtensor-sized) exec "$bin" serve --model "$model" --backend cuda --port $port --served-model-name served --step-overhead-tokens 512 ${VTENSOR_FLAGS:-} ;;
    nocache-sized) exec "$bin" serve --model "$model" --backend cuda --port $port --served-model-name served --no-prefix-cache --step-overhead-tokens 512 ${VTENSOR_FLAGS:-} ;;
    paged)   exec "$bin" serve --model "$model" --backend cuda --port $port --served-model-name served --kv paged ${VTENSOR_FLAGS:-} ;;
    hf)      exec transformers serve "$model" --host 127.0.0.1 --port $port --continuous-batching ${HF_FLAGS:-} ;;
  esac) > "$out/$system-server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    curl -sf "$base/health" > /dev/null && return 0
    kill -0 $pid 2>/dev/null || break
    sleep 0.5
  done
  echo "$system: server did not come up" | tee -a "$out/summary.txt"; tail -20 "$out/$system-server.log"
  stop_server
  return 1
}
stop_server() { kill -TERM $pid 2>/dev/null; for _ in $(seq 1 60); do kill -0 $pid 2>/dev/null || break; sleep 0.5; done; kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null; }

# GPU memory in use, sampled every half second while a system serves (MiB; the peak is reported).
sample_memory() {
  while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.5; done > "$out/$1-memory.txt" 2>/dev/null &
  sampler=$!
}

bench() {  # bench SYSTEM WORKLOAD extra flags...
  local system=$1 workload=$2; shift 2
  local model_name=served args=()
  [ "$system" = hf ] && model_name=$model
  for a in "$@"; do [ "$system" = hf ] && [ "$a" = --ignore-eos ] && continue; args+=("$a"); done
  # Multi-turn on our servers goes as token ids with each answer's own ids (return_token_ids):
  # the random model's answers re-encoded from text are mostly other ids (random 64-id runs
  # decoded and re-encoded: 2 of 20 came back the same with SmolLM2's tokenizer), which no prefix
  # cache could hold. MULTI_TURN_FORM=text: as text.
  local form=--text-prompts
  [ "$workload" = multi-turn ] && [ "$system" != hf ] && [ "${MULTI_TURN_FORM:-ids}" = ids ] && form=
  set -- "${args[@]}"
  # Every run (every sweep rate) starts with an empty prefix cache: the sweep repeats its prompts.
  local reset=--reset-prefix-cache; [ "$system" = hf ] && reset=
  timeout ${BENCH_TIMEOUT:-300} "$bin" bench serve --base-url "$base" --model "$model_name" --tokenizer "$model" --seed 1 --label "$system" --no-progress $form $reset \
    --json-out "$out/$system-$workload.json" "$@" > "$out/$system-$workload.txt" 2>&1
  echo "$system $workload: rc=$? $(grep -m1 -i "output token throughput\|output tok/s" "$out/$system-$workload.txt")" | tee -a "$out/summary.txt"
}

# One short request first, so no system's first workload pays for its warm-up (graphs, allocator).
warm_up() {
  local model_name=served; [ "$1" = hf ] && model_name=$model
  curl -s -m 300 "$base/v1/completions" -H "Content-Type: application/json" \
    -d "{\"model\": \"$model_name\", \"prompt\": \"Hello there\", \"max_tokens\": 16, \"temperature\": 0}" > "$out/$1-warmup.json"
}

for system in $systems; do
  t0=$(date +%s)
  # DEADLINE=S: start no further system S seconds into the call, so the table still gets printed.
  if [ -n "${DEADLINE:-}" ] && [ $(( t0 - script_start )) -gt "$DEADLINE" ]; then
    echo "$system: not run, $(( t0 - script_start )) s into the call (DEADLINE=$DEADLINE)" | tee -a "$out/summary.txt"; continue
  fi
  system_scale=$scale; [ "$system" = hf ] && system_scale=${HF_SCALE:-$scale}
  start_server $system || continue
  echo "$system: up in $(( $(date +%s) - t0 )) s" | tee -a "$out/summary.txt"
  warm_up $system
  if [ "$system" = vtensor ] && [ -n "${OPENAI_CHECK:-}" ]; then  # the openai client checks too, while it is up
    python3 Tests/ServerTests/openai_client_check.py "$base/v1" served --near-ties > "$out/openai-client.txt" 2>&1
    echo "openai client checks: rc=$? $(tail -1 "$out/openai-client.txt")" | tee -a "$out/summary.txt"
    grep -E "^(FAIL|note:)|AssertionError" "$out/openai-client.txt" | tee -a "$out/summary.txt"
  fi
  sample_memory $system
  # WORKLOADS_<system>, with the system's hyphens as underscores (WORKLOADS_vtensor_sized).
  eval "system_workloads=\${WORKLOADS_${system//-/_}:-\$workloads}"
  for workload in $system_workloads; do
    case $workload in
      random) bench $system random --dataset random --num-prompts $(n 1000 $system_scale) --random-input-len 576 --random-range-ratio 0.7777 \
                --random-output-len 320 --random-output-range-ratio 0.6 --ignore-eos --request-rate inf ;;
      sharegpt) bench $system sharegpt --dataset sharegpt --dataset-path /tmp/sharegpt.json --num-prompts $(n 1000 $system_scale) --request-rate inf ;;
      shared-prefix) bench $system shared-prefix --dataset shared-prefix --groups $(n 32 $system_scale) --prompts-per-group 16 --system-len 2048 \
                       --question-len 128 --output-len 256 --ignore-eos --request-rate inf ;;
      # Issue 12's defaults (256 conversations of 5 rounds, 512-token turns, 64-token answers, 128 in flight).
      multi-turn) bench $system multi-turn --dataset multi-turn --num-conversations $(n 256 ${MULTI_TURN_SCALE:-$system_scale}) --rounds 5 --user-len 512 --answer-len 64 \
                    --max-in-flight 128 --ignore-eos --request-rate inf ;;
      # The chart of each system's sweep draws the sweeps of the systems before it in this call too.
      sweep) plot=(); for f in "$out"/*-sweep.json; do [ -f "$f" ] && plot+=(--plot-with "$f"); done
             bench $system sweep --dataset sharegpt --dataset-path /tmp/sharegpt.json --num-prompts $(n ${SWEEP_PROMPTS:-400} $system_scale) \
               --sweep-rates ${SWEEP_RATES:-4,8,16,32,inf} "${plot[@]}" ;;
    esac
  done
  kill $sampler 2>/dev/null
  curl -s "$base/metrics" > "$out/$system-metrics.txt" 2>/dev/null
  stop_server
done

# A server that found cached prefixes it could not reuse says why when it stops.
for f in "$out"/*-server.log; do grep -H "prefix cache:" "$f" | tail -1; done | tee -a "$out/summary.txt"

# The compiled kernels, to carry back as gpu-kcache/ next time.
save_kernel_cache /tmp/kernel-cache.tgz
# Everything but the summary and the charts travels back as one archive (few files come back).
(cd "$out" && tar czf /tmp/details.tgz --exclude=summary.txt --exclude='*.svg' . && find . -type f ! -name summary.txt ! -name '*.svg' -delete \
  && mv /tmp/details.tgz details.tgz; mv /tmp/kernel-cache.tgz . 2>/dev/null)

# The table, last: output tokens/s, request/s, TTFT and TPOT medians, peak GPU memory; ratios to vtensor.
all_workloads="$workloads"; for s in $systems; do eval "all_workloads=\"\$all_workloads \${WORKLOADS_${s//-/_}:-}\""; done
python3 - "$out" "$systems" "$all_workloads" <<'PY'
import json, os, sys
out, systems = sys.argv[1], sys.argv[2].split()
workloads = [w for w in dict.fromkeys(sys.argv[3].split()) if w != "sweep"]
import tarfile
archive = tarfile.open(os.path.join(out, "details.tgz"))
def member(name):
    try:
        return archive.extractfile("./" + name).read().decode()
    except KeyError:
        return None
def load(s, w):
    text = member(f"{s}-{w}.json")
    return json.loads(text) if text else None
def peak(s):
    vals = [int(x) for x in (member(f"{s}-memory.txt") or "").split() if x.isdigit()]
    return max(vals) if vals else 0
print(f"{'workload':<14}{'system':<14}{'reqs':>6}{'done':>6}{'fail':>5}{'out/req':>8}{'out tok/s':>11}{'req/s':>8}{'TTFT p50':>10}{'TPOT p50':>10}{'peak MiB':>10}{'x vtensor':>10}")
for w in workloads:
    base = load("vtensor", w)
    for s in systems:
        r = load(s, w)
        if not r:
            continue
        ratio = r["output_throughput"] / base["output_throughput"] if base and base.get("output_throughput") else float("nan")
        per = r.get("total_output_tokens", 0) / max(1, r["completed"])
        print(f"{w:<14}{s:<14}{r.get('num_prompts', r['completed'] + r['failed']):>6}{r['completed']:>6}{r['failed']:>5}{per:>8.0f}{r['output_throughput']:>11.0f}{r['request_throughput']:>8.2f}"
              f"{r.get('median_ttft_ms', 0):>10.1f}{r.get('median_tpot_ms', 0):>10.2f}{peak(s):>10}{ratio:>10.2f}")
# The servers' own counters over each run (bench serve reads /metrics before and after).
for w in workloads:
    for s in systems:
        r = load(s, w)
        c = (r or {}).get("server_counters")
        if not c:
            continue
        q, h = c.get("vllm:prefix_cache_queries_total", 0), c.get("vllm:prefix_cache_hits_total", 0)
        print(f"server {s:<14}{w:<14} hit {100 * h / q if q else 0:5.1f}% of {int(q)} tokens, computed {int(c.get('vtensor:prompt_tokens_computed_total', 0))}, "
              f"attach/publish/pack failures {int(c.get('vtensor:prefix_cache_attach_failures_total', 0))}/{int(c.get('vtensor:prefix_cache_publish_failures_total', 0))}/{int(c.get('vtensor:prefix_cache_pack_failures_total', 0))}, "
              f"prefetches {int(c.get('vtensor:prefetches_total', 0))} (aliased ahead {int(c.get('vtensor:prefetches_aliased_ahead_total', 0))}), "
              f"packed {int(c.get('vtensor:prefix_cache_packs_total', 0))} ({int(c.get('vtensor:prefix_cache_packed_chunks_total', 0))} chunks), "
              f"evicted {int(c.get('vtensor:prefix_cache_evicted_chunks_total', 0))} chunks, takeovers {int(c.get('vtensor:prefix_cache_takeovers_total', 0))}, "
              f"preemptions {int(c.get('vllm:num_preemptions_total', 0))}, blocked mapping waits {int(c.get('vtensor:mapping_waits_blocked_total', 0))} "
              f"of {int(c.get('vtensor:mapping_waits_total', 0))} ({1000 * c.get('vtensor:mapping_wait_seconds_total', 0):.0f} ms)")
# Issue 12's first-token target: rounds 2-5 with the cache against rounds 2-5 without it.
for s in systems:
    r = load(s, "multi-turn")
    if r and "median_ttft_ms_later_rounds" in r:
        print(f"multi-turn first token, {s}: first rounds median {r['median_ttft_ms_first_round']:.1f} ms, "
              f"later rounds median {r['median_ttft_ms_later_rounds']:.1f} ms, mean {r['mean_ttft_ms_later_rounds']:.1f} ms")
for on, off in [("vtensor", "nocache"), ("vtensor-sized", "nocache-sized")]:
    v, nc = load(on, "multi-turn"), load(off, "multi-turn")
    if v and nc and nc.get("median_ttft_ms_later_rounds"):
        print(f"multi-turn {on} / {off}: throughput {v['output_throughput'] / nc['output_throughput']:.2f}x (target 2.4x); later rounds' first token "
              f"median {v['median_ttft_ms_later_rounds'] / nc['median_ttft_ms_later_rounds']:.2f}, "
              f"mean {v['mean_ttft_ms_later_rounds'] / nc['mean_ttft_ms_later_rounds']:.2f} (target at most 0.33)")
PY
