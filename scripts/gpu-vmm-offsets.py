#!/usr/bin/env python3
"""Asks the CUDA driver directly (ctypes, no torch) which cuMemMap shapes it takes for one
allocation of several 2 MiB chunks: the whole of it, a part from offset 0, a part at an offset,
and the same allocation mapped twice. Prints each call's CUresult and times set access on whole
mappings. Run on the GPU machine: python3 scripts/gpu-vmm-offsets.py"""
import ctypes, time

cu = ctypes.CDLL("libcuda.so.1")
u64, sz = ctypes.c_uint64, ctypes.c_size_t

class Location(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]
class AllocFlags(ctypes.Structure):
    _fields_ = [("compressionType", ctypes.c_ubyte), ("gpuDirectRDMACapable", ctypes.c_ubyte),
                ("usage", ctypes.c_ushort), ("reserved", ctypes.c_ubyte * 4)]
class Prop(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("requestedHandleTypes", ctypes.c_int), ("location", Location),
                ("win32HandleMetaData", ctypes.c_void_p), ("allocFlags", AllocFlags)]
class Access(ctypes.Structure):
    _fields_ = [("location", Location), ("flags", ctypes.c_int)]

def ok(r, what):
    if r != 0:
        name = ctypes.c_char_p()
        cu.cuGetErrorName(r, ctypes.byref(name))
        return f"{what}: {r} {name.value.decode() if name.value else ''}"
    return None

assert cu.cuInit(0) == 0
dev = ctypes.c_int(); cu.cuDeviceGet(ctypes.byref(dev), 0)
ctx = ctypes.c_void_p(); assert cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev) == 0
assert cu.cuCtxSetCurrent(ctx) == 0
drv = ctypes.c_int(); cu.cuDriverGetVersion(ctypes.byref(drv)); print("driver API version", drv.value)

prop = Prop(); prop.type = 1; prop.location.type = 1; prop.location.id = 0
gran = sz(); cu.cuMemGetAllocationGranularity(ctypes.byref(gran), ctypes.byref(prop), 0)
print("granularity", gran.value)
C = 2 << 20
desc = Access(); desc.location.type = 1; desc.location.id = 0; desc.flags = 3

def create(n):
    h = u64(); r = cu.cuMemCreate(ctypes.byref(h), sz(n * C), ctypes.byref(prop), u64(0))
    assert r == 0, r
    return h
def reserve(n):
    p = u64(); r = cu.cuMemAddressReserve(ctypes.byref(p), sz(n * C), sz(C), u64(0), u64(0))
    assert r == 0, r
    return p.value
def try_map(at, size, offset, h):
    r = cu.cuMemMap(u64(at), sz(size), sz(offset), h, u64(0))
    if r: return ok(r, "map")
    r = cu.cuMemSetAccess(u64(at), sz(size), ctypes.byref(desc), sz(1))
    e = ok(r, "setAccess")
    cu.cuMemUnmap(u64(at), sz(size))
    return e

h = create(4); base = reserve(16)
cases = [("whole, offset 0", 4 * C, 0), ("first chunk, offset 0", C, 0), ("first two, offset 0", 2 * C, 0),
         ("second chunk, offset 1 chunk", C, C), ("last two, offset 2 chunks", 2 * C, 2 * C),
         ("middle two, offset 1 chunk", 2 * C, C)]
for name, size, off in cases:
    print(f"  {name:32} -> {try_map(base, size, off, h) or 'OK'}")
# The same allocation mapped twice at once.
r1 = cu.cuMemMap(u64(base), sz(4 * C), sz(0), h, u64(0)); r2 = cu.cuMemMap(u64(base + 4 * C), sz(4 * C), sz(0), h, u64(0))
print(f"  {'mapped twice at once':32} -> {ok(r1, 'first') or ''} {ok(r2, 'second') or 'OK'}")
cu.cuMemUnmap(u64(base), sz(4 * C)); cu.cuMemUnmap(u64(base + 4 * C), sz(4 * C))
cu.cuMemRelease(h)

# Set access on one whole n-chunk allocation against n one-chunk allocations, mapped adjacently.
for n in (1, 16, 128):
    slab = create(n); singles = [create(1) for _ in range(n)]; at = reserve(n)
    whole, per = [], []
    for _ in range(20):
        cu.cuMemMap(u64(at), sz(n * C), sz(0), slab, u64(0))
        t = time.perf_counter(); cu.cuMemSetAccess(u64(at), sz(n * C), ctypes.byref(desc), sz(1)); whole.append(time.perf_counter() - t)
        cu.cuMemUnmap(u64(at), sz(n * C))
        for i, s in enumerate(singles): cu.cuMemMap(u64(at + i * C), sz(C), sz(0), s, u64(0))
        t = time.perf_counter(); cu.cuMemSetAccess(u64(at), sz(n * C), ctypes.byref(desc), sz(1)); per.append(time.perf_counter() - t)
        cu.cuMemUnmap(u64(at), sz(n * C))
    whole.sort(); per.sort()
    print(f"  set access over {n:3} chunks: one allocation {1e6 * whole[10]:8.1f} us, {n} allocations {1e6 * per[10]:8.1f} us (p50)")
    cu.cuMemRelease(slab); [cu.cuMemRelease(s) for s in singles]; cu.cuMemAddressFree(u64(at), sz(n * C))
