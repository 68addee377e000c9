#!/usr/bin/env bash
# Runs on the GPU machine (issue 12): where the last gaps of the prefix cache's workloads come from.
#   1. shared prefix (64 x 16, 2,048 + 128, 256 out), vTensor and paged, with every operation
#      timed (--profile-operations: CUDA events around each, graphs off): which operations take
#      the 0.36 ms a step more GPU time that vTensor's steps took than paged's (same tiles).
#   2. multi-turn at the issue's defaults, cache on, profiled: what a 128-row decode-only step
#      spends its 17 ms on (the roofline, weights + K/V at the read ceiling, is ~14 ms).
#   3. multi-turn with steps sized to the waiting work (--step-overhead-tokens 512), cache on and
#      off, and with fixed steps (the default) on the same card (an H100 gave 0.47 / 2.30x fixed).
# Usage: [RUN_DEADLINE=400] scripts/gpu-issue12-profile.sh [OUTDIR]   (carry gpu-pack)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary

mt=(--dataset multi-turn --num-conversations 256 --rounds 5 --user-len 512 --answer-len 64 --max-in-flight 128)
sp=(--dataset shared-prefix --groups 64 --prompts-per-group 16 --system-len 2048 --question-len 128 --output-len 256)

run sp-prof 120 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --profile-operations --json-out "$out/sp-prof.json"
run sp-paged-prof 120 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --profile-operations --json-out "$out/sp-paged-prof.json"
run mt-sized 90 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --step-overhead-tokens 512 --json-out "$out/mt-sized.json"
run mt-nocache-sized 120 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --no-prefix-cache --step-overhead-tokens 512 --json-out "$out/mt-nocache-sized.json"
run mt-on 90 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --json-out "$out/mt-on.json"
run mt-nocache 120 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --no-prefix-cache --json-out "$out/mt-nocache.json"
run mt-prof 120 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --profile-operations --json-out "$out/mt-prof.json"

{ for f in sp-prof sp-paged-prof mt-sized mt-nocache-sized mt-on mt-nocache mt-prof; do [ -f "$out/$f.txt" ] && { echo "== $f"; grep -E "^throughput|^steps|^GPU ms a|^GPU per step|mapping waits|^first token by|^multi-turn first|^longest mapping waits" "$out/$f.txt" | sed 's/   */  /g' | cut -c1-900; }; done
  echo "== rcs"; cat "$out/rcs.txt"; } >> "$out/summary.txt"
python3 - "$out" <<'PY' >> "$out/summary.txt"
import json, os, sys
out = sys.argv[1]
def load(n):
    try: return json.load(open(os.path.join(out, n + ".json")))
    except Exception: return None
for arm, a_on, a_off in [("sized", "mt-sized", "mt-nocache-sized"), ("fixed", "mt-on", "mt-nocache")]:
    on, off = load(a_on), load(a_off)
    if not (on and off): continue
    m_on, m_off = on["first_token_mean_by_round_seconds"][1:], off["first_token_mean_by_round_seconds"][1:]
    print(f"{arm} multi-turn: {on['output_tokens_per_second']:.0f} / {off['output_tokens_per_second']:.0f} tok/s = {on['output_tokens_per_second']/off['output_tokens_per_second']:.2f}x; "
          f"later rounds' first token on/off mean {sum(m_on)/sum(m_off):.2f}, p50 {on['first_token_p50_later_rounds_seconds']/off['first_token_p50_later_rounds_seconds']:.2f}; "
          f"between tokens {on['inter_token_mean_ms']:.1f} / {off['inter_token_mean_ms']:.1f} ms")
a, b = load("sp-prof"), load("sp-paged-prof")
if a and b:
    for kind in ["decode_step_operations_ms", "prompt_step_operations_ms"]:
        ta, tb = a["gpu_step_totals"][kind], b["gpu_step_totals"][kind]
        na = a["gpu_step_totals"]["profiled_decode_steps" if kind.startswith("decode") else "profiled_prompt_steps"]
        nb = b["gpu_step_totals"]["profiled_decode_steps" if kind.startswith("decode") else "profiled_prompt_steps"]
        print(f"shared prefix {kind} a step, vtensor ({na} steps) vs paged ({nb}):")
        for k in sorted(set(ta) | set(tb), key=lambda k: -(ta.get(k, 0))):
            print(f"  {k:28} {ta.get(k,0)/max(na,1):8.3f} {tb.get(k,0)/max(nb,1):8.3f}")
PY
(cd "$out" && tar czf /tmp/prof-details.tgz --exclude=summary.txt . 2>/dev/null \
  && find . -mindepth 1 \( -name '*.txt' -o -name '*.json' \) ! -name summary.txt -delete && mv /tmp/prof-details.tgz details.tgz)
cat "$out/summary.txt"
