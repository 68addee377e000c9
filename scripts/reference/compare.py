#!/usr/bin/env python3
"""Compares vtensor's logits with transformers' on the reference models of models.py.

  python3 compare.py VTENSOR [--backends cpu,cuda] [--models llama3,qwen2,mistral,smollm]
                     [--lengths 17,64,200] [--seed 20251127] [--work DIR] [--out DIR]

VTENSOR is the vtensor binary (or a command line, split like a shell would; a first word ending in
.py runs with this Python). For every model, token sequence and backend it runs
  VTENSOR logits --model MODEL_DIR --backend B --tokens 1,2,3,... --out FILE.f32
and reads FILE.f32 as float32 little-endian row-major [number of tokens, vocab_size]. The reference
is transformers in fp32 with eager attention on the CPU, from the same files, for both backends.

Checks, over all positions of all sequences of a model and backend:
  cpu:  norm-wise relative error ||vtensor - ref|| / ||ref|| < 1e-3
  cuda: top-1 agreement >= 99% of positions, and mean cosine of per-position logits >= 0.999
For cuda rows the table also shows what transformers itself reaches in bf16 against its fp32 run
(same machine; on the GPU when torch sees one), the yardstick for a correct bf16 implementation.

Models are built under --work (default /tmp/vtensor-reference) and reused while their spec is
unchanged. Writes OUT/results.json and OUT/results.md (a table for docs/correctness.md). Exits 1 if
any check fails or vtensor fails to run. Needs python3 with torch, transformers, safetensors and
numpy, and the vtensor binary: no network, no Swift.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models  # noqa: E402

CPU_REL_TOL = 1e-3
CUDA_TOP1_MIN = 0.99
CUDA_COS_MEAN_MIN = 0.999


def vtensor_command(arg: str) -> list[str]:
    words = shlex.split(arg)
    if words and words[0].endswith(".py"):
        words = [sys.executable] + words
    return words


def token_sequences(vocab: int, lengths: list[int], seed: int) -> list[list[int]]:
    return [np.random.default_rng([seed, n]).integers(0, vocab, size=n).tolist() for n in lengths]


def metrics(got: np.ndarray, ref: np.ndarray) -> dict:
    diff = got - ref
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    return {
        "positions": int(ref.shape[0]),
        "sq_err": float((diff ** 2).sum()),
        "sq_ref": float((ref ** 2).sum()),
        "rel_err": float(np.linalg.norm(diff) / np.linalg.norm(ref)),
        "max_abs_err": float(np.abs(diff).max()),
        "top1_agree": int((got.argmax(1) == ref.argmax(1)).sum()),
        "cos": cos.tolist(),
    }


def aggregate(parts: list[dict]) -> dict:
    pos = sum(p["positions"] for p in parts)
    cos = np.concatenate([p["cos"] for p in parts])
    return {
        "positions": pos,
        "rel_err": float(np.sqrt(sum(p["sq_err"] for p in parts) / sum(p["sq_ref"] for p in parts))),
        "max_abs_err": max(p["max_abs_err"] for p in parts),
        "top1": sum(p["top1_agree"] for p in parts) / pos,
        "cos_mean": float(cos.mean()),
        "cos_min": float(cos.min()),
    }


def verdict(backend: str, agg: dict, tol: dict) -> tuple[bool, str]:
    if backend == "cpu":
        ok = agg["rel_err"] < tol["cpu_rel"]
        return ok, f"rel err {agg['rel_err']:.2e} {'<' if ok else '>='} {tol['cpu_rel']:g}"
    ok1 = agg["top1"] >= tol["cuda_top1"]
    ok2 = agg["cos_mean"] >= tol["cuda_cos"]
    why = []
    if not ok1:
        why.append(f"top-1 {agg['top1']:.4f} < {tol['cuda_top1']}")
    if not ok2:
        why.append(f"cosine mean {agg['cos_mean']:.6f} < {tol['cuda_cos']}")
    return ok1 and ok2, "; ".join(why) or "ok"


def run_vtensor(cmd: list[str], model_dir: Path, backend: str, ids: list[int], out_file: Path,
                vocab: int, timeout: float) -> tuple[np.ndarray | None, str, float]:
    if out_file.exists():
        out_file.unlink()
    argv = cmd + ["logits", "--model", str(model_dir), "--backend", backend,
                  "--tokens", ",".join(map(str, ids)), "--out", str(out_file)]
    t0 = time.time()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s", time.time() - t0
    except OSError as e:
        return None, f"could not run {argv[0]}: {e}", time.time() - t0
    dt = time.time() - t0
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
        return None, f"exit {p.returncode}: " + " | ".join(tail), dt
    if not out_file.exists():
        return None, "no output file written", dt
    expected = len(ids) * vocab * 4
    size = out_file.stat().st_size
    if size != expected:
        return None, f"output has {size} bytes, expected {expected} ({len(ids)} x {vocab} float32)", dt
    got = np.fromfile(out_file, dtype="<f4").reshape(len(ids), vocab).astype(np.float64)
    if not np.isfinite(got).all():
        return None, f"{int((~np.isfinite(got)).sum())} non-finite logits", dt
    return got, "", dt


def fmt_row(r: dict) -> str:
    a = r.get("aggregate")
    if a is None:
        return f"| {r['model']} | {r['backend']} | - | - | - | - | - | - | FAIL ({r['reason']}) |"
    base = r.get("hf_bf16")
    base_s = f"{base['top1'] * 100:.1f}% / {base['cos_min']:.5f}" if base else "-"
    return (f"| {r['model']} | {r['backend']} | {a['positions']} | {a['rel_err']:.2e} | {a['top1'] * 100:.1f}% | "
            f"{a['cos_mean']:.6f} | {a['cos_min']:.6f} | {base_s} | {'pass' if r['pass'] else 'FAIL: ' + r['reason']} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("vtensor", help="vtensor binary or command line")
    ap.add_argument("--backends", default="cpu,cuda")
    ap.add_argument("--models", default=",".join(models.SPECS))
    ap.add_argument("--lengths", default="17,64,200")
    ap.add_argument("--seed", type=int, default=20251127)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("VTENSOR_REFERENCE_DIR", "/tmp/vtensor-reference")))
    ap.add_argument("--out", type=Path, default=Path("reference-results"))
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per vtensor invocation")
    ap.add_argument("--no-hf-bf16", action="store_true", help="skip transformers' own bf16 yardstick")
    ap.add_argument("--cpu-rel-tol", type=float, default=CPU_REL_TOL)
    ap.add_argument("--cuda-top1", type=float, default=CUDA_TOP1_MIN)
    ap.add_argument("--cuda-cos", type=float, default=CUDA_COS_MEAN_MIN)
    args = ap.parse_args(argv)

    models.set_determinism()
    cmd = vtensor_command(args.vtensor)
    backends = [b for b in args.backends.split(",") if b]
    names = [m for m in args.models.split(",") if m]
    lengths = [int(x) for x in args.lengths.split(",")]
    tol = {"cpu_rel": args.cpu_rel_tol, "cuda_top1": args.cuda_top1, "cuda_cos": args.cuda_cos}
    for b in backends:
        if b not in ("cpu", "cuda"):
            ap.error(f"unknown backend {b}")
    for n in names:
        if n not in models.SPECS:
            ap.error(f"unknown model {n} (have {', '.join(models.SPECS)})")
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = args.work / "logits"
    scratch.mkdir(parents=True, exist_ok=True)
    bf16_device = "cuda" if torch.cuda.is_available() else "cpu"

    rows, model_info = [], {}
    for name in names:
        model_dir = models.build(name, models.SPECS[name], args.work / "models" / name,
                                 expected_fingerprint=models.EXPECTED_FINGERPRINTS.get(name))
        meta = json.loads((model_dir / "reference.json").read_text())
        ref_model = models.load(model_dir)
        vocab = ref_model.config.vocab_size
        seqs = token_sequences(vocab, lengths, args.seed)
        refs = [models.forward_logits(ref_model, ids) for ids in seqs]
        expected_fp = models.EXPECTED_FINGERPRINTS.get(name)
        model_info[name] = {"dir": str(model_dir), "fingerprint": meta["fingerprint"],
                            "fingerprint_matches_authoring_machine": (expected_fp == meta["fingerprint"]) if expected_fp else None,
                            "vocab_size": vocab, "notes": meta.get("notes", "")}
        hf_bf16 = None
        if "cuda" in backends and not args.no_hf_bf16:
            m16 = models.load(model_dir, dtype=torch.bfloat16, device=bf16_device)
            hf_bf16 = aggregate([metrics(models.forward_logits(m16, ids), r) for ids, r in zip(seqs, refs)])
            del m16
        del ref_model
        for backend in backends:
            row = {"model": name, "backend": backend, "sequences": []}
            parts, failure = [], ""
            for ids, ref in zip(seqs, refs):
                out_file = scratch / f"{name}-{backend}-{len(ids)}.f32"
                got, err, dt = run_vtensor(cmd, model_dir, backend, ids, out_file, vocab, args.timeout)
                if got is None:
                    failure = f"length {len(ids)}: {err}"
                    break
                m = metrics(got, ref)
                parts.append(m)
                cos = np.array(m["cos"])
                row["sequences"].append({"length": len(ids), "seconds": round(dt, 2), "rel_err": m["rel_err"],
                                         "max_abs_err": m["max_abs_err"], "top1": m["top1_agree"] / len(ids),
                                         "cos_mean": float(cos.mean()), "cos_min": float(cos.min())})
            if failure:
                row.update({"pass": False, "reason": failure})
            else:
                row["aggregate"] = aggregate(parts)
                row["pass"], row["reason"] = verdict(backend, row["aggregate"], tol)
                if backend == "cuda":
                    row["hf_bf16"] = hf_bf16
            rows.append(row)
            print(fmt_row(row), flush=True)

    v = models.versions()
    header = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "vtensor": cmd, "host": platform.node(), "python": platform.python_version(), **v,
        "torch_cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "hf_bf16_device": bf16_device if "cuda" in backends and not args.no_hf_bf16 else None,
        "lengths": lengths, "seed": args.seed, "tolerances": tol,
        "reference": "transformers fp32, attn_implementation=eager, CPU",
    }
    all_pass = all(r["pass"] for r in rows)
    (args.out / "results.json").write_text(json.dumps({"run": header, "models": model_info, "results": rows,
                                                         "pass": all_pass}, indent=2) + "\n")
    md = [
        f"Reference: transformers {v['transformers']} / torch {v['torch']}, fp32, eager attention, on the CPU. "
        f"Sequences of {', '.join(map(str, lengths))} token ids (seed {args.seed}), all positions checked.",
        f"cpu passes at rel err < {tol['cpu_rel']:g}; cuda (bf16 weights) at top-1 agreement >= "
        f"{tol['cuda_top1'] * 100:g}% and mean cosine >= {tol['cuda_cos']}. Last column but one: transformers' own bf16 "
        f"run against its fp32 run (top-1 / min cosine), on {bf16_device}.",
        "",
        "| model | backend | positions | rel err | top-1 agreement | cosine mean | cosine min | transformers bf16 | result |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *[fmt_row(r) for r in rows],
        "",
    ]
    (args.out / "results.md").write_text("\n".join(md))
    print(f"\n{'PASS' if all_pass else 'FAIL'}: {sum(r['pass'] for r in rows)}/{len(rows)} rows pass; "
          f"results in {args.out}/results.json and results.md")
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
