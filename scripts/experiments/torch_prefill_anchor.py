# Same-machine anchors for prefill attention (issue 3): torch SDPA's FlashAttention-2 and cuDNN
# backends, causal, bf16, head dim 128, on the prefill shapes of `vtensor dev prefill`, so the
# wgmma kernel is compared on the very card that ran it (anchors.md's figures are from another
# H100). GQA read natively (enable_gqa). FLOPs = 4 x query heads x 128 x L^2 / 2 per sequence.
# Median of 20 CUDA-event timings after warm-up. Usage: python3 torch_prefill_anchor.py
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend
from sdpa_timing import time_backends

SHAPES = [  # name, query heads, KV heads, sequences, length
    ("prefill Llama-3-8B 16 x 1k", 32, 8, 16, 1024),
    ("prefill Llama-3-8B 4 x 4k", 32, 8, 4, 4096),
    ("prefill Yi-34B 4 x 4k", 56, 8, 4, 4096),
]
BACKENDS = [("FlashAttention-2", SDPBackend.FLASH_ATTENTION), ("cuDNN", SDPBackend.CUDNN_ATTENTION)]

print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}")
print(f"{'shape':28s} {'backend':18s} {'ms':>9s} {'TFLOP/s':>8s}")
for name, hq, hkv, b, l in SHAPES:
    q = torch.randn(b, hq, l, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(b, hkv, l, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(b, hkv, l, 128, device="cuda", dtype=torch.bfloat16)
    flops = b * 4 * hq * 128 * l * l / 2
    time_backends(name, BACKENDS, lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=hkv != hq), flops, 1e9, 20, 28)
    del q, k, v
    torch.cuda.empty_cache()
