#!/usr/bin/env bash
# Runs on the GPU machine: the cuBLASLt autotune on by default, its choices kept in a tuning
# cache, and issue 12's workloads with it (each arm against its A/B in the same call).
# Measured before (2026-12-06, fourth session, H100): autotune alone, one timing round per
# candidate: a decode step of 128 rows 10.20 -> 9.86 ms (down proj 52.2 -> 44.9 us, LM head
# 393.5 -> 381.1 us); multi-turn 2.295x -> 2.304x against no cache; 35-37 of 91 products
# switched from run to run (the flips are near the 2% threshold), ~1.5 s at load.
# This version times each candidate in three interleaved rounds (median) and keeps the choices
# in $VTENSOR_CACHE_DIR/matmul-tuning.json: the first engine run below times and writes them,
# every later run reads them (the table's "cuBLASLt autotune" row says which).
# Predicted: dev model 352/352 and the trained model's teacher-forced top-1 >= 99% with the
# tuned products; the model's load ~3-5 s longer on the run that times, within ~0.1 s of no
# autotune on runs that read the cache; bench model's two tuned runs switch the same products
# within 1-2; multi-turn +0.5-1% over autotune off; multi-turn 2.30x no cache (H100).
# Usage: [RUN_DEADLINE=540] scripts/gpu-autotune-cache.sh [OUTDIR]   (carry gpu-pack)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-common.sh
start_summary
rm -f "$VTENSOR_CACHE_DIR/matmul-tuning.json"

run dev-model 120 "$bin" dev model --json-out "$out/dev-model.json"
model=(bench model --backend cuda --load-format dummy --model llama-3-8b --batch 128 --prompt-tokens 256 --decode-tokens 32)
run model-off 90 "$bin" "${model[@]}" --matmul-autotune off --json-out "$out/model-off.json"
run model-on-a 120 "$bin" "${model[@]}" --json-out "$out/model-on-a.json"
run model-on-b 120 "$bin" "${model[@]}" --json-out "$out/model-on-b.json"
run mt-on 120 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --json-out "$out/mt-on.json"
run mt-off 90 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --matmul-autotune off --json-out "$out/mt-off.json"
run mt-nocache 120 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --no-prefix-cache --json-out "$out/mt-nocache.json"
run mt-paged 90 "$bin" bench throughput "${dummy[@]}" "${mt[@]}" --kv paged --json-out "$out/mt-paged.json"
run sp-on 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --json-out "$out/sp-on.json"
run sp-paged 90 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --kv paged --json-out "$out/sp-paged.json"
train_with_shared_prompts
run trained 100 "$bin" dev engine --backend cuda --model /tmp/tiny --prompts /tmp/tiny/shared.json --max-num-seqs 8 --kv-chunks 32
run sp-nocache 130 "$bin" bench throughput "${dummy[@]}" "${sp[@]}" --no-prefix-cache --json-out "$out/sp-nocache.json"
cp "$VTENSOR_CACHE_DIR/matmul-tuning.json" "$out/matmul-tuning.json" 2>/dev/null

python3 - "$out" <<'PY' >> "$out/summary.txt"
import json, os, re, sys
out = sys.argv[1]
def load(n):
    try: return json.load(open(os.path.join(out, n + ".json")))
    except Exception: return None
def text(n):
    try: return open(os.path.join(out, n + ".txt")).read()
    except Exception: return ""
for name in ("model-off", "model-on-a", "model-on-b"):
    r = load(name); t = text(name)
    m = re.search(r"cuBLASLt autotune: (\d+) products timed, (\d+) switched.*?rows a layer's products and the LM head ([0-9.]+) -> ([0-9.]+)", t)
    tune = f"{m.group(2)} of {m.group(1)} switched, 128 rows {m.group(3)} -> {m.group(4)} us" if m else "no autotune"
    if r: print(f"{name:11} decode step of 128 rows, median {r['decodeStepMedianMs']:.3f} ms; prefill {r.get('prefillSeconds', 0) * 1000:.1f} ms; {tune}")
print(f"{'run':11} {'out tok/s':>9} {'decode ms':>9} {'TTFT later p50':>14} {'hit rate':>8} {'KV after MiB':>12} {'load ms':>8}  autotune")
for name in ("mt-on", "mt-off", "mt-nocache", "mt-paged", "sp-on", "sp-paged", "sp-nocache"):
    r = load(name); t = text(name)
    if not r: print(f"{name:11} missing"); continue
    w = re.search(r"more when the model was built, in ([0-9.]+) ms", t)
    a = re.search(r"cuBLASLt autotune\s+(.*?);", t)
    later = r.get("first_token_p50_later_rounds_seconds")
    print(f"{name:11} {r['output_tokens_per_second']:9.0f} {r['decode_step_mean_ms']:9.2f} {later * 1000 if later else 0:14.0f} "
          f"{r.get('prefix_cache_hit_rate', 0):8.3f} {r.get('kv_held_after_trim_bytes', 0) / 2**20:12.0f} {w.group(1) if w else '?':>8}  "
          f"{re.sub(' +', ' ', a.group(1))[:110] if a else 'off'}")
def ratio(a, b, key="output_tokens_per_second"):
    x, y = load(a), load(b)
    return f"{x[key] / y[key]:.3f}" if x and y and y[key] else "?"
print(f"multi-turn: on/nocache {ratio('mt-on', 'mt-nocache')}x, on/paged {ratio('mt-on', 'mt-paged')}x, on/autotune off {ratio('mt-on', 'mt-off')}x; "
      f"TTFT later rounds on/nocache {ratio('mt-on', 'mt-nocache', 'first_token_p50_later_rounds_seconds')}")
print(f"shared prefix: on/nocache {ratio('sp-on', 'sp-nocache')}x, on/paged {ratio('sp-on', 'sp-paged')}x")
PY
{ echo "== dev model"; grep -E "FAIL|checks passed|failed" "$out/dev-model.txt" | tail -5
  echo "== trained model through the engine"; grep -E "teacher-forced|^result|exact" "$out/trained.txt" | sed 's/   */  /g' | cut -c1-300
  echo "== tuning cache"; python3 -c "import json,sys; c=json.load(open(sys.argv[1])); e=c['entries']; print(len(e), 'entries,', sum(1 for v in e.values() if v.get('algorithm')), 'switched')" "$out/matmul-tuning.json" 2>&1
  echo "== rcs"; cat "$out/rcs.txt"; } >> "$out/summary.txt"
pack_details
cat "$out/summary.txt"
