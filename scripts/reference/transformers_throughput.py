"""Offline throughput of transformers' own continuous batching (generate_batch, paged attention)
on a randomly initialized model of a real shape: the same kind of workload as
`vtensor bench throughput --load-format dummy` (random prompt ids, a fixed number of new tokens,
end-of-sequence never reached). A reference point on the GPU machine, never part of the product.

Usage: python3 transformers_throughput.py --model llama-3-8b --num-prompts 256 \
           --input-len 128-1024 --output-len 128 --json-out result.json
"""
import argparse
import json
import random
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.generation import GenerationConfig

SHAPES = {
    # Llama-3-8B: the preset vtensor's dummy weights use (ModelPresets "llama-3-8b").
    "llama-3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                       rms_norm_eps=1e-5),
}


def length_range(text):
    a, _, b = text.partition("-")
    return int(a), int(b or a)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="llama-3-8b", choices=sorted(SHAPES))
    p.add_argument("--num-prompts", type=int, default=256)
    p.add_argument("--input-len", default="128-1024")
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out")
    args = p.parse_args()

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    lo, hi = length_range(args.input_len)
    config = LlamaConfig(**SHAPES[args.model])
    config.eos_token_id = None
    config.bos_token_id = None
    start = time.time()
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.eval()
    build = time.time() - start

    prompts = [[rng.randrange(1000, config.vocab_size) for _ in range(rng.randint(lo, hi))] for _ in range(args.num_prompts)]
    generation = GenerationConfig(max_new_tokens=args.output_len, min_new_tokens=args.output_len, do_sample=False,
                                  eos_token_id=None, pad_token_id=0)
    used = None
    result = None
    for implementation in ("paged|sdpa", "sdpa_paged"):
        try:
            model.set_attn_implementation(implementation)
        except Exception as error:  # noqa: BLE001 - try the next name this version may use
            print(f"attn_implementation {implementation!r}: {error}", file=sys.stderr)
            continue
        torch.cuda.synchronize()
        start = time.time()
        result = model.generate_batch(inputs=prompts, generation_config=generation, progress_bar=False)
        torch.cuda.synchronize()
        elapsed = time.time() - start
        used = implementation
        break
    if result is None:
        sys.exit("no paged attention implementation was accepted")

    outputs = list(result.values())
    generated = sum(len(o.generated_tokens) for o in outputs)
    prompt_tokens = sum(len(x) for x in prompts)
    report = dict(engine="transformers generate_batch", attn_implementation=used, model=args.model, requests=len(prompts),
                  finished=len(outputs), input_tokens=prompt_tokens, output_tokens=generated, seconds=elapsed,
                  build_seconds=build, output_tokens_per_second=generated / elapsed,
                  total_tokens_per_second=(generated + prompt_tokens) / elapsed, torch=torch.__version__,
                  device=torch.cuda.get_device_name())
    print(json.dumps(report, indent=1))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
