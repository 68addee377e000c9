#!/usr/bin/env bash
# Runs on the GPU machine: shared-prefix decode (cascade tiles, issue 12), checked and timed in
# one call. Decode requests whose leading K/V is one copy (aliased chunks; paged: the same pages)
# read it once per tile of requests (Llama-3-8B, group 4: four requests' query heads fill the
# 16 rows of a head block) instead of once each (--shared-prefix-decode, off by default).
#   1. dev decode, every check (the kernel's item table changed for all paths), with the shared
#      cases through tiles and without, virtual and paged, against the CPU oracle.
#   2. dev decode timing: 256 x 2,304 decode, distinct against groups of 16 sharing 2,048 keys,
#      each group member reading its own (the 2026-12-05 case) and through tiles.
#   3. bench throughput, dummy Llama-3-8B, shared prefix at the issue's defaults (64 x 16 prompts,
#      2,048 + 128 tokens, 256 out): tiles on and off, vTensor and paged, and no prefix cache.
#   4. dev engine, random model, 24 prompts on 1,200-token stems, batched (tiles on, off) against
#      each alone: top-1 agreement must match the tiles-off run (random weights: near ties, ~93%).
# Predicted: checks pass; tiles read 2,048 x 16 / 4 + 256 x 16 = 12,288 keys a group instead of
# 36,864, so the shared decode case runs ~2.5x faster than distinct (~1.3 ms vs ~3.3 ms on an
# H200 at ~4.3 TB/s); throughput at 64 x 16 x 256 rises from 2.5x to ~3.5x of no cache.
# Second call (binary after 76d5e37): the first, on an H100, found 3.05x no cache but 0.88x of
# paged with tiles: the vTensor arm waited 5.1 s on mappings (the KV budget full, chunks evicted
# just in time retire behind the step in flight). Now cached chunks are evicted a step early
# (--evict-ahead, on; sp-on-late is the old way), and dev decode's shared cases fork over slabs.
# Usage: [RUN_DEADLINE=560] scripts/gpu-shared-decode.sh [OUTDIR]   (carry gpu-pack)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary

sp=(--dataset shared-prefix --groups 64 --prompts-per-group 16 --system-len 2048 --question-len 128 --output-len 256)

python3 - <<'PY'
import json, random
random.seed(5)
stems = [[random.randrange(4, 4096) for _ in range(1200)] for _ in range(4)]
prompts = [stems[k % 4] + [random.randrange(4, 4096) for _ in range(random.randint(10, 200))] for k in range(24)]
json.dump(prompts, open("/tmp/shared-prompts.json", "w"))
PY

# Most important first: a call cut short by RUN_DEADLINE still answers the main questions.
run checks-shared 90 "$bin" dev decode --skip-timing --filter "shared prefix" --json-out "$out/checks-shared.json"
run checks 150 "$bin" dev decode --skip-timing --json-out "$out/checks.json"
run shared-decode 100 "$bin" dev decode --skip-checks --filter "x 2304" --reps 20 --json-out "$out/shared-decode.json"
run dev-engine-on 60 "$bin" dev engine --backend cuda --prompts /tmp/shared-prompts.json --max-num-seqs 8 --kv-chunks 96 --pack-prefix-chunks 2 --shared-prefix-decode on
run dev-engine-off 60 "$bin" dev engine --backend cuda --prompts /tmp/shared-prompts.json --max-num-seqs 8 --kv-chunks 96 --pack-prefix-chunks 2
run sp-on 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --shared-prefix-decode on --json-out "$out/sp-on.json"
run sp-paged-on 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --shared-prefix-decode on --json-out "$out/sp-paged-on.json"
run sp-nocache 130 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --no-prefix-cache --json-out "$out/sp-nocache.json"
run sp-on-late 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --shared-prefix-decode on --evict-ahead off --json-out "$out/sp-on-late.json"
run sp-off 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/sp-off.json"
run sp-paged 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --json-out "$out/sp-paged.json"

python3 - "$out" <<'PY' >> "$out/summary.txt"
import json, os, sys
out = sys.argv[1]
def load(name):
    try: return json.load(open(os.path.join(out, name + ".json")))
    except Exception: return None
for c in [load("checks-shared"), load("checks")]:
    if not c: continue
    failed = [x for x in c["checks"] if not x["passed"]]
    print(f"== checks: {len(c['checks']) - len(failed)} passed, {len(failed)} failed")
    for x in failed[:10]: print("FAIL", x["name"], x["detail"][:300])
    for x in c["checks"]:
        if "shared prefix" in x["name"] and "tiles" in x["name"] and len(c["checks"]) < 60: print("    ", x["name"], "|", x["detail"][:160])
d = load("shared-decode")
if d:
    print(f"== shared decode (read ceiling {d.get('readCeilingTBps', 0):.3f} TB/s)")
    for t in d["timings"]:
        print(f"  {t['batch']} x {t['length']} {t['mode']:38} {t['millis']:8.4f} ms {t['tbps']:6.3f} TB/s  {t.get('note') or ''}")
print("== throughput (dummy Llama-3-8B, shared prefix 64 x 16, 2048 + 128, 256 out)")
base = load("sp-nocache")
print(f"{'run':12} {'out tok/s':>9} {'vs nocache':>10} {'vs paged':>8} {'hit':>6} {'step ms':>8} {'decode ms':>9} {'KV peak GiB':>11}")
for name in ["sp-on", "sp-on-late", "sp-off", "sp-paged-on", "sp-paged", "sp-nocache"]:
    r = load(name)
    if not r: print(f"{name:12} missing"); continue
    p = load("sp-paged-on" if name in ("sp-on", "sp-on-late") else "sp-paged" if name == "sp-off" else "")
    ratio = f"{r['output_tokens_per_second'] / p['output_tokens_per_second']:8.3f}" if p else f"{'':8}"
    nc = f"{r['output_tokens_per_second'] / base['output_tokens_per_second']:10.2f}" if base else f"{'':10}"
    print(f"{name:12} {r['output_tokens_per_second']:9.0f} {nc} {ratio} {100*r['prefix_cache_hit_rate']:5.1f}% {r['step_mean_ms']:8.2f} "
          f"{r.get('decode_step_mean_ms') or 0:9.2f} {r['kv_peak_created_bytes']/2**30:11.1f}")
PY
{ for f in dev-engine-on dev-engine-off; do [ -f "$out/$f.txt" ] && { echo "== $f"; grep -E "teacher-forced|^result|shared-prefix decode|exact" "$out/$f.txt" | sed 's/   */  /g'; }; done
  for f in sp-on sp-on-late sp-paged-on; do [ -f "$out/$f.txt" ] && { echo "== $f"; grep -E "shared-prefix decode|prefix cache  |mapping waits|^per step|^GPU per step" "$out/$f.txt" | sed 's/   */  /g' | cut -c1-400; }; done
  echo "== rcs"; cat "$out/rcs.txt"; } >> "$out/summary.txt"
# Everything but the summary in one archive (the device tool brings back only a few files).
(cd "$out" && tar czf /tmp/shared-details.tgz --exclude=summary.txt . 2>/dev/null \
  && find . -mindepth 1 \( -name '*.txt' -o -name '*.json' \) ! -name summary.txt -delete && mv /tmp/shared-details.tgz details.tgz)
cat "$out/summary.txt"
