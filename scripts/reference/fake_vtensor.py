#!/usr/bin/env python3
"""PLUMBING TEST ONLY: a stand-in for `vtensor logits`, used to exercise compare.py before the Swift
forward pass exists. It is not vtensor and proves nothing about vtensor: it runs transformers itself.

Contract it mimics:
  fake_vtensor.py [FAKE OPTIONS] logits --model DIR --backend cpu|cuda --tokens 1,2,3 --out FILE.f32
writes float32 little-endian row-major [number of tokens, vocab_size] logits of a teacher-forced
forward pass over the ids. --backend cpu: fp32 eager. --backend cuda: weights and activations in
bf16 (on a CUDA device when torch sees one, else on the CPU), like an engine that runs in bf16.

FAKE OPTIONS (before the subcommand; also from $FAKE_VTENSOR_ARGS) make it wrong on purpose, to show
that compare.py fails when it should:
  --perturb REL      add seeded Gaussian noise of norm REL * ||logits|| (rel err ~ REL)
  --bug NAME         reproduce a plausible implementation bug (affects only the models it applies to):
                       no-sliding-window   ignore Mistral's sliding_window (full attention)
                       qwen2-window        apply Qwen2's sliding_window although use_sliding_window is false
                       no-rope-scaling     ignore llama3 rope scaling (plain rope with the same theta)
                       no-qkv-bias         drop the q/k/v biases
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models  # noqa: E402

BUGS = ("no-sliding-window", "qwen2-window", "no-rope-scaling", "no-qkv-bias")


def load_with_bug(model_dir: str, dtype, device: str, bug: str | None):
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = AutoConfig.from_pretrained(model_dir)
    raw = json.loads((Path(model_dir) / "config.json").read_text())
    if bug == "no-sliding-window" and cfg.model_type == "mistral":
        cfg.sliding_window = None
    if bug == "qwen2-window" and cfg.model_type == "qwen2" and raw.get("sliding_window"):
        cfg.sliding_window = raw["sliding_window"]
        cfg.use_sliding_window = True
        cfg.layer_types = ["sliding_attention"] * cfg.num_hidden_layers
    if bug == "no-rope-scaling":
        rp = dict(getattr(cfg, "rope_parameters", None) or {})
        if rp.get("rope_type") == "llama3":
            cfg.rope_parameters = {"rope_type": "default", "rope_theta": rp["rope_theta"]}
    model = AutoModelForCausalLM.from_pretrained(model_dir, config=cfg, dtype=dtype, attn_implementation="eager")
    if bug == "no-qkv-bias":
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")):
                    p.zero_()
    return model.to(device).eval()


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = shlex.split(os.environ.get("FAKE_VTENSOR_ARGS", "")) + argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--perturb", type=float, default=0.0)
    ap.add_argument("--bug", choices=BUGS)
    sub = ap.add_subparsers(dest="cmd", required=True)
    lg = sub.add_parser("logits")
    lg.add_argument("--model", required=True)
    lg.add_argument("--backend", choices=["cpu", "cuda"], required=True)
    lg.add_argument("--tokens", required=True)
    lg.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    models.set_determinism()
    ids = [int(t) for t in args.tokens.split(",") if t]
    if args.backend == "cpu":
        model = load_with_bug(args.model, torch.float32, "cpu", args.bug)
    else:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = load_with_bug(args.model, torch.bfloat16, device, args.bug)
    logits = models.forward_logits(model, ids)
    if args.perturb > 0:
        rng = np.random.default_rng(12345)
        noise = rng.standard_normal(logits.shape)
        logits = logits + noise * (args.perturb * np.linalg.norm(logits) / np.linalg.norm(noise))
    logits.astype("<f4").tofile(args.out)
    print(f"fake-vtensor (plumbing test): {len(ids)} x {logits.shape[1]} logits, backend {args.backend}, "
          f"perturb {args.perturb}, bug {args.bug}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
