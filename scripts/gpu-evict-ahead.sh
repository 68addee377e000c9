#!/usr/bin/env bash
# Runs on the GPU machine: the prefix cache's workloads at the defaults after eviction a step
# ahead (--evict-ahead, on) and shared-prefix decode tiles (--shared-prefix-decode, on) became
# defaults (issue 12). One call, every arm on the same card:
#   0. correctness: dev engine on a byte-level model trained in the call, tiles on and off.
#   1. multi-turn at the issue's defaults (256 conversations x 5 rounds, 512 + 64, 128 in flight):
#      cache on (defaults), paged, no cache, and cache on with --evict-ahead off.
#   2. multi-turn with a 2,048-token system prompt every conversation shares (128 conversations).
#   3. shared prefix at the issue's defaults (64 x 16, 2,048 + 128, 256 out), vTensor and paged:
#      content identities (a copy of a full prompt chunk named as its source) let requests that
#      read a copy tile with those that read the source (modeled: paged's 73,850 tiles, was 71,180).
#   Also every dev decode check against the CPU, after the trained model's agreement.
# Predicted: multi-turn >= 2.4x no cache (2.39x on an H200 before; an H100's smaller KV budget
# leaves it short of memory, where eviction a step ahead helps), at least equal to paged; the
# later rounds' first token ~0.7 of no cache's with fixed steps (not the issue's third); shared
# prefix ~0.98x of paged (0.95x before content identities, on an H100).
# Usage: [RUN_DEADLINE=400] scripts/gpu-evict-ahead.sh [OUTDIR]   (carry gpu-pack)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary

mt=(--dataset multi-turn --num-conversations 256 --rounds 5 --user-len 512 --answer-len 64 --max-in-flight 128)
mts=(--dataset multi-turn --num-conversations 128 --rounds 5 --user-len 512 --answer-len 64 --max-in-flight 128 --conversation-system-len 2048)
sp=(--dataset shared-prefix --groups 64 --prompts-per-group 16 --system-len 2048 --question-len 128 --output-len 256)

# Correctness first: the byte-level model trained here (real top-1 choices, not near ties), 24
# prompts on four 600-token stems, batched with the prefix cache (tiles on, the default; then
# off) against each request alone: teacher-forced top-1 at least 99%.
train_with_shared_prompts
run trained-tiles 100 "$bin" dev engine --backend cuda --model /tmp/tiny --prompts /tmp/tiny/shared.json --max-num-seqs 8 --kv-chunks 32
run trained-no-tiles 100 "$bin" dev engine --backend cuda --model /tmp/tiny --prompts /tmp/tiny/shared.json --max-num-seqs 8 --kv-chunks 32 --shared-prefix-decode off
run checks 150 "$bin" dev decode --skip-timing --json-out "$out/checks.json"
run mt-on 90 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --json-out "$out/mt-on.json"
run mt-nocache 120 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --no-prefix-cache --json-out "$out/mt-nocache.json"
run mt-paged 90 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --kv paged --json-out "$out/mt-paged.json"
run sp-on 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/sp-on.json"
run sp-paged 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --json-out "$out/sp-paged.json"
run mts-on 90 "$bin" bench throughput "${dummy[@]}" "${mts[@]}" --json-out "$out/mts-on.json"
run mts-paged 90 "$bin" bench throughput "${dummy[@]}" "${mts[@]}" --kv paged --json-out "$out/mts-paged.json"
run mt-late 90 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --evict-ahead off --json-out "$out/mt-late.json"

python3 - "$out" <<'PY' >> "$out/summary.txt"
import json, os, sys
out = sys.argv[1]
def load(name):
    try: return json.load(open(os.path.join(out, name + ".json")))
    except Exception: return None
c = load("checks")
if c:
    failed = [x for x in c["checks"] if not x["passed"]]
    print(f"== dev decode checks: {len(c['checks']) - len(failed)} passed, {len(failed)} failed")
    for x in failed[:10]: print("FAIL", x["name"], x["detail"][:300])
print("== throughput (dummy Llama-3-8B)")
print(f"{'run':10} {'out tok/s':>9} {'vs paged':>8} {'vs nocache':>10} {'hit':>6} {'step ms':>8} {'host ms':>8} {'idle ms':>8} {'map wait ms':>11} {'KV peak GiB':>11} {'1st tok p50 first/later ms':>26}")
for name in ["mt-on", "mt-late", "mt-paged", "mt-nocache", "mts-on", "mts-paged", "sp-on", "sp-paged"]:
    r = load(name)
    if not r: print(f"{name:10} missing"); continue
    p = load(name.split("-")[0] + "-paged") if not name.endswith("paged") else None
    n = load("mt-nocache") if name.startswith("mt-") and name != "mt-nocache" else None
    ratio = f"{r['output_tokens_per_second'] / p['output_tokens_per_second']:8.3f}" if p else f"{'':8}"
    nc = f"{r['output_tokens_per_second'] / n['output_tokens_per_second']:10.2f}" if n else f"{'':10}"
    a, b = r.get("first_token_p50_first_round_seconds"), r.get("first_token_p50_later_rounds_seconds")
    ft = f"{a*1000:.0f} / {b*1000:.0f}" if a is not None and b is not None else ""
    print(f"{name:10} {r['output_tokens_per_second']:9.0f} {ratio} {nc} {100*(r.get('prefix_cache_hit_rate') or 0):5.1f}% {r['step_mean_ms']:8.2f} "
          f"{r['engine_host_ms_per_step']:8.2f} {r.get('gpu_idle_gap_ms_per_step') or 0:8.2f} {r['mapping_wait_ms_total']:11.0f} {r['kv_peak_created_bytes']/2**30:11.1f} {ft:>26}")
on, off = load("mt-on"), load("mt-nocache")
if on and off and on.get("first_token_mean_by_round_seconds") and off.get("first_token_mean_by_round_seconds"):
    m_on, m_off = on["first_token_mean_by_round_seconds"][1:], off["first_token_mean_by_round_seconds"][1:]
    print("multi-turn first token, rounds 2-5, mean on/off:", " ".join(f"{a/b:.2f}" for a, b in zip(m_on, m_off)),
          f"(all later rounds: mean {sum(m_on)/sum(m_off):.2f}, p50 {on['first_token_p50_later_rounds_seconds']/off['first_token_p50_later_rounds_seconds']:.2f})")
PY
{ for f in trained-tiles trained-no-tiles; do [ -f "$out/$f.txt" ] && { echo "== $f"; grep -E "teacher-forced|^result|shared-prefix decode|exact|prefix cache" "$out/$f.txt" | sed 's/   */  /g' | cut -c1-300; }; done
  for f in mt-on mt-late sp-on sp-paged mts-on; do [ -f "$out/$f.txt" ] && { echo "== $f"; grep -E "shared-prefix decode|prefix cache  |mapping waits|^per step|^GPU per step|^KV memory|^GPU memory free" "$out/$f.txt" | sed 's/   */  /g' | cut -c1-300; }; done
  echo "== rcs"; cat "$out/rcs.txt"; } >> "$out/summary.txt"
# Everything but the summary in one archive (the device tool brings back only a few files).
(cd "$out" && tar czf /tmp/evict-details.tgz --exclude=summary.txt . 2>/dev/null \
  && find . -mindepth 1 \( -name '*.txt' -o -name '*.json' \) ! -name summary.txt -delete && mv /tmp/evict-details.tgz details.tgz)
cat "$out/summary.txt"
