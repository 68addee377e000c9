#!/usr/bin/env python3
"""Gives a reference model directory (models.py) a tokenizer, so `vtensor generate` can run on it:
a byte-level BPE tokenizer.json with the 256 byte tokens and no merges (ids 0-255; the model's
larger embedding table keeps ids the tokenizer never produces, which generation must never pick).

Usage: python3 add_byte_tokenizer.py MODEL_DIR [MODEL_DIR ...]
"""
import json
import sys
from pathlib import Path


def bytes_to_unicode():
    # GPT-2's reversible byte -> printable character map.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def main(argv):
    table = bytes_to_unicode()
    vocab = {table[b]: b for b in range(256)}
    tokenizer = {
        "version": "1.0",
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": []},
    }
    for d in argv:
        Path(d, "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
        Path(d, "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
        print(f"{d}: byte-level tokenizer with 256 ids")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
