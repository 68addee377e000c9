#!/usr/bin/env bash
# Builds the static vtensor binary for the GPU machine (which has no Swift toolchain):
# release, Swift runtime linked statically, stripped, copied into the git-ignored gpu-bin/.
# Carry gpu-bin to the GPU machine and run scripts/gpu-check.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --static-swift-stdlib --product vtensor
mkdir -p gpu-bin
cp .build/release/vtensor gpu-bin/vtensor
strip gpu-bin/vtensor
git rev-parse --short HEAD > gpu-bin/COMMIT 2>/dev/null || true
# The device tool carries at most 64 MiB: carry gpu-pack/ (compressed); the GPU scripts unpack it.
mkdir -p gpu-pack
gzip -c -6 gpu-bin/vtensor > gpu-pack/vtensor.gz
cp gpu-bin/COMMIT gpu-pack/COMMIT
ls -l gpu-bin/vtensor gpu-pack/vtensor.gz
