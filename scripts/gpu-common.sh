# Sourced by the scripts/gpu-*.sh runners on the GPU machine (from the repository root):
# unpacks the carried binary (scripts/build-gpu-binary.sh writes gpu-pack/vtensor.gz), sets
# $out (the first argument, else $OUT) and $bin, and points the kernel cache at /tmp.
if [ -f gpu-pack/vtensor.gz ] && [ -z "${VTENSOR_BIN:-}" ]; then
  mkdir -p gpu-bin && gunzip -c gpu-pack/vtensor.gz > gpu-bin/vtensor && cp gpu-pack/COMMIT gpu-bin/COMMIT
fi
out=${1:-${OUT:-/tmp/vtensor-gpu}}
bin=${VTENSOR_BIN:-gpu-bin/vtensor}
mkdir -p "$out"
export VTENSOR_CACHE_DIR=${VTENSOR_CACHE_DIR:-/tmp/vtensor-cache}
# Kernels an earlier call compiled with this binary (save_kernel_cache below), so servers start
# without NVRTC; a cache entry records its full key, so a stale one is simply not used.
if [ -f gpu-kcache/kernel-cache.tgz ] && [ ! -d "$VTENSOR_CACHE_DIR" ]; then
  mkdir -p "$VTENSOR_CACHE_DIR" && tar xzf gpu-kcache/kernel-cache.tgz -C "$VTENSOR_CACHE_DIR"
fi
save_kernel_cache() { [ -d "$VTENSOR_CACHE_DIR" ] && tar czf "$1" -C "$VTENSOR_CACHE_DIR" .; }
chmod +x "$bin"

# Starts $out/summary.txt with the binary's commit and the card.
start_summary() {
  echo "binary built from $(cat gpu-bin/COMMIT 2>/dev/null || echo '?')" | tee "$out/summary.txt"
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm,clocks.mem --format=csv >> "$out/summary.txt" 2>&1
}

# Runs a step of a GPU script: run NAME TIMEOUT_SECONDS COMMAND...; its output goes to
# $out/NAME.txt, and a line with its exit status and seconds to $out/rcs.txt (and the terminal).
# Returns the command's status. (gpu-decode-variants.sh defines a run of its own.)
# With RUN_DEADLINE=S, a step gets at most what is left of S seconds since the script started
# (bash's SECONDS), and none once fewer than 15 are left, so the summary still gets printed.
run() {
  local name=$1 limit=$2; shift 2
  if [ -n "${RUN_DEADLINE:-}" ]; then
    local left=$(( RUN_DEADLINE - SECONDS ))
    if [ "$left" -lt 15 ]; then echo "$name: skipped, $SECONDS s into the call (RUN_DEADLINE=$RUN_DEADLINE)" | tee -a "$out/rcs.txt"; return 124; fi
    [ "$left" -lt "$limit" ] && limit=$left
  fi
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$out/$name.txt" 2>&1; local rc=$?
  echo "$name: rc=$rc, $(( $(date +%s) - t0 )) s" | tee -a "$out/rcs.txt"
  return $rc
}
# The dummy Llama-3-8B the engine benchmarks run.
dummy=(--backend cuda --load-format dummy --model llama-3-8b)
# Issue 12's workloads at the issue's defaults (bench throughput flags).
sp=(--dataset shared-prefix --groups 64 --prompts-per-group 16 --system-len 2048 --question-len 128 --output-len 256)
mt=(--dataset multi-turn --num-conversations 256 --rounds 5 --user-len 512 --answer-len 64 --max-in-flight 128)

# The byte-level model trained here (scripts/reference/train_tiny.py) and 24 prompts on four
# 600-token stems (DIR/shared.json), for the engine-against-alone checks with the prefix cache:
# train_with_shared_prompts [DIR (/tmp/tiny)] [SEED (0)] [STEP NAME (train)].
train_with_shared_prompts() {
  local dir=${1:-/tmp/tiny} seed=${2:-0} name=${3:-train}
  PYTHONUNBUFFERED=1 run "$name" 170 python3 scripts/reference/train_tiny.py "$dir" --steps 600 --seed "$seed" || return
  python3 - "$dir" <<'PY'
import json, random, sys
d = sys.argv[1]
p = json.load(open(f"{d}/prompts.json")); random.seed(5)
out = [p[k % 4][:600] + p[4 + k % 20][:random.randint(10, 200)] for k in range(24)]
json.dump(out, open(f"{d}/shared.json", "w"))
PY
}

# Packs every .txt and .json under $out but summary.txt into $out/details.tgz and removes them:
# the device tool brings back only a few files.
pack_details() {
  (cd "$out" && tar czf /tmp/vtensor-details.tgz --exclude=summary.txt . 2>/dev/null \
    && find . -mindepth 1 \( -name '*.txt' -o -name '*.json' \) ! -name summary.txt -delete && mv /tmp/vtensor-details.tgz details.tgz)
}
