#!/usr/bin/env python3
"""Reference models for checking vtensor's forward pass against Hugging Face transformers.

Each model is a spec (architecture, config keys, seed, weight scales). `build()` instantiates the
transformers class, overwrites every parameter with values drawn from numpy's PCG64 generator
seeded by (spec seed, parameter name), saves with save_pretrained(safe_serialization=True), then
rewrites config.json where the spec asks for it (legacy rope keys as real checkpoints spell them, a
Qwen2 sliding_window that must be ignored). References are always computed from a model re-loaded
from the saved directory, so the files on disk are exactly what produced the numbers.

Weights do not come from transformers' own initializers: their order and formulas change between
releases, while a per-name seeded numpy stream does not, so the same spec gives the same tensors on
this machine (transformers 5.24) and on the GPU machine (5.17). `fingerprint()` hashes the tensors;
EXPECTED_FINGERPRINTS holds the values seen when the specs were written (a mismatch is a warning:
the comparison itself never depends on it, since the reference is recomputed where it runs).

Usage:
  python3 models.py --out DIR [--models llama3,qwen2,...] [--check]
    builds (or reuses) DIR/<name>/ and prints fingerprints; --check also runs the self-checks
    (sliding window honoured with its exact reach, Qwen2 window ignored, llama3 scaling active).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import zlib
from pathlib import Path

import numpy as np
import torch

SCRIPT_VERSION = 1  # bump when build() changes what it writes for an unchanged spec


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()


def set_determinism(threads: int | None = None) -> None:
    quiet_transformers()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if threads:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# Specs. "config" goes to the transformers config class; "legacy_rope" rewrites config.json with
# top-level rope_theta/rope_scaling (as Llama 3.x and SmolLM2 checkpoints do) instead of
# transformers 5's rope_parameters; "config_patch" is merged into config.json after saving and
# "config_drop" removes keys. "init" sets the weight scales (see init_weights).
# ---------------------------------------------------------------------------------------------

DEFAULT_INIT = {
    "embed_std": 1.0,        # token embeddings (untied)
    "logit_std": 4.0,        # target std of the logits: lm_head rows get std logit_std/sqrt(hidden)
    "row_scale_sigma": 0.0,  # log-normal spread of lm_head row norms (heavy-tailed logits)
    "qk_gain": 1.5,          # q/k projections: std qk_gain/sqrt(fan_in) -> attention scores of std ~gain^2
    "gain": 1.0,             # other projections: std gain/sqrt(fan_in)
    "norm_std": 0.1,         # RMSNorm weights: 1 + N(0, norm_std)
    "bias_std": 0.3,         # q/k/v biases when present
    # Confident predictions (see README): for a fraction succ_frac of tokens x, lm_head row d(x)
    # (d a seeded permutation) gets + succ_boost * logit_std / sqrt(hidden) along x's unit
    # embedding, so after x the successor d(x) usually leads the Gaussian bulk by several logits.
    "succ_frac": 0.0,
    "succ_boost": 0.0,
    # Tied embeddings: rows of std embed_std, and the final norm's weights scaled down so the
    # logits keep std ~logit_std; the residual then carries the current token's own row strongly.
    "tied_embed_std": None,
}

# The agreement models' bf16 check asks for >= 99% top-1 agreement. A purely random model's logits
# are a Gaussian bulk whose top two are often closer than bf16's error (a plain bf16 run of
# transformers agrees on only ~93-96% of positions), so the agreement models are made confident
# the way trained models are: untied ones get successor rows (a token predicts one next token);
# tied ones carry the current token's row strongly in the residual. The Gaussian bulk, which
# depends on the whole context, still dominates the logit norms that rel err and cosine measure.
CONFIDENT = {"succ_frac": 0.98, "succ_boost": 20.0}

SPECS: dict[str, dict] = {
    # Llama 3.x shape: GQA 8/2, head dim 64, llama3 RoPE scaling with a small original context so
    # positions 0..200 span the unscaled, smoothed and scaled frequency bands; untied; eos a list.
    "llama3": {
        "arch": "LlamaForCausalLM",
        "seed": 1001,
        "config": dict(
            vocab_size=16000, hidden_size=512, intermediate_size=1408, num_hidden_layers=4,
            num_attention_heads=8, num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-5,
            max_position_embeddings=1024, tie_word_embeddings=False, bos_token_id=1,
            eos_token_id=[2, 8, 9],
            rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                                 high_freq_factor=4.0, original_max_position_embeddings=64),
        ),
        "legacy_rope": True,
        "init": CONFIDENT,
        "notes": "GQA 8q/2kv, head_dim 64, llama3 rope (factor 8, low 1, high 4, original 64, theta 5e5) "
                 "written as legacy rope_theta + rope_scaling, untied, eos_token_id a list",
    },
    # Qwen2/2.5 shape: q/k/v biases, eps 1e-6, theta 1e6, sliding_window present but
    # use_sliding_window false (max_window_layers 0, so the gate alone decides): must be ignored.
    "qwen2": {
        "arch": "Qwen2ForCausalLM",
        "seed": 1002,
        "config": dict(
            vocab_size=12000, hidden_size=384, intermediate_size=1024, num_hidden_layers=4,
            num_attention_heads=6, num_key_value_heads=2, rms_norm_eps=1e-6,
            max_position_embeddings=1024, tie_word_embeddings=False, bos_token_id=None, eos_token_id=11,
            use_sliding_window=False, max_window_layers=0,
            rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
        ),
        "config_patch": {"sliding_window": 32},
        "config_drop": ["layer_types"],
        "init": CONFIDENT,
        "notes": "q/k/v biases, rms_norm_eps 1e-6, theta 1e6, head_dim 64 (384/6), GQA 6/2, "
                 "sliding_window 32 with use_sliding_window false: full attention",
    },
    # Mistral shape with a window shorter than the test sequences, and an explicit head_dim (128)
    # that differs from hidden/heads (512/8 = 64), as in Mistral NeMo.
    "mistral": {
        "arch": "MistralForCausalLM",
        "seed": 1003,
        "config": dict(
            vocab_size=8000, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
            num_attention_heads=8, num_key_value_heads=2, head_dim=128, rms_norm_eps=1e-5,
            max_position_embeddings=1024, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
            sliding_window=24,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        ),
        "init": CONFIDENT,
        "notes": "sliding_window 24 (query i sees keys i-23..i), explicit head_dim 128 != 512/8, GQA 8/2",
    },
    # SmolLM2-135M shape, fewer layers: 9 heads / 3 KV heads, head dim 64, tied embeddings.
    "smollm": {
        "arch": "LlamaForCausalLM",
        "seed": 1004,
        "config": dict(
            vocab_size=24576, hidden_size=576, intermediate_size=1536, num_hidden_layers=4,
            num_attention_heads=9, num_key_value_heads=3, rms_norm_eps=1e-5,
            max_position_embeddings=2048, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
            rope_parameters=dict(rope_type="default", rope_theta=100000.0),
        ),
        "legacy_rope": True,
        "init": {"tied_embed_std": 0.6},
        "notes": "SmolLM2 shape (9q/3kv, head_dim 64, hidden 576, FFN 1536, theta 1e5), tied embeddings "
                 "(no lm_head.weight in the file), legacy rope_theta with rope_scaling null",
    },
}

# Fingerprints seen on the machine that wrote the specs (numpy 2.4, torch 2.15, transformers 5.24).
EXPECTED_FINGERPRINTS: dict[str, str] = {
    "llama3": "25e267725255135a",
    "qwen2": "f57428348560612e",
    "mistral": "9b5af5fa0c032c54",
    "smollm": "77c6c4156bf5e0c6",
}


def spec_hash(spec: dict) -> str:
    blob = json.dumps({"spec": spec, "script": SCRIPT_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([seed, zlib.crc32(name.encode())]))


def init_weights(model: torch.nn.Module, seed: int, init: dict) -> None:
    """Overwrite every parameter with a deterministic draw chosen by its name."""
    cfg = model.config
    hidden = cfg.hidden_size
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied lm_head is deduplicated away
            rng = _rng(seed, name)
            shape = tuple(p.shape)
            if name.endswith("embed_tokens.weight"):
                std = init["embed_std"]
                if tied:
                    std = init["tied_embed_std"] or init["logit_std"] / np.sqrt(hidden)
                w = rng.standard_normal(shape) * std
                if tied and init["row_scale_sigma"] > 0:
                    w *= np.exp(init["row_scale_sigma"] * _rng(seed, name + "#rows").standard_normal((shape[0], 1)))
            elif name.endswith("lm_head.weight"):
                w = rng.standard_normal(shape) * (init["logit_std"] / np.sqrt(hidden))
                if init["row_scale_sigma"] > 0:
                    w *= np.exp(init["row_scale_sigma"] * _rng(seed, name + "#rows").standard_normal((shape[0], 1)))
            elif name.endswith("norm.weight"):
                w = 1.0 + rng.standard_normal(shape) * init["norm_std"]
                if tied and init["tied_embed_std"] and name == "model.norm.weight":
                    w *= init["logit_std"] / (init["tied_embed_std"] * np.sqrt(hidden))
            elif name.endswith(".bias"):
                w = rng.standard_normal(shape) * init["bias_std"]
            elif name.endswith(("q_proj.weight", "k_proj.weight")):
                w = rng.standard_normal(shape) * (init["qk_gain"] / np.sqrt(shape[1]))
            elif name.endswith(".weight") and len(shape) == 2:
                w = rng.standard_normal(shape) * (init["gain"] / np.sqrt(shape[1]))
            else:
                raise ValueError(f"no init rule for parameter {name} {shape}")
            p.copy_(torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)))
        if init["succ_frac"] > 0 and not tied:
            emb = model.get_input_embeddings().weight
            head = model.get_output_embeddings().weight
            vocab = emb.shape[0]
            rng = _rng(seed, "#successors")
            succ = rng.permutation(vocab)
            chosen = np.nonzero(rng.random(vocab) < init["succ_frac"])[0]
            e = emb[torch.from_numpy(chosen)]
            unit = e / e.norm(dim=1, keepdim=True)
            scale = init["succ_boost"] * init["logit_std"] / np.sqrt(hidden)
            head[torch.from_numpy(succ[chosen])] += (scale * unit).to(head.dtype)


def _config_class(arch: str):
    import transformers
    model_cls = getattr(transformers, arch)
    return model_cls, model_cls.config_class


def make_config(spec: dict):
    _, cfg_cls = _config_class(spec["arch"])
    kw = copy.deepcopy(spec["config"])
    kw.setdefault("initializer_range", 0.1)
    try:
        return cfg_cls(**kw)
    except TypeError:
        # transformers 4.x: rope_parameters did not exist; spell it the old way
        rp = kw.pop("rope_parameters", None) or {}
        kw["rope_theta"] = rp.get("rope_theta", 10000.0)
        if rp.get("rope_type", "default") != "default":
            kw["rope_scaling"] = {k: v for k, v in rp.items() if k != "rope_theta"}
        return cfg_cls(**kw)


def _rewrite_config(path: Path, spec: dict) -> None:
    cfg = json.loads(path.read_text())
    if spec.get("legacy_rope"):
        rp = cfg.pop("rope_parameters", None) or spec["config"]["rope_parameters"]
        rp = dict(rp)
        cfg["rope_theta"] = rp.pop("rope_theta")
        cfg["rope_scaling"] = None if rp.get("rope_type", "default") == "default" else rp
    for k in spec.get("config_drop", []):
        cfg.pop(k, None)
    cfg.update(spec.get("config_patch", {}))
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def fingerprint(model_dir: Path) -> str:
    from safetensors.numpy import load_file
    tensors = load_file(str(Path(model_dir) / "model.safetensors"))
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{t.dtype}|{t.shape}|".encode())
        h.update(np.ascontiguousarray(t).tobytes())
    return h.hexdigest()[:16]


def versions() -> dict:
    import transformers
    return {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__}


def build(name: str, spec: dict, out_dir: Path, reuse: bool = True, expected_fingerprint: str | None = None) -> Path:
    """Writes out_dir/ (config.json, model.safetensors, generation_config.json if any,
    reference.json); reuses an existing build of the same spec. Warns when the weights' fingerprint
    differs from expected_fingerprint (for SPECS: EXPECTED_FINGERPRINTS[name])."""
    out_dir = Path(out_dir)
    meta_path = out_dir / "reference.json"
    sh = spec_hash(spec)
    if reuse and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("spec_hash") == sh and (out_dir / "model.safetensors").exists():
            return out_dir
    set_determinism()
    model_cls, _ = _config_class(spec["arch"])
    config = make_config(spec)
    model = model_cls(config).to(torch.float32).eval()
    init_weights(model, spec["seed"], {**DEFAULT_INIT, **spec.get("init", {})})
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    _rewrite_config(out_dir / "config.json", spec)
    meta = {"name": name, "arch": spec["arch"], "spec_hash": sh, "seed": spec["seed"],
            "fingerprint": fingerprint(out_dir), "built_with": versions(), "notes": spec.get("notes", "")}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    expected = expected_fingerprint
    if expected and expected != meta["fingerprint"]:
        print(f"warning: {name}: weights fingerprint {meta['fingerprint']} differs from the one the "
              f"specs were written with ({expected}); comparisons stay valid (the reference is "
              f"recomputed here) but the weights are not the same as on the authoring machine",
              file=sys.stderr)
    return out_dir


def load(model_dir: Path, dtype=torch.float32, device: str = "cpu"):
    """Loads a saved reference model for inference: eager attention, the given dtype."""
    from transformers import AutoModelForCausalLM
    try:
        m = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype, attn_implementation="eager")
    except TypeError:  # transformers 4.x
        m = AutoModelForCausalLM.from_pretrained(str(model_dir), torch_dtype=dtype, attn_implementation="eager")
    return m.to(device).eval()


@torch.no_grad()
def forward_logits(model, ids: list[int]) -> np.ndarray:
    """Teacher-forced logits [len(ids), vocab] as float64 numpy (computed in the model's dtype)."""
    dev = next(model.parameters()).device
    x = torch.tensor([ids], dtype=torch.long, device=dev)
    out = model(input_ids=x, use_cache=False)
    return out.logits[0].to(torch.float64).cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Self-checks of what the reference actually computes.
# ---------------------------------------------------------------------------------------------

def receptive_field_check(model, window: int, length: int, seed: int = 7) -> dict:
    """With a window of W keys (query i sees i-W+1..i) and L layers, position p depends on token 0
    exactly when p <= L*(W-1). Changing token 0 must move logits up to that position and leave every
    later one bit-identical; this pins both that the window is applied and its exact reach."""
    layers = model.config.num_hidden_layers
    reach = layers * (window - 1)
    assert length > reach + 1, "sequence too short to see the window's reach"
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, model.config.vocab_size, size=length).tolist()
    ids2 = list(ids)
    ids2[0] = (ids[0] + 1) % model.config.vocab_size
    a, b = forward_logits(model, ids), forward_logits(model, ids2)
    changed = np.abs(a - b).max(axis=1) > 0
    last_changed = int(np.nonzero(changed)[0].max())
    return {"window": window, "layers": layers, "expected_last_changed": reach,
            "last_changed": last_changed, "ok": last_changed == reach}


def check_model(name: str, model_dir: Path) -> list[str]:
    """Returns a list of problems (empty when the reference behaves as the spec intends)."""
    problems = []
    model = load(model_dir)
    cfg = model.config
    raw = json.loads((Path(model_dir) / "config.json").read_text())
    length = 2 * cfg.num_hidden_layers * 32 + 8
    if cfg.model_type == "mistral":
        r = receptive_field_check(model, cfg.sliding_window, length)
        if not r["ok"]:
            problems.append(f"{name}: sliding window reach {r}")
    if cfg.model_type == "qwen2" and raw.get("sliding_window"):
        if getattr(cfg, "sliding_window", None) is not None:
            problems.append(f"{name}: transformers kept sliding_window {cfg.sliding_window} with use_sliding_window false")
        rng = np.random.default_rng(3)
        ids = rng.integers(3, cfg.vocab_size, size=raw["sliding_window"] * 3).tolist()
        ids2 = list(ids)
        ids2[0] = (ids[0] + 1) % cfg.vocab_size
        d = np.abs(forward_logits(model, ids) - forward_logits(model, ids2)).max(axis=1)
        if not d[-1] > 0:
            problems.append(f"{name}: last position does not see token 0: window applied?")
    rp = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if (raw.get("rope_scaling") or raw.get("rope_parameters") or {}).get("rope_type") == "llama3":
        if rp.get("rope_type") != "llama3":
            problems.append(f"{name}: llama3 rope scaling not picked up: {rp}")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--models", default=",".join(SPECS))
    ap.add_argument("--rebuild", action="store_true", help="ignore existing builds")
    ap.add_argument("--check", action="store_true", help="run the self-checks after building")
    args = ap.parse_args(argv)
    set_determinism()
    bad = []
    for name in args.models.split(","):
        d = build(name, SPECS[name], args.out / name, reuse=not args.rebuild,
                  expected_fingerprint=EXPECTED_FINGERPRINTS.get(name))
        meta = json.loads((d / "reference.json").read_text())
        size = (d / "model.safetensors").stat().st_size
        print(f"{name:8s} {d}  {size / 2**20:7.1f} MiB  fingerprint {meta['fingerprint']}")
        if args.check:
            p = check_model(name, d)
            print("   check:", "ok" if not p else "; ".join(p))
            bad += p
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
