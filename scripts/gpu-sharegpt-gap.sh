#!/usr/bin/env bash
# Runs on the GPU machine: separates the two suspects for virtual tensors' 1-4% gap to paged on
# ShareGPT (docs/perf.md, "Where the sharegpt gap is"), in one call:
#   1. bench vmm --only launch: a copy kernel's time alone, while the mapper maps fresh chunks,
#      while it unmaps freed ones (page-table changes under a running kernel), and while it only
#      creates chunks (cuMemCreate, no mapping); medians over the whole window of each.
#   2. bench throughput --dataset sharegpt --num-prompts 1000 --profile-operations, virtual
#      tensors and paged, interleaved twice: CUDA events around every operation of every step,
#      summed by operation over prompt steps and decode-only steps. If the attention kernels
#      differ (suspect 2), the prompt steps' attention rows differ and the rest agree; if page-table
#      changes slow the GPU (suspect 1), every operation of the prompt steps is slower by a similar share.
#   3. The same two runs without profiling (CUDA graphs on), for the throughput itself, and
#      virtual tensors with --prefetch-steps 3 (1,000 requests at once: a burst whose prompts the
#      mapper can map three steps ahead instead of one).
# Usage: scripts/gpu-sharegpt-gap.sh [OUTDIR]   (carry gpu-pack, gpu-kcache)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary

sg=(--dataset sharegpt --num-prompts 1000)

run vmm-launch 120 "$bin" bench vmm --backend cuda --only launch --json-out "$out/vmm-launch.json"
run prof-vtensor 150 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --profile-operations --json-out "$out/prof-vtensor.json"
run prof-paged 150 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --profile-operations --kv paged --json-out "$out/prof-paged.json"
run prof-vtensor-2 150 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --profile-operations --json-out "$out/prof-vtensor-2.json"
run prof-paged-2 150 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --profile-operations --kv paged --json-out "$out/prof-paged-2.json"
run sg-vtensor 120 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --json-out "$out/sg-vtensor.json"
run sg-paged 120 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --kv paged --json-out "$out/sg-paged.json"
run sg-prefetch3 120 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --prefetch-steps 3 --json-out "$out/sg-prefetch3.json"
save_kernel_cache "$out/kernel-cache.tgz"

{
  echo "== bench vmm launch"
  grep -iE "copy|launch|map" "$out/vmm-launch.txt" | tail -12
  python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(name):
    path = os.path.join(out, name + ".json")
    return json.load(open(path)) if os.path.exists(path) else None
print("== throughput (output tok/s, step mean ms, GPU span ms a step, first token p50 s, blocked mapping waits)")
for name in ["sg-vtensor", "sg-paged", "sg-prefetch3", "prof-vtensor", "prof-paged", "prof-vtensor-2", "prof-paged-2"]:
    r = load(name)
    if r: print(f"{name:16s} {r['output_tokens_per_second']:9.1f} {r['step_mean_ms']:7.2f} {r.get('gpu_span_ms_per_step') or 0:7.3f} "
                f"{r.get('first_token_p50_seconds') or 0:6.3f} {r.get('blocked_mapping_waits') or 0:5d}")
print("== GPU ms a step by operation (mean of the two profiled runs each), vtensor / paged")
for kind, ops_key, steps_key in [("prompt", "prompt_step_operations_ms", "profiled_prompt_steps"),
                                 ("decode-only", "decode_step_operations_ms", "profiled_decode_steps")]:
    per = {}
    for mode in ["vtensor", "paged"]:
        sums, steps = {}, 0
        for name in [f"prof-{mode}", f"prof-{mode}-2"]:
            r = load(name)
            if not r: continue
            t = r.get("gpu_step_totals") or {}
            steps += t.get(steps_key, 0)
            for op, ms in (t.get(ops_key) or {}).items(): sums[op] = sums.get(op, 0) + ms
        per[mode] = {op: ms / max(1, steps) for op, ms in sums.items()}, steps
    (v, vs), (p, ps) = per["vtensor"], per["paged"]
    print(f"-- {kind} steps: {vs} vtensor, {ps} paged; total {sum(v.values()):.3f} / {sum(p.values()):.3f} ms")
    for op in sorted(set(v) | set(p), key=lambda o: -(v.get(o, 0) + p.get(o, 0))):
        a, b = v.get(op, 0), p.get(op, 0)
        print(f"   {op:28s} {a:8.3f} {b:8.3f}  {a / b if b else float('nan'):6.3f}x")
PY
} > "$out/table.txt" 2>&1
cat "$out/rcs.txt" "$out/table.txt"
