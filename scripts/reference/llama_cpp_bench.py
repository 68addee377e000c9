#!/usr/bin/env python3
"""llama.cpp CPU speed reference, measured llama-bench style through llama-cpp-python.

Loads a GGUF with llama_cpp.Llama (only for model/context setup) and drives the context with the
low-level API (llama_batch_get_one + llama_decode), so no sampling or Python-side logits work is
timed. Token ids are random (fixed seed) from a safe range of the vocabulary.

Measurements:
  ppP        clear the KV cache, decode a fresh P-token prompt in n_batch chunks; tokens/s.
  tgN@dC     clear the KV cache, decode a C-token prompt (untimed), then time N single-token
             decode steps (context C .. C+N-1); per-step median/mean ms, tokens/s.

Output: one JSON object per measurement (and per repetition) on stdout; a small table on stderr.

  python3 llama_cpp_bench.py --model M.gguf --threads 2 --pp 512,4096 --tg-context 128,4096 --tg-steps 32
"""
import argparse
import ctypes
import json
import os
import platform
import random
import statistics
import sys
import time


def ints(s):
    return [int(x) for x in s.split(",") if x.strip()] if s else []


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2, help="n_threads and n_threads_batch (default 2)")
    ap.add_argument("--pp", type=ints, default=[512, 4096], help="prompt sizes, comma-separated (default 512,4096; '' for none)")
    ap.add_argument("--tg-context", type=ints, default=[128, 4096],
                    help="contexts before the timed decode steps (default 128,4096; '' for none)")
    ap.add_argument("--tg-steps", type=int, default=32, help="timed single-token decode steps (default 32)")
    ap.add_argument("--repeat", type=int, default=1, help="repetitions of each measurement (default 1)")
    ap.add_argument("--n-batch", type=int, default=512)
    ap.add_argument("--n-ubatch", type=int, default=512)
    ap.add_argument("--n-ctx", type=int, default=0, help="default: the largest context needed, rounded up to 256")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--no-warmup", action="store_true", help="skip the warm-up decode (llama-bench does one)")
    ap.add_argument("--flash-attn", choices=["on", "off"], default="off",
                    help="flash attention (default off: llama_cpp.Llama's default, as llama-bench's -fa 0)")
    args = ap.parse_args()

    import llama_cpp  # imported late so --help works without it

    need = max([p for p in args.pp] + [c + args.tg_steps for c in args.tg_context] + [64])
    n_ctx = args.n_ctx or ((need + 255) // 256) * 256
    kwargs = dict(model_path=args.model, n_ctx=n_ctx, n_batch=args.n_batch, n_ubatch=args.n_ubatch,
                  n_threads=args.threads, n_threads_batch=args.threads, logits_all=False, verbose=False,
                  n_gpu_layers=0, seed=args.seed)
    kwargs["flash_attn"] = args.flash_attn == "on"
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(**kwargs)
    load_s = time.perf_counter() - t0
    ctx = llm._ctx.ctx
    vocab = llm.n_vocab()
    lo, hi = (1000, vocab - 1000) if vocab > 4000 else (10, vocab - 10)
    rng = random.Random(args.seed)

    def clear():
        if hasattr(llama_cpp, "llama_get_memory") and hasattr(llama_cpp, "llama_memory_clear"):
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        else:
            llama_cpp.llama_kv_self_clear(ctx)

    def decode(tokens):
        """One llama_decode of `tokens` (at most n_batch); positions follow the KV cache, only the
        last token's logits are computed (batch.logits == NULL)."""
        arr = (llama_cpp.llama_token * len(tokens))(*tokens)
        rc = llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(arr, len(tokens)))
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def prompt(n):
        toks = [rng.randrange(lo, hi) for _ in range(n)]
        for i in range(0, n, args.n_batch):
            decode(toks[i:i + args.n_batch])
        llama_cpp.llama_synchronize(ctx)

    if not args.no_warmup:
        clear(); prompt(min(args.n_batch, 64)); decode([rng.randrange(lo, hi)]); llama_cpp.llama_synchronize(ctx)

    common = dict(tool="llama.cpp", backend="cpu", llama_cpp_python=llama_cpp.__version__, model=os.path.abspath(args.model),
                  threads=args.threads, flash_attn=args.flash_attn, n_ctx=n_ctx, n_batch=args.n_batch, n_ubatch=args.n_ubatch, vocab=vocab,
                  load_seconds=round(load_s, 4), host=platform.node())
    rows = []

    def emit(rec):
        rec = {**common, **rec}
        print(json.dumps(rec), flush=True)
        rows.append(rec)

    for rep in range(args.repeat):
        for p in args.pp:
            clear()
            t = time.perf_counter()
            prompt(p)
            dt = time.perf_counter() - t
            emit(dict(test=f"pp{p}", kind="pp", n_prompt=p, n_gen=0, depth=0, rep=rep, seconds=dt, tokens_per_s=p / dt))
        for c in args.tg_context:
            clear()
            prompt(c)
            steps = []
            for _ in range(args.tg_steps):
                tok = rng.randrange(lo, hi)
                t = time.perf_counter()
                decode([tok])
                llama_cpp.llama_synchronize(ctx)
                steps.append(time.perf_counter() - t)
            med, mean = statistics.median(steps), statistics.fmean(steps)
            emit(dict(test=f"tg{args.tg_steps}@d{c}", kind="tg", n_prompt=c, n_gen=args.tg_steps, depth=c, rep=rep,
                      seconds=sum(steps), step_ms_median=med * 1e3, step_ms_mean=mean * 1e3,
                      step_ms_min=min(steps) * 1e3, step_ms_max=max(steps) * 1e3,
                      tokens_per_s=1 / med, tokens_per_s_mean=1 / mean))

    print(f"llama.cpp (llama-cpp-python {llama_cpp.__version__}), threads {args.threads}, n_ctx {n_ctx}, "
          f"n_batch {args.n_batch}, n_ubatch {args.n_ubatch}", file=sys.stderr)
    print(f"{'test':>14} {'rep':>3} {'tok/s':>10} {'step ms (median)':>17}", file=sys.stderr)
    for r in rows:
        ms = f"{r['step_ms_median']:.3f}" if r["kind"] == "tg" else ""
        print(f"{r['test']:>14} {r['rep']:>3} {r['tokens_per_s']:>10.1f} {ms:>17}", file=sys.stderr)
    del llm


if __name__ == "__main__":
    main()
