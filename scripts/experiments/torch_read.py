# The card's read ceiling as torch reaches it (an oracle for scripts/experiments/read_patterns.cu):
# a full reduction over 2 GiB float32 buffers (reads only), four buffers rotated, median of 15.
import torch
bufs = [torch.randn(1 << 29, device="cuda") for _ in range(4)]
def median_ms(fn):
    for i in range(3): fn(i)
    torch.cuda.synchronize()
    times = []
    for r in range(15):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(r); b.record(); b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]
nbytes = bufs[0].numel() * 4
for name, fn in [("torch sum (float32)", lambda r: bufs[r & 3].sum()),
                 ("torch amax (float32)", lambda r: bufs[r & 3].amax())]:
    ms = median_ms(fn)
    print(f"{name:44s} {ms:9.4f} {nbytes / ms / 1e9:8.3f}")
