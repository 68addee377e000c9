#!/usr/bin/env bash
# Runs on the GPU machine: prefixes packed into slabs (issue 12), checked and timed in one call.
#   0. scripts/gpu-vmm-offsets.py: which cuMemMap shapes the driver takes for one allocation of
#      several chunks (whole, part from offset 0, part at an offset, twice at once), by ctypes.
#      CUDA 13 refused offsets (2026-12-05): slabs then map only whole (`mapsSlabParts` false).
#   1. bench vmm --only slabs,packed: one allocation of n chunks mapped with one call; then a
#      128-chunk prefix packed into a slab and aliased by 16 followers, each mapping it as one run
#      (every follower's prefix checked against the source), against 16 aliasing it chunk by chunk.
#      Also the probe: cuMemMap at an offset into an allocation (the backend's `makesSlabs`).
#   2. dev engine, random model, 24 prompts sharing 1,200-token stems (two whole 512-token chunks
#      of this model, so packed prefixes map as runs), batched with the prefix cache
#      against each request alone: --pack-prefix-chunks 2 (every publish of the two shared
#      chunks that a waiting request shares is packed, and repacked at the next hit) and 0, same call (the random model's near-ties give ~92% either way;
#      what matters is that packing changes nothing).
#   3. bench throughput, dummy Llama-3-8B: shared prefix (16 x 16, 2048 + 128 in, 64 out, and
#      32 x 16 with 256 out) with --pack-prefix-chunks 0 and 32, alternated, then paged; multi-turn
#      (the issue's defaults) with 0 and 32 (nothing to pack there: it must not change); and
#      multi-turn with a 2,048-token system prompt every conversation shares (128 conversations):
#      unpacked, packed (the prompt maps as one run; rounds take their holders over with the
#      head aliased) and paged.
# Usage: [RUN_DEADLINE=540] scripts/gpu-slabs.sh [OUTDIR]   (carry gpu-pack, gpu-kcache)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary

sp=(--dataset shared-prefix --groups 16 --prompts-per-group 16 --system-len 2048 --question-len 128 --output-len 64)
sp32=(--dataset shared-prefix --groups 32 --prompts-per-group 16 --system-len 2048 --question-len 128 --output-len 256)
mtd=(--dataset multi-turn --num-conversations 256 --rounds 5 --user-len 512 --answer-len 64 --max-in-flight 128)

python3 - <<'PY'
import json, random
random.seed(5)
stems = [[random.randrange(4, 4096) for _ in range(1200)] for _ in range(4)]
prompts = [stems[k % 4] + [random.randrange(4, 4096) for _ in range(random.randint(10, 200))] for k in range(24)]
json.dump(prompts, open("/tmp/shared-prompts.json", "w"))
PY

run offsets 30 python3 scripts/gpu-vmm-offsets.py
run vmm 90 "$bin" bench vmm --backend cuda --only slabs,packed --json-out "$out/vmm.json"
run sp-plain 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/sp-plain.json"
run sp-packed 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --pack-prefix-chunks 32 --json-out "$out/sp-packed.json"
run sp-paged 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --json-out "$out/sp-paged.json"
mts=(--dataset multi-turn --num-conversations 128 --rounds 5 --user-len 512 --answer-len 64 --max-in-flight 128 --conversation-system-len 2048)
run mts-plain 90 "$bin" bench throughput "${dummy[@]}" "${mts[@]}" --json-out "$out/mts-plain.json"
run mts-packed 90 "$bin" bench throughput "${dummy[@]}" "${mts[@]}" --pack-prefix-chunks 32 --json-out "$out/mts-packed.json"
run mts-paged 90 "$bin" bench throughput "${dummy[@]}" "${mts[@]}" --kv paged --json-out "$out/mts-paged.json"
run dev-engine-packed 150 "$bin" dev engine --backend cuda --prompts /tmp/shared-prompts.json --max-num-seqs 8 --kv-chunks 96 --pack-prefix-chunks 2
run dev-engine-plain 150 "$bin" dev engine --backend cuda --prompts /tmp/shared-prompts.json --max-num-seqs 8 --kv-chunks 96
run sp32-plain 90 "$bin" bench throughput "${dummy[@]}" "${sp32[@]}" --json-out "$out/sp32-plain.json"
run sp32-packed 90 "$bin" bench throughput "${dummy[@]}" "${sp32[@]}" --pack-prefix-chunks 32 --json-out "$out/sp32-packed.json"
run sp32-paged 90 "$bin" bench throughput "${dummy[@]}" "${sp32[@]}" --kv paged --json-out "$out/sp32-paged.json"
run mt-plain 100 "$bin" bench throughput "${dummy[@]}" "${mtd[@]}" --json-out "$out/mt-plain.json"
run mt-packed 100 "$bin" bench throughput "${dummy[@]}" "${mtd[@]}" --pack-prefix-chunks 32 --json-out "$out/mt-packed.json"
run sp-plain-2 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/sp-plain-2.json"
run sp-packed-2 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --pack-prefix-chunks 32 --json-out "$out/sp-packed-2.json"
save_kernel_cache "$out/kernel-cache.tgz"

runs="sp-plain sp-packed sp-plain-2 sp-packed-2 sp-paged sp32-plain sp32-packed sp32-paged mt-plain mt-packed mts-plain mts-packed mts-paged"
python3 - "$out" "$runs" <<'PY' >> "$out/summary.txt"
import json, os, sys
out, runs = sys.argv[1], sys.argv[2].split()
def load(name):
    try: return json.load(open(os.path.join(out, name + ".json")))
    except Exception: return None
v = load("vmm")
if v:
    print("== one allocation of n chunks (p50 us): create, map, set access, unmap, release")
    for c in v.get("slabs", []):
        print(f"  {c['chunks']:4} chunks: {c['create']['p50Micros']:7.1f} {c['map']['p50Micros']:6.1f} {c['setAccess']['p50Micros']:7.1f} "
              f"{c['unmap']['p50Micros']:7.1f} {c['release']['p50Micros']:7.1f}  ({c['setAccess']['p50Micros'] / c['chunks']:.2f} us of access a chunk)")
    p = v.get("packed")
    if p:
        print(f"== a {p['chunks']}-chunk prefix, {p['followers']} followers (pack {p['packMillis']:.2f} ms)")
        print(f"  packed slab:   grow p50 {p['packedGrow']['p50Micros']:8.1f} us, p99 {p['packedGrow']['p99Micros']:8.1f}, {p['packedCallsPerFollower']} driver calls a follower")
        print(f"  chunk by chunk: grow p50 {p['perChunkGrow']['p50Micros']:8.1f} us, p99 {p['perChunkGrow']['p99Micros']:8.1f}, {p['perChunkCallsPerFollower']} driver calls a follower")
        print(f"  mismatched words {p['mismatches']} (must be 0; a run at an offset and its split included), runs split {p['runSplits']} (1 on purpose)")
    else:
        print("== packed: not measured (the backend makes no slabs: cuMemMap at an offset refused?)")
print("== throughput (dummy Llama-3-8B)")
print(f"{'run':12} {'out tok/s':>9} {'hit':>6} {'step ms':>8} {'host ms':>8} {'idle ms':>8} {'map wait ms':>11} {'KV peak GiB':>11}")
for name in runs:
    r = load(name)
    if not r: print(f"{name:12} missing"); continue
    print(f"{name:12} {r['output_tokens_per_second']:9.0f} {100*r['prefix_cache_hit_rate']:5.1f}% {r['step_mean_ms']:8.2f} "
          f"{r['engine_host_ms_per_step']:8.2f} {r.get('gpu_idle_gap_ms_per_step') or 0:8.2f} {r['mapping_wait_ms_total']:11.0f} {r['kv_peak_created_bytes']/2**30:11.1f}")
PY
{ [ -f "$out/offsets.txt" ] && { echo "== cuMemMap shapes (ctypes)"; cat "$out/offsets.txt"; }
  for f in dev-engine-packed dev-engine-plain; do [ -f "$out/$f.txt" ] && { echo "== $f"; grep -E "teacher-forced|^result|prefix cache" "$out/$f.txt"; }; done
  for f in sp-packed sp32-packed mt-packed mts-plain mts-packed; do [ -f "$out/$f.txt" ] && { echo "== $f"; grep -E "prefix cache" "$out/$f.txt"; }; done
  echo "== rcs"; cat "$out/rcs.txt"; } >> "$out/summary.txt"
(cd "$out" && tar czf /tmp/slabs-details.tgz --exclude=summary.txt --exclude=kernel-cache.tgz . 2>/dev/null \
  && find . -mindepth 1 ! -name summary.txt ! -name kernel-cache.tgz -delete && mv /tmp/slabs-details.tgz details.tgz)
cat "$out/summary.txt"
