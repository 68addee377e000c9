#!/usr/bin/env bash
# Runs on the GPU machine: fresh slabs (issue 12), checked and timed in one call. The chunks a
# step's new tokens fill whole map as slabs of up to 32 chunks (one cuMemCreate'd allocation, one
# cuMemMap, one cuMemSetAccess) instead of one allocation a chunk (--fresh-slab-chunks, default
# 32 on CUDA; 0 turns it off). Every arm in the same call, alternated:
#   1. bench throughput, dummy Llama-3-8B, --fresh-slab-chunks 0 against the default, then paged:
#      multi-turn with a 2,048-token system prompt every conversation shares (128 conversations,
#      the 0.94x-of-paged case of 2026-12-05), twice; the issue's multi-turn; shared prefix 16 x 16;
#      ShareGPT (1,000 length pairs).
#   2. dev engine, random model, 24 prompts on 1,200-token stems, batched with the prefix cache
#      against each alone (the alone runs map a chunk an allocation): fresh slabs on and off.
#   3. dev decode, timings only: 256 x 2,304-token decode with nothing shared against groups of 16
#      sharing 2,048 tokens as one physical copy (aliased chunks; paged: the same pages), to see
#      whether the L2 serves a shared prefix once per group (docs/perf.md, 2026-12-05, fifth session).
# Predicted (binary b5d6ea8 or later, which no longer waits on the engine thread to alias a next
# round's head): mts at 0.99-1.00x paged with engine host under 4 ms a step (was ~22) and an idle
# gap under 0.2 ms; mt and sg 1.00x; sp at 0.97-1.00x with 0 chunks copied.
# Usage: [RUN_DEADLINE=560] scripts/gpu-fresh-slabs.sh [OUTDIR]   (carry gpu-pack, gpu-kcache)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary

mts=(--dataset multi-turn --num-conversations 128 --rounds 5 --user-len 512 --answer-len 64 --max-in-flight 128 --conversation-system-len 2048)
mtd=(--dataset multi-turn --num-conversations 256 --rounds 5 --user-len 512 --answer-len 64 --max-in-flight 128)
sp=(--dataset shared-prefix --groups 16 --prompts-per-group 16 --system-len 2048 --question-len 128 --output-len 64)
sg=(--dataset sharegpt --num-prompts 1000)

python3 - <<'PY'
import json, random
random.seed(5)
stems = [[random.randrange(4, 4096) for _ in range(1200)] for _ in range(4)]
prompts = [stems[k % 4] + [random.randrange(4, 4096) for _ in range(random.randint(10, 200))] for k in range(24)]
json.dump(prompts, open("/tmp/shared-prompts.json", "w"))
PY

run mts-f0 90 "$bin" bench throughput "${dummy[@]}" "${mts[@]}" --fresh-slab-chunks 0 --json-out "$out/mts-f0.json"
run mts-f32 90 "$bin" bench throughput "${dummy[@]}" "${mts[@]}" --json-out "$out/mts-f32.json"
run mts-paged 90 "$bin" bench throughput "${dummy[@]}" "${mts[@]}" --kv paged --json-out "$out/mts-paged.json"
run sp-f0 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --fresh-slab-chunks 0 --json-out "$out/sp-f0.json"
run sp-f32 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/sp-f32.json"
run sp-paged 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --json-out "$out/sp-paged.json"
run dev-engine-f32 150 "$bin" dev engine --backend cuda --prompts /tmp/shared-prompts.json --max-num-seqs 8 --kv-chunks 96 --pack-prefix-chunks 2
run dev-engine-f0 150 "$bin" dev engine --backend cuda --prompts /tmp/shared-prompts.json --max-num-seqs 8 --kv-chunks 96 --pack-prefix-chunks 2 --fresh-slab-chunks 0
run mt-f0 100 "$bin" bench throughput "${dummy[@]}" "${mtd[@]}" --fresh-slab-chunks 0 --json-out "$out/mt-f0.json"
run mt-f32 100 "$bin" bench throughput "${dummy[@]}" "${mtd[@]}" --json-out "$out/mt-f32.json"
run mt-paged 100 "$bin" bench throughput "${dummy[@]}" "${mtd[@]}" --kv paged --json-out "$out/mt-paged.json"
run sg-f0 90 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --fresh-slab-chunks 0 --json-out "$out/sg-f0.json"
run sg-f32 90 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --json-out "$out/sg-f32.json"
run sg-paged 90 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --kv paged --json-out "$out/sg-paged.json"
run mts-f32-2 90 "$bin" bench throughput "${dummy[@]}" "${mts[@]}" --json-out "$out/mts-f32-2.json"
run mts-f0-2 90 "$bin" bench throughput "${dummy[@]}" "${mts[@]}" --fresh-slab-chunks 0 --json-out "$out/mts-f0-2.json"
run shared-decode 150 "$bin" dev decode --skip-checks --filter "x 2304" --reps 20
save_kernel_cache "$out/kernel-cache.tgz"

runs="mts-f0 mts-f32 mts-f0-2 mts-f32-2 mts-paged mt-f0 mt-f32 mt-paged sp-f0 sp-f32 sp-paged sg-f0 sg-f32 sg-paged"
python3 - "$out" "$runs" <<'PY' >> "$out/summary.txt"
import json, os, sys
out, runs = sys.argv[1], sys.argv[2].split()
def load(name):
    try: return json.load(open(os.path.join(out, name + ".json")))
    except Exception: return None
print("== throughput (dummy Llama-3-8B)")
print(f"{'run':10} {'out tok/s':>9} {'vs paged':>8} {'hit':>6} {'step ms':>8} {'host ms':>8} {'idle ms':>8} {'map wait ms':>11} {'KV peak GiB':>11}")
for name in runs:
    r = load(name)
    if not r: print(f"{name:10} missing"); continue
    p = load(name.split("-")[0] + "-paged")
    ratio = f"{r['output_tokens_per_second'] / p['output_tokens_per_second']:8.3f}" if p else f"{'':8}"
    print(f"{name:10} {r['output_tokens_per_second']:9.0f} {ratio} {100*r['prefix_cache_hit_rate']:5.1f}% {r['step_mean_ms']:8.2f} "
          f"{r['engine_host_ms_per_step']:8.2f} {r.get('gpu_idle_gap_ms_per_step') or 0:8.2f} {r['mapping_wait_ms_total']:11.0f} {r['kv_peak_created_bytes']/2**30:11.1f}")
PY
{ for f in dev-engine-f32 dev-engine-f0; do [ -f "$out/$f.txt" ] && { echo "== $f"; grep -E "teacher-forced|^result|prefix cache" "$out/$f.txt"; }; done
  for f in mts-f0 mts-f32 mt-f32 sp-f32 sg-f32; do [ -f "$out/$f.txt" ] && { echo "== $f"; grep -E "prefix cache|first token" "$out/$f.txt"; }; done
  [ -f "$out/shared-decode.txt" ] && { echo "== shared-decode"; grep -E "read ceiling|2304" "$out/shared-decode.txt"; }
  echo "== rcs"; cat "$out/rcs.txt"; } >> "$out/summary.txt"
(cd "$out" && tar czf /tmp/fresh-details.tgz --exclude=summary.txt --exclude=kernel-cache.tgz --exclude='*.json' . 2>/dev/null \
  && find . -mindepth 1 -name '*.txt' ! -name summary.txt -delete && mv /tmp/fresh-details.tgz details.tgz)
cat "$out/summary.txt"
