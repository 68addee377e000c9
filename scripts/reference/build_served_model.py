"""Builds a Hugging Face model directory that `vtensor serve` can serve on the GPU machine, where
nothing can be downloaded: a LlamaForCausalLM with random weights made by transformers, the
tokenizer.json carried from here (scripts/gpu-serve-check.sh copies it), and a tokenizer_config.json
with a small chat template of our own. A test fixture maker, never part of the product.

Usage: python3 build_served_model.py OUTDIR --tokenizer tokenizer.json [--shape llama-3-8b|small]
"""
import argparse
import json
import os
import shutil
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

# Plain-text turns, so the template needs no special tokens beyond the tokenizer's BOS.
TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}### {{ message['role'] }}:\n{{ message['content'] }}\n\n"
    "{% endfor %}{% if add_generation_prompt %}### assistant:\n{% endif %}"
)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--tokenizer", required=True, help="a tokenizer.json (byte-level BPE)")
    p.add_argument("--bos", default="<｜begin▁of▁sentence｜>")
    p.add_argument("--eos", default="<｜end▁of▁sentence｜>")
    p.add_argument("--shape", default="llama-3-8b", choices=["llama-3-8b", "small"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    tok = json.load(open(args.tokenizer, encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    ids = list(vocab.values()) + [t["id"] for t in tok.get("added_tokens", [])]
    vocab_size = (max(ids) + 1 + 127) // 128 * 128
    special = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    bos, eos = special.get(args.bos), special.get(args.eos)
    if args.shape == "llama-3-8b":
        shape = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, rope_theta=500000.0)
    else:
        shape = dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
                     num_key_value_heads=2, head_dim=64, rope_theta=10000.0)
    config = LlamaConfig(vocab_size=vocab_size, max_position_embeddings=8192, rms_norm_eps=1e-5,
                         tie_word_embeddings=False, bos_token_id=bos, eos_token_id=eos, torch_dtype="bfloat16", **shape)
    start = time.time()
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    # transformers' init draws N(0, 0.02): logits near ties. Scale the output head so the sampled
    # text is less uniform (greedy runs then settle, as a trained model's do).
    with torch.no_grad():
        model.lm_head.weight.mul_(8)
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    shutil.copy(args.tokenizer, os.path.join(args.out, "tokenizer.json"))
    with open(os.path.join(args.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"bos_token": args.bos, "eos_token": args.eos, "add_bos_token": True, "chat_template": TEMPLATE,
                   "model_max_length": 8192, "tokenizer_class": "PreTrainedTokenizerFast"}, f, ensure_ascii=False, indent=1)
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": bos, "eos_token_id": eos}, f)
    print(f"saved {args.shape} (vocab {vocab_size}, bos {bos}, eos {eos}) to {args.out} in {time.time() - start:.1f} s")


if __name__ == "__main__":
    main()
