# Timing shared by the torch SDPA anchor scripts (torch_decode_anchor.py, torch_prefill_anchor.py):
# the median of CUDA-event timings after a warm-up, and one line per backend, or the reason a
# backend refused the shape.
import torch
from torch.nn.attention import sdpa_kernel


def median_ms(fn, reps):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def time_backends(name, backends, fn, work, unit_scale, reps, name_width):
    """Prints name, backend, ms and work / time (`unit_scale` turns work per ms into the unit)."""
    for label, backend in backends:
        try:
            with sdpa_kernel(backend):
                ms = median_ms(fn, reps)
            print(f"{name:{name_width}s} {label:18s} {ms:9.4f} {work / ms / unit_scale:8.3f}")
        except Exception as error:
            print(f"{name:{name_width}s} {label:18s} unavailable: {str(error).splitlines()[0][:80]}")
