/// CUDA source of batched sampling on the GPU: one CTA per logits row, so a large batch sends
/// back a few words per row instead of its logits.
///
/// Semantics (the same steps as the CPU `Sampler`; `SamplingReference` is the float64 oracle):
/// NaN logits count as minus infinity and plus infinity as the largest float; the logit biases
/// (added in place), then the repetition penalty over the row's seen ids, then presence and frequency over its generated counts
/// (applied in place to the logits); log-probabilities from the penalized logits before
/// temperature; greedy takes the first maximum; sampling keeps the ids whose value is at least
/// the top-k threshold, then at least the top-p threshold (computed over the top-k set), then
/// whose weight exp((x - max) / T) is at least min-p, and draws with the host's uniform u: the
/// first id, walking values from the largest down and equal values by increasing id, whose
/// cumulative weight exceeds u x the kept mass. Ties at a top-k or top-p threshold are all kept
/// (the CPU sampler keeps only as many as it needs); that is the one difference.
///
/// Nothing is sorted. Thresholds are found by radix selection over the order-preserving 32-bit
/// key of each value: three passes over the row (11, 11 and 10 bits), each a histogram of the
/// next digit, in count or in weight, among the ids that share the digits chosen so far. Equal
/// values are then ranked by id with one ordered pass. A row costs about a dozen passes over
/// its logits, which stay in L2.
enum SamplingKernelSource {
    /// Structured output's masks, applied before `vt_sample` in a launch of their own: one CTA per
    /// logits row; a row with a mask (`rowMask[row]` >= 0) gets minus infinity at every id below
    /// `limit` whose bit is clear (bit `id % 64` of word `id / 64` of its mask, `(limit + 63) / 64`
    /// words a mask). `vt_sample` then treats those ids as it treats a bias of minus infinity.
    static let maskText = #"""
extern "C" __global__ void vt_apply_masks(float *__restrict__ logits, int stride, int limit,
                                          const unsigned long long *__restrict__ masks, const int *__restrict__ rowMask) {
    const int m = rowMask[blockIdx.x];
    if (m < 0) return;
    const int words = (limit + 63) / 64;
    const unsigned long long *bits = masks + (size_t)m * (size_t)words;
    float *x = logits + (size_t)blockIdx.x * (size_t)stride;
    for (int i = threadIdx.x; i < limit; i += blockDim.x) {
        if (((bits[i >> 6] >> (i & 63)) & 1ull) == 0ull) x[i] = __int_as_float(0xff800000);
    }
}
"""#

    static let text = #"""
typedef unsigned int u32;

#define THREADS 1024
#define WARPS (THREADS / 32)
#define MAX_ALTERNATIVES 20
#define FULL 0xffffffffu

struct SampleRow {        // 48 bytes, written by the host (GPUSampler.rowBytes)
    float invT;           // 1 / temperature; 0: greedy
    int topK;             // 0: off
    float topP;           // 1: off
    float minP;           // 0: off
    float repetition;     // 1: off
    float presence;
    float frequency;
    float u;              // uniform draw in [0, 1)
    int logprobs;         // -1: none; else alternatives wanted (0 ... 20)
    int penaltyStart;     // into the (id, generated count) pairs
    int penaltyCount;
    int biasCount;        // (id, float bits) pairs right after the row's penalty pairs
};

struct SampleOut {        // 176 bytes (GPUSampler.outBytes)
    int id;
    float logprob;        // of id (when logprobs >= 0)
    int alternatives;     // how many follow
    int unused;
    int altId[MAX_ALTERNATIVES];
    float altLogprob[MAX_ALTERNATIVES];
};

__device__ __forceinline__ float sanitize(float x) {
    if (x != x) return __int_as_float(0xff800000);        // NaN: -inf
    if (x == __int_as_float(0x7f800000)) return 3.402823466e38f;  // +inf: the largest float
    return x;
}
// Order-preserving key: larger value, larger key.
__device__ __forceinline__ u32 key_of(float x) {
    const u32 b = __float_as_uint(x);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float value_of(u32 k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// Calls body(i, value) for this thread's ids (threadIdx.x + k x THREADS, ascending), four
// loads in flight before any is used: one at a time, a pass is bound by L2 latency.
template <typename Body>
__device__ __forceinline__ void for_each_logit(const float *x, int n, Body body) {
    int i = threadIdx.x;
    for (; i + 3 * THREADS < n; i += 4 * THREADS) {
        float v[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) v[u] = x[i + u * THREADS];
#pragma unroll
        for (int u = 0; u < 4; ++u) body(i + u * THREADS, sanitize(v[u]));
    }
    for (; i < n; i += THREADS) body(i, sanitize(x[i]));
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}

struct Shared {
    float hist[2048];
    float red[WARPS];
    int redId[WARPS];
    int counts[THREADS];
    int ids[MAX_ALTERNATIVES + 1];
    float pickAbove;
    int pickDigit;
    int found;
    unsigned long long sorted[THREADS];  // compact path: (~key << 32 | id), ascending
    float cum[THREADS];
    int listCount;
    int cut;
};

__device__ float block_sum(float v, Shared &s) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    if (lane == 0) s.red[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < WARPS ? s.red[lane] : 0.f;
        v = warp_sum(v);
        if (lane == 0) s.red[0] = v;
    }
    __syncthreads();
    const float r = s.red[0];
    __syncthreads();
    return r;
}

// The largest value and its first id.
__device__ void block_argmax(float &v, int &id, Shared &s) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(FULL, v, o);
        const int oi = __shfl_xor_sync(FULL, id, o);
        if (ov > v || (ov == v && oi < id)) { v = ov; id = oi; }
    }
    if (lane == 0) { s.red[warp] = v; s.redId[warp] = id; }
    __syncthreads();
    if (warp == 0) {
        v = lane < WARPS ? s.red[lane] : __int_as_float(0xff800000);
        id = lane < WARPS ? s.redId[lane] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(FULL, v, o);
            const int oi = __shfl_xor_sync(FULL, id, o);
            if (ov > v || (ov == v && oi < id)) { v = ov; id = oi; }
        }
        if (lane == 0) { s.red[0] = v; s.redId[0] = id; }
    }
    __syncthreads();
    v = s.red[0]; id = s.redId[0];
    __syncthreads();
}

// Candidates: key >= lo and, when minP > 0, weight >= minP.
struct Filter {
    u32 lo;
    float mx, invT, minP;
    __device__ __forceinline__ float weight(float x) const { return expf((x - mx) * invT); }
    __device__ __forceinline__ bool keeps(float x, u32 k) const { return k >= lo && (minP <= 0.f || weight(x) >= minP); }
};

// The total amount (count, or weight when MASS) of the candidates.
template <bool MASS>
__device__ float candidate_total(const float *x, int n, const Filter &f, Shared &s) {
    float t = 0.f;
    for_each_logit(x, n, [&](int, float v) { if (f.keeps(v, key_of(v))) t += MASS ? f.weight(v) : 1.f; });
    return block_sum(t, s);
}

// Radix selection: the key kappa such that the candidates' amount (count, or weight when MASS)
// strictly above kappa has not passed `target` and the amount at or above it has ("passed":
// >= target, or > target when strict). Returns kappa; `above` gets the amount strictly above it.
// When rounding leaves no crossing, the smallest candidate key.
template <bool MASS>
__device__ u32 radix_select(const float *x, int n, const Filter &f, float target, bool strict, float &above, Shared &s) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    u32 prefix = 0, mask = 0;
    float acc = 0.f;
    for (int pass = 0; pass < 3; ++pass) {
        const int shift = pass == 0 ? 21 : pass == 1 ? 10 : 0, bins = pass == 2 ? 1024 : 2048;
        for (int b = threadIdx.x; b < bins; b += THREADS) s.hist[b] = 0.f;
        __syncthreads();
        for_each_logit(x, n, [&](int, float v) {
            const u32 k = key_of(v);
            if ((k & mask) != prefix || !f.keeps(v, k)) return;
            const int bin = (k >> shift) & (bins - 1);
            if (MASS) {
                // Weights are at most 1 (the maximum's); below 2^-40 their sum over the whole
                // vocabulary stays under float rounding of the total, so skip the atomic.
                const float w = f.weight(v);
                if (w >= 9.094947e-13f) atomicAdd(&s.hist[bin], w);
            } else {
                // Neighbouring ids often share a bin: one atomic per bin per warp.
                const u32 peers = __match_any_sync(__activemask(), bin);
                if ((threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&s.hist[bin], (float)__popc(peers));
            }
        });
        __syncthreads();
        if (warp == 0) {
            // Lane l scans bins from the top: bins - 1 - (l * per + j).
            const int per = bins / 32;
            float sum = 0.f;
            for (int j = 0; j < per; ++j) sum += s.hist[bins - 1 - (lane * per + j)];
            float before = sum;  // inclusive scan, then exclusive
            for (int o = 1; o < 32; o <<= 1) {
                const float t = __shfl_up_sync(FULL, before, o);
                if (lane >= o) before += t;
            }
            before -= sum;
            const float r = target - acc;
            const bool passedBefore = strict ? before > r : before >= r;
            const bool passedAfter = strict ? before + sum > r : before + sum >= r;
            const u32 crossing = __ballot_sync(FULL, !passedBefore && passedAfter);
            const u32 nonempty = __ballot_sync(FULL, sum > 0.f);
            int owner; bool fallback = false;
            if (crossing) owner = __ffs(crossing) - 1;
            else { owner = nonempty ? 31 - __clz(nonempty) : 31; fallback = true; }
            if (lane == owner) {
                float c = before;
                int digit = -1, last = -1;
                float lastAbove = before;
                for (int j = 0; j < per; ++j) {
                    const int b = bins - 1 - (lane * per + j);
                    const float h = s.hist[b];
                    if (h > 0.f) { last = b; lastAbove = c; }
                    if (!fallback && (strict ? c + h > r : c + h >= r)) { digit = b; break; }
                    c += h;
                }
                if (digit < 0) { digit = last >= 0 ? last : 0; c = last >= 0 ? lastAbove : c; }
                s.pickDigit = digit;
                s.pickAbove = c;
            }
        }
        __syncthreads();
        acc += s.pickAbove;
        prefix |= (u32)s.pickDigit << shift;
        mask |= (u32)(bins - 1) << shift;
        __syncthreads();
    }
    above = acc;
    return prefix;
}

// Writes the ids whose key equals `key` (and that pass the filter), ranked by increasing id,
// with rank in [from, to) into s.ids[rank - from]. Returns how many match in all.
__device__ int ranked_matches(const float *x, int n, u32 key, const Filter &f, int from, int to, Shared &s) {
    const int chunk = (n + THREADS - 1) / THREADS;
    const int lo = threadIdx.x * chunk, hi = min(n, lo + chunk);
    int count = 0;
    int i = lo;
    for (; i + 3 < hi; i += 4) {
        float v[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) v[u] = sanitize(x[i + u]);
#pragma unroll
        for (int u = 0; u < 4; ++u) count += key_of(v[u]) == key && f.keeps(v[u], key);
    }
    for (; i < hi; ++i) {
        const float v = sanitize(x[i]);
        count += key_of(v) == key && f.keeps(v, key);
    }
    s.counts[threadIdx.x] = count;
    __syncthreads();
    // Exclusive scan of the counts (1024 of them) by warp 0, 32 per lane.
    if (threadIdx.x < 32) {
        int local = 0;
        for (int j = 0; j < 32; ++j) local += s.counts[threadIdx.x * 32 + j];
        int incl = local;
        for (int o = 1; o < 32; o <<= 1) {
            const int t = __shfl_up_sync(FULL, incl, o);
            if (threadIdx.x >= o) incl += t;
        }
        int run = incl - local;
        for (int j = 0; j < 32; ++j) {
            const int c = s.counts[threadIdx.x * 32 + j];
            s.counts[threadIdx.x * 32 + j] = run;
            run += c;
        }
        if (threadIdx.x == 31) s.found = incl;
    }
    __syncthreads();
    int rank = s.counts[threadIdx.x];
    if (rank < to && rank + count > from) {
        for (int i = lo; i < hi && rank < to; ++i) {
            const float v = sanitize(x[i]);
            if (key_of(v) == key && f.keeps(v, key)) {
                if (rank >= from) s.ids[rank - from] = i;
                ++rank;
            }
        }
    }
    __syncthreads();
    const int total = s.found;
    __syncthreads();
    return total;
}

__device__ float block_inclusive_scan(float v, Shared &s) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 1; o < 32; o <<= 1) {
        const float t = __shfl_up_sync(FULL, v, o);
        if (lane >= o) v += t;
    }
    if (lane == 31) s.red[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float w = s.red[lane];
        for (int o = 1; o < 32; o <<= 1) {
            const float t = __shfl_up_sync(FULL, w, o);
            if (lane >= o) w += t;
        }
        s.red[lane] = w;
    }
    __syncthreads();
    if (warp > 0) v += s.red[warp - 1];
    __syncthreads();
    return v;
}

// The ids whose key is at least `lo`, sorted by value descending then id ascending into
// s.sorted (padded with ~0). Returns how many, or -1 when more than THREADS.
__device__ int gather_sorted(const float *x, int n, u32 lo, Shared &s) {
    s.sorted[threadIdx.x] = ~0ull;
    if (threadIdx.x == 0) s.listCount = 0;
    __syncthreads();
    for_each_logit(x, n, [&](int i, float v) {
        const u32 k = key_of(v);
        if (k >= lo) {
            const int slot = atomicAdd(&s.listCount, 1);
            if (slot < THREADS) s.sorted[slot] = ((unsigned long long)(~k) << 32) | (u32)i;
        }
    });
    __syncthreads();
    const int count = s.listCount;
    __syncthreads();
    if (count > THREADS) return -1;
    for (int size = 2; size <= THREADS; size <<= 1) {   // bitonic sort, ascending
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            const int i = threadIdx.x, j = i ^ stride;
            if (j > i) {
                const unsigned long long a = s.sorted[i], b = s.sorted[j];
                if ((a > b) == ((i & size) == 0)) { s.sorted[i] = b; s.sorted[j] = a; }
            }
            __syncthreads();
        }
    }
    return count;
}

__device__ __forceinline__ float sorted_value(const Shared &s, int i) { return value_of(~(u32)(s.sorted[i] >> 32)); }

// The draw on a short list: when top-k keeps at most THREADS ids, or the THREADS most likely
// ids hold top-p's share of the mass (usual for real distributions), or the vocabulary is that
// small, the candidates go to shared memory sorted, and top-p, min-p and the draw are prefix
// scans there. Returns the pick, or -1 (the caller takes the general path). `count` gets the
// list's length (for the alternatives), or -1.
__device__ int compact_draw(const float *x, int n, const SampleRow &p, float mx, Shared &s, int &count) {
    count = -1;
    const Filter all = {0u, mx, p.invT, 0.f};
    u32 lo = 0;
    float massRef = -1.f;  // top-p's reference mass; < 0: the list's own
    float above;
    if (p.topK > 0 && p.topK < n && p.topK <= THREADS) {
        lo = radix_select<false>(x, n, all, (float)p.topK, false, above, s);
    } else if (n <= THREADS) {
        lo = 0;
    } else if (p.topP < 1.f) {
        Filter f = all;
        if (p.topK > 0 && p.topK < n) f.lo = radix_select<false>(x, n, f, (float)p.topK, false, above, s);
        massRef = candidate_total<true>(x, n, f, s);
        lo = radix_select<false>(x, n, f, (float)THREADS, false, above, s);
        const Filter head = {lo, mx, p.invT, 0.f};
        if (candidate_total<true>(x, n, head, s) < p.topP * massRef) return -1;  // the cut lies past the head
    } else {
        return -1;
    }
    count = gather_sorted(x, n, lo, s);
    if (count < 0) return -1;
    const int i = threadIdx.x;
    const float w = i < count ? expf((sorted_value(s, i) - mx) * p.invT) : 0.f;
    const float c = block_inclusive_scan(w, s);
    s.cum[i] = c;
    if (i == 0) s.cut = count - 1;
    __syncthreads();
    int keep = count;
    if (p.topP < 1.f) {
        const float target = p.topP * (massRef >= 0.f ? massRef : s.cum[THREADS - 1]);
        if (i < count && c >= target) atomicMin(&s.cut, i);
        __syncthreads();
        const float edge = sorted_value(s, s.cut);  // keep the ties of the id where the mass is reached
        __syncthreads();
        if (i == 0) s.cut = 0;
        __syncthreads();
        if (i < count && sorted_value(s, i) >= edge) atomicMax(&s.cut, i + 1);
        __syncthreads();
        keep = s.cut;
        __syncthreads();
    }
    if (p.minP > 0.f) {
        if (i == 0) s.cut = 1;  // the most likely id weighs 1 >= min-p
        __syncthreads();
        if (i < keep && w >= p.minP) atomicMax(&s.cut, i + 1);
        __syncthreads();
        keep = s.cut;
        __syncthreads();
    }
    const float target = p.u * s.cum[keep - 1];
    if (i == 0) s.cut = keep - 1;
    __syncthreads();
    if (i < keep && c > target) atomicMin(&s.cut, i);
    __syncthreads();
    const int id = (int)(u32)s.sorted[s.cut];
    __syncthreads();
    return id;
}

extern "C" __global__ void __launch_bounds__(THREADS, 1)
vt_sample(float *__restrict__ logits, int stride, int limit, const SampleRow *__restrict__ rows,
          const int2 *__restrict__ penalties, SampleOut *__restrict__ out) {
    __shared__ Shared s;
    const SampleRow p = rows[blockIdx.x];
    float *x = logits + (size_t)blockIdx.x * stride;
    const int n = limit;
    SampleOut *o = out + blockIdx.x;

    // Biases, then penalties, in place: within each list every id is distinct.
    for (int e = threadIdx.x; e < p.biasCount; e += THREADS) {
        const int2 q = penalties[p.penaltyStart + p.penaltyCount + e];
        if (q.x < 0 || q.x >= n) continue;
        x[q.x] = sanitize(x[q.x]) + __int_as_float(q.y);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < p.penaltyCount; e += THREADS) {
        const int2 q = penalties[p.penaltyStart + e];
        if (q.x < 0 || q.x >= n) continue;
        float v = x[q.x];
        if (p.repetition != 1.f) v = v < 0.f ? v * p.repetition : v / p.repetition;
        if (q.y > 0) v -= p.presence + p.frequency * (float)q.y;
        x[q.x] = v;
    }
    __syncthreads();

    float mx = __int_as_float(0xff800000);
    int top = 0x7fffffff;
    for_each_logit(x, n, [&](int i, float v) { if (v > mx) { mx = v; top = i; } });  // ids ascend: the first maximum stays
    block_argmax(mx, top, s);
    if (!(mx > __int_as_float(0xff800000))) {  // no finite logit
        if (threadIdx.x == 0) { o->id = 0; o->logprob = __int_as_float(0xff800000); o->alternatives = 0; }
        return;
    }

    float logZ = 0.f;
    if (p.logprobs >= 0) {
        float t = 0.f;
        for_each_logit(x, n, [&](int, float v) { t += expf(v - mx); });
        logZ = mx + logf(block_sum(t, s));
    }
    int id = top, listCount = -1;
    if (p.invT > 0.f) id = compact_draw(x, n, p, mx, s, listCount);
    if (id < 0) {
        Filter f = {0u, mx, p.invT, 0.f};
        if (p.topK > 0 && p.topK < n) {
            float above;
            f.lo = radix_select<false>(x, n, f, (float)p.topK, false, above, s);
        }
        if (p.topP < 1.f) {
            const float massK = candidate_total<true>(x, n, f, s);
            float above;
            f.lo = radix_select<true>(x, n, f, p.topP * massK, false, above, s);
        }
        f.minP = p.minP;
        const float mass = candidate_total<true>(x, n, f, s);
        const float target = p.u * mass;
        float above;
        const u32 kappa = radix_select<true>(x, n, f, target, true, above, s);
        const float w = f.weight(value_of(kappa));
        int j = w > 0.f ? (int)floorf((target - above) / w) : 0;
        const int ties = ranked_matches(x, n, kappa, f, 0, 0, s);
        j = max(0, min(j, ties - 1));
        ranked_matches(x, n, kappa, f, j, j + 1, s);
        id = s.ids[0];
    }
    if (p.logprobs >= 0) {
        const int want = min(min(p.logprobs, MAX_ALTERNATIVES), n);
        int have = 0;
        if (want > 0 && listCount >= want) {  // the draw's sorted list holds them
            if (threadIdx.x < want) {
                const int id = (int)(u32)s.sorted[threadIdx.x];
                o->altId[threadIdx.x] = id;
                o->altLogprob[threadIdx.x] = sanitize(x[id]) - logZ;
            }
        } else if (want > 0) {
            const Filter all = {0u, mx, 1.f, 0.f};
            float above = 0.f;
            const u32 kappa = radix_select<false>(x, n, all, (float)want, false, above, s);
            // Ids above the threshold (fewer than `want`), collected in any order, then the
            // lowest-id ties at it.
            if (threadIdx.x == 0) s.found = 0;
            __syncthreads();
            for_each_logit(x, n, [&](int i, float v) {
                if (key_of(v) > kappa) {
                    const int slot = atomicAdd(&s.found, 1);
                    if (slot < MAX_ALTERNATIVES) o->altId[slot] = i;
                }
            });
            __syncthreads();
            have = min(s.found, want);
            __syncthreads();
            ranked_matches(x, n, kappa, all, 0, want - have, s);
            if (threadIdx.x == 0) {
                for (int j = 0; have + j < want; ++j) o->altId[have + j] = s.ids[j];
                // Sort (value descending, id ascending): at most 20 entries.
                for (int a = 1; a < want; ++a) {
                    const int id = o->altId[a];
                    const float v = sanitize(x[id]);
                    int b = a - 1;
                    while (b >= 0) {
                        const float w = sanitize(x[o->altId[b]]);
                        if (w > v || (w == v && o->altId[b] < id)) break;
                        o->altId[b + 1] = o->altId[b];
                        --b;
                    }
                    o->altId[b + 1] = id;
                }
                for (int a = 0; a < want; ++a) o->altLogprob[a] = sanitize(x[o->altId[a]]) - logZ;
            }
        }
        if (threadIdx.x == 0) o->alternatives = want;
    } else if (threadIdx.x == 0) {
        o->alternatives = 0;
    }

    if (threadIdx.x == 0) {
        o->id = id;
        o->logprob = p.logprobs >= 0 ? sanitize(x[id]) - logZ : 0.f;
    }
}
"""#
}
