"""Trains a small byte-level Llama on local text for a few seconds, so that its next-token choices
have clear margins (a random model's are near-ties everywhere), and writes it as a Hugging Face
directory plus held-out prompts (token ids). For `vtensor dev engine --model DIR --prompts FILE`
on the GPU machine. A test fixture maker, never part of the product.

Usage: python3 train_tiny.py OUTDIR [--steps 600] [--prompts 24]
"""
import argparse
import glob
import json
import os
import random
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def corpus(limit):
    files = sorted(glob.glob("/usr/lib/python3*/**/*.py", recursive=True) + glob.glob("/opt/**/site-packages/torch/**/*.py", recursive=True))
    data = bytearray()
    for path in files:
        try:
            with open(path, "rb") as f:
                data += f.read()
        except OSError:
            continue
        if len(data) >= limit:
            break
    return bytes(data[:limit])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--prompts", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    data = corpus(8 << 20)
    split = len(data) * 9 // 10
    train = torch.tensor(list(data[:split]), dtype=torch.long, device="cuda")
    config = LlamaConfig(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2,
                         head_dim=64, vocab_size=256, max_position_embeddings=2048, rope_theta=10000.0, rms_norm_eps=1e-5,
                         tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = LlamaForCausalLM(config).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    seq, batch = 512, 64
    start = time.time()
    for step in range(args.steps):
        lr = 2e-3 * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * (1 - step / args.steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = torch.randint(0, train.numel() - seq - 1, (batch,), device="cuda")
        x = torch.stack([train[i:i + seq + 1] for i in index.tolist()])
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=x[:, :-1], labels=x[:, 1:]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.3f} ({time.time() - start:.1f} s)", flush=True)
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    held = data[split:]
    prompts = []
    for _ in range(args.prompts):
        n = rng.randint(5, 900)
        at = rng.randrange(0, len(held) - n)
        prompts.append(list(held[at:at + n]))
    with open(os.path.join(args.out, "prompts.json"), "w") as f:
        json.dump(prompts, f)
    print(f"saved to {args.out}: final loss {loss.item():.3f}, {len(prompts)} prompts")


if __name__ == "__main__":
    main()
