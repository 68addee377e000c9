#!/usr/bin/env bash
# Runs on the GPU machine: driver calls per run of adjacent chunks against per chunk (the default),
# in one call: access granted once per run (`--access-per-run on`, one cuMemSetAccess over the run)
# and freed chunks unmapped once per run (`--unmap-per-run on`, where the driver takes a range over
# several mappings: the backend probes it at start).
#   1. bench vmm --only latency,access: set access and unmap per call over runs of 1, 2, 8, 32, 128
#      chunks (is the cost per call or per chunk?), whether cuMemUnmap takes several mappings in
#      one call, the mapper's rate each way, and a copy kernel's time while the mapper maps each way.
#   2. dev engine, random model, 24 prompts sharing 600-token stems, batched with the prefix cache
#      and both per run against each request alone (the correctness check: a chunk left without
#      access would fault the kernel that reads it).
#   3. bench throughput, dummy Llama-3-8B: shared prefix (16 x 16, 2048 + 128 in, 64 out: 30k
#      alias mappings and as many unmaps) per chunk / access per run / both per run, twice, paged
#      once; multi-turn (the issue's defaults) and ShareGPT 1000 per chunk and both per run.
# Usage: scripts/gpu-access-runs.sh [OUTDIR]   (carry gpu-pack, gpu-kcache)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary

sp=(--dataset shared-prefix --groups 16 --prompts-per-group 16 --system-len 2048 --question-len 128 --output-len 64)
mt=(--dataset multi-turn --num-conversations 256 --rounds 5 --user-len 512 --answer-len 64 --max-in-flight 128)
sg=(--dataset sharegpt --num-prompts 1000)

python3 - <<'PY'
import json, random
random.seed(5)
stems = [[random.randrange(4, 4096) for _ in range(600)] for _ in range(4)]
prompts = [stems[k % 4] + [random.randrange(4, 4096) for _ in range(random.randint(10, 200))] for k in range(24)]
json.dump(prompts, open("/tmp/shared-prompts.json", "w"))
PY

runs=(--access-per-run on --unmap-per-run on)

run vmm 150 "$bin" bench vmm --backend cuda --only latency,access --json-out "$out/vmm.json"
run dev-engine-run 100 "$bin" dev engine --backend cuda --prompts /tmp/shared-prompts.json --max-num-seqs 4 --kv-chunks 24 --access-per-run on
for k in 1 2; do
  run sp-chunk-$k 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/sp-chunk-$k.json"
  run sp-access-$k 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --access-per-run on --json-out "$out/sp-access-$k.json"
  run sp-runs-$k 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" "${runs[@]}" --json-out "$out/sp-runs-$k.json"
done
run sp-paged 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --json-out "$out/sp-paged.json"
run mt-chunk 100 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --json-out "$out/mt-chunk.json"
run mt-runs 100 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" "${runs[@]}" --json-out "$out/mt-runs.json"
run sg-chunk 100 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --json-out "$out/sg-chunk.json"
run sg-runs 100 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" "${runs[@]}" --json-out "$out/sg-runs.json"
save_kernel_cache "$out/kernel-cache.tgz"

{
  echo "== bench vmm: per-chunk calls and access per run"
  sed -n '/Per-chunk driver calls/,/^$/p;/Access granted per run/,$p' "$out/vmm.txt" | head -40
  echo "== dev engine, access per run (prefix cache, batched vs alone)"
  tail -4 "$out/dev-engine-run.txt"
  python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
print("== throughput: output tok/s, step mean ms, GPU idle ms before a step, blocked mapping waits / all mapping wait ms, hit rate")
for name in ["sp-chunk-1", "sp-access-1", "sp-runs-1", "sp-chunk-2", "sp-access-2", "sp-runs-2", "sp-paged",
             "mt-chunk", "mt-runs", "sg-chunk", "sg-runs"]:
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        print(f"{name:12s} (no result)"); continue
    r = json.load(open(path))
    print(f"{name:12s} {r['output_tokens_per_second']:9.1f} {r['step_mean_ms']:7.2f} {r.get('gpu_idle_gap_ms_per_step') or 0:7.3f} "
          f"{r.get('blocked_mapping_waits') or 0:5d} / {r.get('mapping_wait_ms_total') or 0:7.1f} {100 * (r.get('prefix_cache_hit_rate') or 0):5.1f}%")
PY
} > "$out/table.txt" 2>&1
cat "$out/rcs.txt" "$out/table.txt"
