#!/usr/bin/env bash
# Runs on the GPU machine: the memory manager's driver calls made outside its lock (issue 12),
# checked and A/B'd in one call against the binary before (gpu-pack-base/vtensor.xz).
#   1. dev engine, random model, 24 prompts sharing 600-token stems: batched with the prefix
#      cache (chunks aliased, pending aliases mapped by the mapper) against each request alone,
#      virtual tensors; new binary.
#   2. bench vmm (latency, mapper, steps): base, new, base, new (the mapping rate must hold).
#   3. bench throughput, dummy Llama-3-8B: shared prefix (16 x 16, 2048 + 128 in, 64 out) and
#      multi-turn (the issue's defaults), base and new interleaved, then paged (new binary).
#   4. scripts/reference/compare.py --backends cuda when there is time (logits through the
#      mapped-checkpoint load against transformers).
#   MODE=aliasahead instead: waiting requests aliasing their cached prefixes ahead
#   (--alias-ahead-chunks: the default, 0 = off, 16384) on shared prefix and multi-turn against
#   paged, and the shared-stem dev engine check on the new binary, paged, and the base binary.
#   MODE=trained: the byte-level model trained here (scripts/reference/train_tiny.py, real top-1
#   margins, unlike the random model's near-ties) on 24 prompts sharing 600-token stems, batched
#   with the prefix cache against each alone, virtual tensors and paged (the correctness check).
#   MODE=mapahead: ShareGPT 1000, decode growth mapped 2 (default), 16 and 32 tokens ahead, and paged.
# Usage: [MODE=aliasahead|trained|mapahead] scripts/gpu-mapper-ab.sh [OUTDIR]   (carry gpu-pack, gpu-pack-base, gpu-kcache)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary
# The binary before (only the default and aliasahead modes run it).
base=gpu-bin-base/vtensor
if [ -f gpu-pack-base/vtensor.xz ]; then
  mkdir -p gpu-bin-base && xz -dc gpu-pack-base/vtensor.xz > "$base" && chmod +x "$base"
  echo "base binary: $(cat gpu-pack-base/COMMIT)" | tee -a "$out/summary.txt"
fi

sp=(--dataset shared-prefix --groups 16 --prompts-per-group 16 --system-len 2048 --question-len 128 --output-len 64)
mtd=(--dataset multi-turn --num-conversations 256 --rounds 5 --user-len 512 --answer-len 64 --max-in-flight 128)

python3 - <<'PY'
import json, random
random.seed(5)
stems = [[random.randrange(4, 4096) for _ in range(600)] for _ in range(4)]
prompts = [stems[k % 4] + [random.randrange(4, 4096) for _ in range(random.randint(10, 200))] for k in range(24)]
json.dump(prompts, open("/tmp/shared-prompts.json", "w"))
PY
if [ "${MODE:-}" = mapahead ]; then
  # ShareGPT 1000, virtual tensors against paged: decode growth mapped 2 tokens ahead (default),
  # a chunk (16) and two (32) ahead.
  sg=(--dataset sharegpt --num-prompts 1000)
  run sg-new 120 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --json-out "$out/sg-new.json"
  run sg-ahead16 120 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --map-ahead-tokens 16 --json-out "$out/sg-ahead16.json"
  run sg-paged 120 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --kv paged --json-out "$out/sg-paged.json"
  run sg-ahead32 120 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --map-ahead-tokens 32 --json-out "$out/sg-ahead32.json"
  run sg-new-2 120 "$bin" bench throughput "${dummy[@]}" "${sg[@]}" --json-out "$out/sg-new-2.json"
  runs="sg-new sg-ahead16 sg-ahead32 sg-new-2 sg-paged"
elif [ "${MODE:-}" = trained ]; then
  train_with_shared_prompts
  run dev-engine-trained 100 "$bin" dev engine --backend cuda --model /tmp/tiny --prompts /tmp/tiny/shared.json --max-num-seqs 4 --kv-chunks 24
  run dev-engine-trained-paged 100 "$bin" dev engine --backend cuda --model /tmp/tiny --prompts /tmp/tiny/shared.json --max-num-seqs 4 --kv-chunks 24 --kv paged
  run dev-engine-trained-wide 100 "$bin" dev engine --backend cuda --model /tmp/tiny --prompts /tmp/tiny/shared.json --max-num-seqs 16 --kv-chunks 64
  runs=""
elif [ "${MODE:-}" = aliasahead ]; then
  run dev-engine-shared 150 "$bin" dev engine --backend cuda --prompts /tmp/shared-prompts.json --max-num-seqs 8 --kv-chunks 64 --json-out "$out/dev-engine-shared.json"
  run dev-engine-shared-paged 150 "$bin" dev engine --backend cuda --prompts /tmp/shared-prompts.json --max-num-seqs 8 --kv-chunks 64 --kv paged
  run dev-engine-shared-base 150 "$base" dev engine --backend cuda --prompts /tmp/shared-prompts.json --max-num-seqs 8 --kv-chunks 64
  run dev-engine 150 "$bin" dev engine --backend cuda
  run sp-new 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/sp-new.json"
  run sp-off 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --alias-ahead-chunks 0 --json-out "$out/sp-off.json"
  run sp-16k 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --alias-ahead-chunks 16384 --json-out "$out/sp-16k.json"
  run sp-paged 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --json-out "$out/sp-paged.json"
  run sp-new-2 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/sp-new-2.json"
  run mt-new 100 "$bin" bench throughput "${dummy[@]}" "${mtd[@]}" --json-out "$out/mt-new.json"
  run mt-off 100 "$bin" bench throughput "${dummy[@]}" "${mtd[@]}" --alias-ahead-chunks 0 --json-out "$out/mt-off.json"
  run mt-paged 100 "$bin" bench throughput "${dummy[@]}" "${mtd[@]}" --kv paged --json-out "$out/mt-paged.json"
  runs="sp-new sp-off sp-16k sp-new-2 sp-paged mt-new mt-off mt-paged"
else
runs="sp-base sp-new sp-new-2 sp-paged mt-base mt-new mt-paged"
run dev-engine-shared 150 "$bin" dev engine --backend cuda --prompts /tmp/shared-prompts.json --max-num-seqs 8 --kv-chunks 64 --json-out "$out/dev-engine-shared.json"
for round in 1 2; do
  run vmm-base-$round 60 "$base" bench vmm --backend cuda --only latency,mapper,steps --json-out "$out/vmm-base-$round.json"
  run vmm-new-$round 60 "$bin" bench vmm --backend cuda --only latency,mapper,steps --json-out "$out/vmm-new-$round.json"
done
run sp-base 60 "$base" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/sp-base.json"
run sp-new 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/sp-new.json"
run sp-paged 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --json-out "$out/sp-paged.json"
run sp-new-2 60 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/sp-new-2.json"
run mt-base 100 "$base" bench throughput "${dummy[@]}" "${mtd[@]}" --json-out "$out/mt-base.json"
run mt-new 100 "$bin" bench throughput "${dummy[@]}" "${mtd[@]}" --json-out "$out/mt-new.json"
run mt-paged 100 "$bin" bench throughput "${dummy[@]}" "${mtd[@]}" --kv paged --json-out "$out/mt-paged.json"
run reference 150 python3 scripts/reference/compare.py "$bin" --backends cuda --out "$out/reference"
fi
save_kernel_cache "$out/kernel-cache.tgz"

python3 - "$out" "$runs" <<'PY' >> "$out/summary.txt"
import json, os, sys
out, runs = sys.argv[1], sys.argv[2].split()
def load(name):
    try: return json.load(open(os.path.join(out, name + ".json")))
    except Exception: return None
vmm = ["vmm-base-1", "vmm-new-1", "vmm-base-2", "vmm-new-2"]
if any(load(name) for name in vmm): print("== mapping rate (bench vmm: warm pool, cold, p50 per chunk)")
for name in [name for name in vmm if load(name)]:
    d = load(name)
    if not d: print(f"{name:12} missing"); continue
    m = d.get("mapper", {})
    print(f"{name:12} warm {m.get('mappingsPerSecond', 0):8.0f}/s  cold {m.get('coldMappingsPerSecond', 0):8.0f}/s  p50 {m.get('p50Micros', 0):6.1f} us")
print("== throughput (dummy Llama-3-8B)")
print(f"{'run':9} {'out tok/s':>9} {'tot tok/s':>9} {'hit':>6} {'step ms':>8} {'host ms':>8} {'idle ms':>8} {'map wait ms':>11} {'KV peak GiB':>11} {'TTFT later s':>12}")
for name in runs:
    r = load(name)
    if not r: print(f"{name:9} missing"); continue
    later = r.get("first_token_p50_later_rounds_seconds")
    print(f"{name:9} {r['output_tokens_per_second']:9.0f} {r['total_tokens_per_second']:9.0f} {100*r['prefix_cache_hit_rate']:5.1f}% {r['step_mean_ms']:8.2f} "
          f"{r['engine_host_ms_per_step']:8.2f} {r.get('gpu_idle_gap_ms_per_step') or 0:8.2f} {r['mapping_wait_ms_total']:11.0f} {r['kv_peak_created_bytes']/2**30:11.1f} {later if later is not None else '-':>12}")
PY
{ for f in dev-engine-shared dev-engine-shared-paged dev-engine-shared-base dev-engine dev-engine-trained dev-engine-trained-paged dev-engine-trained-wide; do [ -f "$out/$f.txt" ] && { echo "== $f"; grep -E "teacher-forced|^result|prefix cache" "$out/$f.txt"; }; done; [ -f "$out/reference.txt" ] && { echo "== reference logits"; tail -8 "$out/reference.txt"; }; echo "== rcs"; cat "$out/rcs.txt"; } >> "$out/summary.txt"
(cd "$out" && tar czf /tmp/ab-details.tgz --exclude=summary.txt --exclude=kernel-cache.tgz . 2>/dev/null \
  && find . -mindepth 1 ! -name summary.txt ! -name kernel-cache.tgz -delete && mv /tmp/ab-details.tgz details.tgz)
cat "$out/summary.txt"
