# Same-machine anchors for decode attention (issue 3): torch SDPA's cuDNN and FlashAttention
# backends on the shapes of anchors.md, so our kernel can be compared on the very card that ran
# it (anchors.md's H200 figures came from another machine). bf16, head dim 128, one query token a
# request, GQA read natively (enable_gqa); median of 30 CUDA-event timings after warm-up;
# KV bytes = B x L x KV heads x 128 x 2 (K, V) x 2 bytes. Usage: python3 torch_decode_anchor.py
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend
from sdpa_timing import time_backends

SHAPES = [  # name, query heads, KV heads, batch, context
    ("Llama-3-8B 8 x 1k", 32, 8, 8, 1024),
    ("Llama-3-8B 32 x 4k", 32, 8, 32, 4096),
    ("Llama-3-8B 128 x 16k", 32, 8, 128, 16384),
    ("Yi-34B 32 x 4k", 56, 8, 32, 4096),
    ("Llama-2-7B 32 x 4k", 32, 32, 32, 4096),
]
BACKENDS = [("cuDNN", SDPBackend.CUDNN_ATTENTION), ("FlashAttention-2", SDPBackend.FLASH_ATTENTION)]

print(f"device {torch.cuda.get_device_name()}")
print(f"{'shape':24s} {'backend':18s} {'ms':>9s} {'TB/s':>8s}")
for name, hq, hkv, b, l in SHAPES:
    q = torch.randn(b, hq, 1, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(b, hkv, l, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(b, hkv, l, 128, device="cuda", dtype=torch.bfloat16)
    kv_bytes = b * l * hkv * 128 * 2 * 2
    time_backends(name, BACKENDS, lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=hkv != hq), kv_bytes, 1e9, 30, 24)
    del q, k, v
    torch.cuda.empty_cache()
