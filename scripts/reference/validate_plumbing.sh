#!/usr/bin/env bash
# Proves compare.py's plumbing with the stand-in fake_vtensor.py (a PLUMBING TEST ONLY: it runs
# transformers itself): a faithful fake must pass, and each deliberate error must fail.
# Usage: scripts/reference/validate_plumbing.sh [OUTDIR]   (PYTHON=... to pick the interpreter)
set -uo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-python3}
out=${1:-/tmp/vtensor-plumbing}
work=${VTENSOR_REFERENCE_DIR:-/tmp/vtensor-reference}
fake=scripts/reference/fake_vtensor.py
mkdir -p "$out"
bad=0
expect() {  # expect pass|fail NAME FAKE_ARGS -- COMPARE_ARGS...
  local want=$1 name=$2 fakeargs=$3; shift 3
  FAKE_VTENSOR_ARGS="$fakeargs" "$py" scripts/reference/compare.py "$fake" --work "$work" --out "$out/$name" "$@" \
    > "$out/$name.log" 2>&1
  local rc=$? got=pass
  [ $rc -ne 0 ] && got=fail
  if [ "$got" = "$want" ]; then echo "ok    $name: $got as expected"; else echo "WRONG $name: $got, expected $want"; bad=1; fi
  grep '^|' "$out/$name.log" | grep -v -- '---' | sed 's/^/      /'
}
expect pass faithful           ""
expect pass small-noise-cpu    "--perturb 2e-4"   --backends cpu --models llama3
expect fail noise-cpu          "--perturb 1e-2"   --backends cpu --models llama3,qwen2
expect fail noise-cuda         "--perturb 6e-2"   --backends cuda --models llama3 --no-hf-bf16
expect fail no-sliding-window  "--bug no-sliding-window" --models mistral
expect fail qwen2-window       "--bug qwen2-window"      --models qwen2
expect fail no-rope-scaling    "--bug no-rope-scaling"   --models llama3
expect fail no-qkv-bias        "--bug no-qkv-bias"       --models qwen2
exit $bad
