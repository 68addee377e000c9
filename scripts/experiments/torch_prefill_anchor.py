# Same-machine anchors for prefill attention (issue 3): torch SDPA's FlashAttention-2 and cuDNN
# backends, causal, bf16, head dim 128, on the prefill shapes of `vtensor dev prefill`, so the
# wgmma kernel is compared on the very card that ran it (anchors.md's figures are from another
# H100). GQA read natively (enable_gqa). FLOPs = 4 x query heads x 128 x L^2 / 2 per sequence.
# Median of 20 CUDA-event timings after warm-up. Usage: python3 torch_prefill_anchor.py
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = [  # name, query heads, KV heads, sequences, length
    ("prefill Llama-3-8B 16 x 1k", 32, 8, 16, 1024),
    ("prefill Llama-3-8B 4 x 4k", 32, 8, 4, 4096),
    ("prefill Yi-34B 4 x 4k", 56, 8, 4, 4096),
]
BACKENDS = [("FlashAttention-2", SDPBackend.FLASH_ATTENTION), ("cuDNN", SDPBackend.CUDNN_ATTENTION)]


def median_ms(fn, reps=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}")
print(f"{'shape':28s} {'backend':18s} {'ms':>8s} {'TFLOP/s':>8s}")
for name, hq, hkv, b, l in SHAPES:
    q = torch.randn(b, hq, l, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(b, hkv, l, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(b, hkv, l, 128, device="cuda", dtype=torch.bfloat16)
    flops = b * 4 * hq * 128 * l * l / 2
    for label, backend in BACKENDS:
        try:
            with sdpa_kernel(backend):
                ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=hkv != hq))
            print(f"{name:28s} {label:18s} {ms:8.3f} {flops / ms / 1e9:8.1f}")
        except Exception as error:  # a backend that refuses the shape says why
            print(f"{name:28s} {label:18s} unavailable: {str(error).splitlines()[0][:80]}")
    del q, k, v
    torch.cuda.empty_cache()
