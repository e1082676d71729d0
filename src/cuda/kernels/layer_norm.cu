// layer_norm over each row, (x - mean) * rsqrt(var + eps) * weight + bias, for float32/float16/
// bfloat16 with fp32 sums and the population variance by a stable method (never E[x^2]-E[x]^2 of
// the raw row; see below for the guarded shifted form).
// Register-resident kernel (rows up to 8192 vectors): the row is read once into registers; the
// mean is one group reduction, the sum of squared deviations from it a second one over the same
// registers (the two-pass formula, at the cost of one extra reduction and no extra traffic). For
// 16-bit rows kept packed (8 vectors a thread: past 8192 elements in 16-byte vectors), rows whose
// shift point x[0] is within 4 standard deviations of the mean take E[u^2] - E[u]^2 of the
// shifted row u = x - x[0] instead, from one reduction (see stats below). float32 rows whose
// threads hold equal parts (up to 4 vectors a thread) reduce once too, each thread's two-pass
// (sum, squared deviations) merged pairwise (kPairwise, group_sum_m2).
// Longer rows: one pass of Welford/Chan merges (per vector, then across threads), then a pass
// that re-reads and writes. Both sum x - x[0] (see stats below); float32 rows and the looped
// kernel subtract the mean from x itself at the write (Mean2).
// A row whose fp32 sums overflow (|x| from ~1e19) is redone scaled by a power of two.
#include "cuda/kernels.hpp"
#include "cuda/kernels/row_common.cuh"

namespace loraops::cuda {

namespace {

using namespace rows;

// Blocks per SM the register-resident kernel is compiled for. Up to 4 vectors a thread on a full
// grid: 4 blocks of 256 threads, i.e. at most 64 registers (bf16 4 vectors: 69 without the cap,
// 7 blocks of 128 per SM instead of 8; ncu found the kernel issue-bound at 7 warps per scheduler,
// 8.9 cycles between a warp's instructions). The holding kernel (kWave) runs one wave: uncapped.
constexpr int layer_norm_min_blocks(int nvec, bool wave) { return nvec <= 4 && !wave ? 4 : 1; }

// 16-bit outputs round at 2^-9 (bf16) or 2^-12 (fp16) of their value: for them the statistics
// and the write take the cheaper forms below, whose extra fp32 roundings stay ~1000x under that.
template <class T> constexpr bool kLeanStats = sizeof(T) == 2;

// (mean - x0)^2 / var up to which the shift point counts as close to the mean: E[u^2] - E[u]^2
// is taken there (16-bit packed rows), and past it the looped kernel's float32 rows sum their
// deviations once more.
constexpr float kShiftGuard = 16.f;

// A row's mean x0 + m + mc (scaled by xs: m the mean of u = x - x0 as one float, mc the mean of
// the deviations from it) as hi + lo (Knuth's two-sum of x0 and m, then mc), and the
// normalisation (x * xs - mean) * r from it: x * xs - hi rounds at 2^-24 of |x - mean| (exactly,
// where x and hi are within a factor 2), not of |x - x0| or |mean|.
struct Mean2 {
  float hi, lo_r, r;  // lo_r = -lo * r
  __device__ float normalize(float x, float xs) const { return fmaf(fmaf(x, xs, -hi), r, lo_r); }
};
__device__ __forceinline__ Mean2 mean_of(float x0s, float m, float mc, float r) {
  const float hi = x0s + m, bp = hi - x0s, lo = (x0s - (hi - bp)) + (m - bp) + mc;
  return {hi, -lo * r, r};
}

// A part of a row: the sum of its u as hi + lo (hi rounded, lo the error terms) and the sum of
// squared deviations from its mean.
struct SumM2 {
  float hi, lo, m2;
};

// Two parts of `side` elements each merged (Chan et al. with equal counts: no division, no
// count): the sums added as two floats (Dekker's fast two-sum from the larger magnitude: the
// rounding error of hi + hi exactly; equal magnitudes give an exact sum whichever is taken), and
// m2a + m2b + (Sb - Sa)^2 / (2 * side). Every operation is symmetric in a and b (the difference
// only changes sign), so both lanes of a butterfly step hold the same bits and the group needs no
// broadcast. (Knuth's two-sum, order-free, measured the same: 1.54 us on the seed shape.)
__device__ __forceinline__ SumM2 merge_equal(SumM2 a, SumM2 b, float inv_2side) {
  const bool ab = fabsf(a.hi) >= fabsf(b.hi);
  const float big = ab ? a.hi : b.hi, small = ab ? b.hi : a.hi;
  const float s = a.hi + b.hi, err = small - (s - big);
  const float d = (b.hi - a.hi) + (b.lo - a.lo);
  return {s, err + (a.lo + b.lo), fmaf(d, d * inv_2side, a.m2 + b.m2)};
}

__device__ __forceinline__ SumM2 shfl_xor(SumM2 a, int o) {
  return {__shfl_xor_sync(~0u, a.hi, o), __shfl_xor_sync(~0u, a.lo, o), __shfl_xor_sync(~0u, a.m2, o)};
}

// The row's SumM2 from each thread's part of `count` elements (every thread of the group the
// same count, tpr a power of two): a butterfly over each warp (three steps at tpr = 64, five
// above), then (tpr > 32) one exchange between the warps and a merge of their states. Every
// thread of the group ends with the same bits. (m2's merge scales d = Sb - Sa before squaring it
// all the way: d * d alone overflows from d ~ 1.8e19, halves whose means differ by ~1e16 at 4096
// columns, where the two-pass sums do not.)
__device__ __forceinline__ SumM2 group_sum_m2(SumM2 s, float count, const Group& g, float* smem, int& parity) {
  // 1 / (2 * the elements on each side of the next merge), halved at each step (a division a
  // step, whose count depends on tpr, cost 0.15 us on the seed shape).
  float inv_2side = 0.5f / count;
  if (g.tpr == 64) {
    // Two warps (the seed shape's rows): three butterfly steps leave four states a warp (lanes
    // 0-3, each of 8 lanes' parts); the eight go through shared memory and every thread merges
    // them in one fixed tree, in place of two more shuffle steps and a merge after the barrier.
#pragma unroll
    for (int o = 16; o >= 4; o >>= 1) {
      s = merge_equal(s, shfl_xor(s, o), inv_2side);
      inv_2side *= 0.5f;
    }
    float4* b4 = reinterpret_cast<float4*>(reduce_slot(smem, parity));
    const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
    if (lane < 4) b4[warp * 4 + lane] = make_float4(s.hi, s.lo, s.m2, 0.f);
    __syncthreads();
    SumM2 t[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float4 v = b4[i];
      t[i] = {v.x, v.y, v.z};
    }
#pragma unroll
    for (int w = 1; w < 8; w *= 2) {
#pragma unroll
      for (int i = 0; i < 8; i += 2 * w) t[i] = merge_equal(t[i], t[i + w], inv_2side);
      inv_2side *= 0.5f;
    }
    return t[0];
  }
  if (g.tpr >= 32) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {  // straight-line code: no branch between the steps
      s = merge_equal(s, shfl_xor(s, o), inv_2side);
      inv_2side *= 0.5f;
    }
  } else {
    for (int o = g.tpr / 2; o > 0; o >>= 1) {
      s = merge_equal(s, shfl_xor(s, o), inv_2side);
      inv_2side *= 0.5f;
    }
    return s;
  }
  if (g.tpr == 32) return s;
  float* buf = reduce_slot(smem, parity);
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5, warps = g.tpr >> 5;
  float4* b4 = reinterpret_cast<float4*>(buf);  // red is 16-byte aligned
  if (lane == 0) b4[warp] = make_float4(s.hi, s.lo, s.m2, 0.f);
  __syncthreads();
  const int i = lane & (warps - 1);
  s = {buf[4 * i], buf[4 * i + 1], buf[4 * i + 2]};
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    if (o >= warps) continue;
    s = merge_equal(s, shfl_xor(s, o), inv_2side);
    inv_2side *= 0.5f;
  }
  return s;
}

template <class T, int V, int NVEC, bool kWave>
__global__ void __launch_bounds__(reg_max_threads(NVEC), layer_norm_min_blocks(NVEC, kWave))
layer_norm_reg(RowParams p, int tpr) {
  // Up to 4 vectors per thread the row is converted once into fp32 registers, shifted (u = x -
  // x[0]), and the three passes (sum, deviations, write) read those: ncu on bf16 65536x1024 counted
  // 23 instructions per element with the row kept packed (three conversions and three shifts per
  // element; the scheduler issued 76% of cycles), against 15 for softmax, which keeps fp32 values.
  // 8 vectors per thread keeps the row packed (keep_fp32_row). A float32 row is its own fp32 copy,
  // kept unshifted: the write subtracts the mean from x itself (see there), and the two statistics
  // passes shift each element again (one fma each): the seed shape [4,16,1024] 2.06 -> 2.11 us in
  // graph replay, 16384x4096 with weight and bias 135.1 -> 135.7 us (H200, 2026-11-30).
  constexpr bool kKeep = keep_fp32_row(NVEC) && !std::is_same_v<T, float>;
  // Weight and bias: loaded at the write, or (kWave: every block resident at once, so registers
  // cost no occupancy) loaded with each row and held in registers (128 of them at bf16 4
  // vectors a thread). Measured when they were loaded once, before the first row (H200,
  // 2026-11-29): loads at the write on a full grid, bf16 16384x4096 76.9 us; holding, on one wave
  // looping over rows, 95.0 us; the seed shape [4,16,1024] fp32 (one wave either way) in graph
  // replay, 2.5 us held, 3.2 us loaded at the write.
  constexpr bool kHold = keep_fp32_row(NVEC) && kWave;
  const Group g(tpr);
  int nv = int(p.x.cols / V);  // <= 8192 here
  const bool equal_parts = nv == NVEC * g.tpr && (g.tpr & (g.tpr - 1)) == 0;  // see kPairwise
  RowWalk<T> rw(p, g);
  if constexpr (kWave) settle(nv), rw.settle();
  wait_then_allow_dependents();  // launched as a programmatic dependent: before any memory access
  RowAffine<T, V, NVEC, kHold> w(p.weight, p.weight_stride, 1.f);
  RowAffine<T, V, NVEC, kHold> b(p.bias, p.bias_stride, 0.f);
  // kPairwise: float32 rows whose threads hold equal parts (every vector slot a column: nv =
  // NVEC * tpr) in a group of a power-of-two threads take the statistics from one reduction of
  // each part's (sum, sum of squared deviations), merged pairwise (Chan et al.), where the
  // two-pass method reduces twice. The mean is as exact as the two-pass one (the sums carried
  // as two floats). The seed shape [4,16,1024] in graph replay: 1.67 -> 1.50 us (H200,
  // 2026-12-01, loraops_latency, each build three times in turn; NOTES.md, session 27). Only in
  // the one-wave kernels (kWave), whose rows wait on the statistics' latency: the full-grid
  // kernels, bandwidth-bound, gained nothing from it and lost 0.2-1.1% (affine fp32 16384x4096
  // 136.1 -> 137.7 us), so their code stays the two-pass one. Not at 8 vectors a thread: its
  // 1024-thread kernel's 64 registers spilled 96 bytes with it (12 without).
  constexpr bool kPairwise = std::is_same_v<T, float> && NVEC <= 4 && kWave;
  // (16-byte aligned for group_sum_m2's float4 states; elsewhere as before, 4: the alignment lets
  // nvcc pair the other reductions' accesses, unmeasured.)
  __shared__ alignas(kPairwise ? 16 : 4) float red[kReduceFloats];
  const float n_f = float(p.x.cols), inv_n = 1.f / n_f;
  int parity = 0;
  for (; rw.more(p); rw.next(p, g)) {
    const bool active = rw.active;
    const T* xr = rw.xr;
    T* yr = rw.yr;
    Vec<T, V> v[NVEC];
    auto load_row = [&](bool last) {
#pragma unroll
      for (int k = 0; k < NVEC; ++k) {
        const int c = k * tpr + g.t;
        const T* q = vec_ptr<V>(xr, c, p.x.col_stride);
        v[k] = !(active && c < nv) ? splat<T, V>(0.f) : last ? load_last<T, V>(q) : load<T, V>(q);
      }
    };
    load_row(true);
    // The shift: every thread reads the row's first element itself (one broadcast load, in flight
    // with the row's) rather than wait for a shuffle or a barrier.
    const float x0 = active ? load<T, 1>(xr)[0] : 0.f;
    // Held weight and bias are loaded with each row (a block of a wave has one row group but where
    // the grid is capped), behind its loads: issued ahead of them, their 2 * NVEC loads delayed
    // the row's (the seed shape's first pass took 1,056 cycles, 758 after them; loaded behind the
    // first row only, under a flag, 1,060; H200, 2026-11-30, bench/probes/layer_norm_phases.cu;
    // in graph replay 1.83 -> 1.67 us). They are waited for at the write.
    w.hold(g.t, tpr, nv), b.hold(g.t, tpr, nv);
    w.refresh();
    b.refresh();
    // u = x * xs - x0 * xs: the row scaled by xs (1, or a power of two for a rescued row) and
    // shifted, held in fp32 (kKeep) or recomputed from the packed row at each use.
    float xs = 1.f, x0s = x0;
    float u[kKeep ? NVEC : 1][V];
    auto fill = [&] {
      if constexpr (kKeep) {
#pragma unroll
        for (int k = 0; k < NVEC; ++k)
#pragma unroll
          for (int j = 0; j < V; ++j) u[k][j] = fmaf(v[k][j], xs, -x0s);
      }
    };
    auto at = [&](int k, int j) {
      if constexpr (kKeep) return u[k][j];
      else return fmaf(v[k][j], xs, -x0s);
    };
    // The statistics as the CPU custom kernel computes them (but for kOneReduction's and
    // kPairwise's rows): the corrected two-pass method on u. The shift keeps data far from zero
    // (1e4 + noise) small and exact, and the mean is x0 + d + c, never rounded to a float near x0;
    // the second pass sums the deviations e = u - d and their squares, whose mean c is the rounding
    // error of d: it corrects the mean and the variance without cancelling. kLeanStats: a thread's
    // sum of deviations is taken from its first-pass sum (s - count * d: one fma a thread, not an
    // add an element), which recovers the rounding of the group's sum and of the division, not that
    // of the thread's own 8-32 additions (an error ~1e-7 of the row's mean deviation). bf16
    // 16384x4096 in loraops_latency, with the write below and the register cap: 74.9 -> 71.2 us
    // (H200, 2026-11-29).
    // kOneReduction: 16-bit rows kept packed (8 vectors a thread) first try the statistics from
    // one reduction. bf16 4096x32768 with weight and bias: 145.1 -> 142.2 us; at 4 vectors a
    // thread (the row in fp32 registers) it lost instead: 16384x4096 70.3 -> 71.6 us (H200,
    // 2026-11-30, loraops_latency, old and new kernels twice each in one call).
    constexpr bool kOneReduction = kLeanStats<T> && !kKeep;
    // The mean of u comes as m + mc: d and the mean of the deviations from it (float32 keeps them
    // apart, see the write); kPairwise: the two floats of the sum, each over n.
    auto stats = [&](float& m, float& mc, float& var) {
      if constexpr (kPairwise) {
        if (equal_parts) {
          // Each thread's part by the corrected two-pass method over its registers (a partial
          // sum a vector: the seed shape 1.54 -> 1.52 us against one chain), then one reduction
          // of (sum as two floats, m2) with equal-count merges.
          constexpr float kCount = float(NVEC * V), kInvCount = 1.f / kCount;  // powers of two
          float sk[NVEC];
#pragma unroll
          for (int k = 0; k < NVEC; ++k) {
            sk[k] = 0.f;
#pragma unroll
            for (int j = 0; j < V; ++j) sk[k] += at(k, j);
          }
          float s = 0.f;
#pragma unroll
          for (int k = 0; k < NVEC; ++k) s += sk[k];
          const float d = s * kInvCount;
          float cek[NVEC], qk[NVEC];
#pragma unroll
          for (int k = 0; k < NVEC; ++k) {
            cek[k] = 0.f, qk[k] = 0.f;
#pragma unroll
            for (int j = 0; j < V; ++j) {
              const float e = at(k, j) - d;
              cek[k] += e;
              qk[k] = fmaf(e, e, qk[k]);
            }
          }
          float ce = 0.f, q = 0.f;
#pragma unroll
          for (int k = 0; k < NVEC; ++k) ce += cek[k], q += qk[k];
          const SumM2 r = group_sum_m2({s, ce, fmaf(-ce, ce * kInvCount, q)}, kCount, g, red, parity);
          // The mean of u as m + mc: m = r.hi / n (exact: n is a power of two here, so the
          // fma's remainder is 0; kept as measured) and mc = r.lo / n. A sum that overflowed is
          // no variance: var = inf sends the row to the rescue, as the two-pass sums' inf - inf
          // would.
          m = r.hi * inv_n;
          mc = (fmaf(-m, n_f, r.hi) + r.lo) * inv_n;
          var = fabsf(r.hi) <= FLT_MAX ? nanmax(r.m2 * inv_n, 0.f) : INFINITY;
          return;
        }
      }
      float s = 0.f, cnt = 0.f, s2 = 0.f;
#pragma unroll
      for (int k = 0; k < NVEC; ++k) {
        if (k * tpr + g.t >= nv) continue;
        cnt += float(V);
#pragma unroll
        for (int j = 0; j < V; ++j) {
          s += at(k, j);
          if constexpr (kOneReduction) s2 = fmaf(at(k, j), at(k, j), s2);
        }
      }
      if constexpr (kOneReduction) {
        // First the shifted sums of u and u^2 in one reduction, var = E[u^2] - E[u]^2 on the
        // shifted row. Its relative error grows with rho = (mean - x0)^2 / var (about 1 + 3 rho
        // times the sums' own rounding error), so it is kept only where x0 lies within 4 standard
        // deviations of the mean (rho <= kShiftGuard: at worst ~2^-12 of the variance from sums
        // of ~74 roundings each, typically far less; under the output's 2^-9 or 2^-12);
        // otherwise (x0 an outlier of its row, a NaN) the exact two-pass statistics below. A row
        // whose sum of squares alone overflows passes with var = inf and is rescued as before.
        // One reduction and one pass over the packed row fewer for ordinary rows.
        const Sum2Op q1 = group_reduce(Sum2Op{s, s2}, g, red, parity);
        if constexpr (!kKeep) launder(v);
        const float d1 = q1.a * inv_n, v1 = fmaf(q1.b, inv_n, -d1 * d1);
        // q1 is the same in every thread of the group, here the whole block (8 vectors a thread:
        // tpr > 32), so the whole block takes the same branch, as its reductions need.
        if (!__any_sync(~0u, !(d1 * d1 <= kShiftGuard * v1))) {
          m = d1, mc = 0.f, var = v1;
          return;
        }
      }
      const float d = group_reduce(SumOp{s}, g, red, parity).v * inv_n;
      if constexpr (!kKeep) launder(v);
      Sum2Op q{0.f, 0.f};
#pragma unroll
      for (int k = 0; k < NVEC; ++k) {
        if (k * tpr + g.t >= nv) continue;
#pragma unroll
        for (int j = 0; j < V; ++j) {
          const float e = at(k, j) - d;
          if constexpr (!kLeanStats<T>) q.a += e;
          q.b = fmaf(e, e, q.b);
        }
      }
      if constexpr (kLeanStats<T>) q.a = fmaf(-cnt, d, s);
      q = group_reduce(q, g, red, parity);
      if constexpr (!kKeep) launder(v);
      const float c = q.a * inv_n;
      m = d, mc = c;
      var = nanmax(fmaf(q.b, inv_n, -c * c), 0.f);
    };
    fill();
    float m, mc, var, eps = p.eps;
    stats(m, mc, var);
    const bool need = active && needs_rescale(var, p.eps);
    if (__any_sync(~0u, need)) {  // the whole warp: the reductions shuffle over all of it
      // Never on ordinary data. The fp32 copy has dropped the row: it is read again (plain loads:
      // nothing has been written yet, even in place).
      if constexpr (kKeep) load_row(false);
      float a = 0.f;
#pragma unroll
      for (int k = 0; k < NVEC; ++k)
#pragma unroll
        for (int j = 0; j < V; ++j) a = nanmax(a, fabsf(v[k][j]));
      a = group_reduce(MaxOp{a}, g, red, parity).v;
      if constexpr (!kKeep) launder(v);  // as after every reduction (ptxas: the same 4-byte spill)
      const bool ok = a > 0.f && a <= FLT_MAX;  // else inf/NaN/0 rows: the plain result is right
      // Rows that need no rescue compute the same statistics again (xs = 1).
      xs = need && ok ? pow2_scale(a) : 1.f;
      x0s = x0 * xs;
      fill();
      stats(m, mc, var);
      eps = p.eps * xs * xs;
    }
    // kLeanStats: (u - m) * r as fma(u, r, -m * r), one instruction less an element; -m * r
    // rounds at ~1e-7 of |m| * r, which is at most sqrt(n) (x0 is in the row): harmless at the
    // 16-bit outputs' 2^-9 / 2^-12.
    // float32: u = x - x0 rounds at 2^-24 of |x - x0|, and m + mc at 2^-24 of |mean - x0|, neither
    // of the order of the spread where x0 is far from the rest of its row (x0 = 60 in a row of
    // [1, 3]: errors of 3e-6 in y); so x minus the mean x0 + m + mc held as two floats (hi + lo),
    // in as many instructions an element.
    const float r = rsqrtf(var + eps), mr = -(m + mc) * r;
    const Mean2 mean2 = mean_of(x0s, m, mc, r);
#pragma unroll
    for (int k = 0; k < NVEC; ++k) {
      const int c = k * tpr + g.t;
      if (!active || c >= nv) continue;
      const Vec<T, V> wk = w.get(k, c), bk = b.get(k, c);
      float y[V];
#pragma unroll
      for (int j = 0; j < V; ++j)
        y[j] = kLeanStats<T> ? fmaf(fmaf(at(k, j), r, mr), wk[j], bk[j])
                             : fmaf(mean2.normalize(v[k][j], xs), wk[j], bk[j]);
      store<T, V>(vec_ptr<V>(yr, c, p.out.col_stride), pack<T, V>(y));
    }
  }
}

// (count, mean, sum of squared deviations) of part of a row; Chan et al.'s pairwise merge.
struct WelfordOp {
  float n, mean, m2;
  static constexpr bool kSymmetric = false;  // the merged mean leans toward a
  static __device__ WelfordOp identity() { return {0.f, 0.f, 0.f}; }
  static __device__ WelfordOp merge(WelfordOp a, WelfordOp b) {
    if (b.n == 0.f) return a;
    if (a.n == 0.f) return b;
    const float n = a.n + b.n, f = b.n / n, d = b.mean - a.mean;
    return {n, fmaf(d, f, a.mean), a.m2 + b.m2 + d * d * a.n * f};
  }
  static __device__ WelfordOp shfl_xor(WelfordOp a, int o) {
    return {__shfl_xor_sync(~0u, a.n, o), __shfl_xor_sync(~0u, a.mean, o),
            __shfl_xor_sync(~0u, a.m2, o)};
  }
  static __device__ WelfordOp shfl(WelfordOp a, int src, int width) {
    return {__shfl_sync(~0u, a.n, src, width), __shfl_sync(~0u, a.mean, src, width),
            __shfl_sync(~0u, a.m2, src, width)};
  }
};

// Rows too long for registers; a block per row.
template <class T, int V>
__global__ void __launch_bounds__(kLoopThreads) layer_norm_loop(RowParams p) {
  wait_then_allow_dependents();  // launched as a programmatic dependent: before any memory access
  __shared__ float red[kReduceFloats];
  const Group g(int(blockDim.x));
  const int64_t nv = p.x.cols / V;
  const Affine<T, V> w(p.weight, p.weight_stride), b(p.bias, p.bias_stride);
  int parity = 0;
  for (int64_t row = blockIdx.x; row < p.x.rows; row += gridDim.x) {
    const T* xr = row_ptr<const T>(p.x, row);
    const float x0 = load<T, 1>(xr)[0];  // the shift, as in the register kernel
    // Welford per vector on (x - x0) * xs, then Chan's merges across the block.
    auto stats = [&](float xs) {
      const float x0s = x0 * xs;
      WelfordOp st = WelfordOp::identity();
      for_row_vectors<T, V, false>(xr, p.x.col_stride, nv, g.t, g.tpr, [&](int64_t, const Vec<T, V>& v) {
        float s = 0.f;
#pragma unroll
        for (int j = 0; j < V; ++j) s += fmaf(v[j], xs, -x0s);
        const float cm = s * (1.f / V);
        float q = 0.f;
#pragma unroll
        for (int j = 0; j < V; ++j) {
          const float d = fmaf(v[j], xs, -x0s) - cm;
          q = fmaf(d, d, q);
        }
        st = WelfordOp::merge(st, {float(V), cm, q});
      });
      return group_reduce(st, g, red, parity);
    };
    WelfordOp st = stats(1.f);
    float xs = 1.f, eps = p.eps;
    if (needs_rescale(st.m2 / st.n, p.eps)) {  // the same in the whole block
      float a = 0.f;
      for_row_vectors<T, V, false>(xr, p.x.col_stride, nv, g.t, g.tpr, [&](int64_t, const Vec<T, V>& v) {
#pragma unroll
        for (int j = 0; j < V; ++j) a = nanmax(a, fabsf(v[j]));
      });
      a = group_reduce(MaxOp{a}, g, red, parity).v;
      if (a > 0.f && a <= FLT_MAX) {
        xs = pow2_scale(a);
        st = stats(xs);
        eps = p.eps * xs * xs;
      }
    }
    const float m = st.mean, r = rsqrtf(st.m2 / st.n + eps), x0s = x0 * xs;
    // float32 rows whose x0 lies far from the mean (more than 4 standard deviations): the mean of u
    // is a float of the order of |mean - x0|, rounded at 2^-24 of that, not of the spread; one more
    // pass sums the deviations from it (as the register kernel's second pass does for every row).
    float mc = 0.f;
    if constexpr (std::is_same_v<T, float>) {
      if (m * m > kShiftGuard * (st.m2 / st.n)) {  // the same in the whole block
        float c = 0.f;
        for_row_vectors<T, V, false>(xr, p.x.col_stride, nv, g.t, g.tpr, [&](int64_t, const Vec<T, V>& v) {
#pragma unroll
          for (int j = 0; j < V; ++j) c += fmaf(v[j], xs, -x0s) - m;
        });
        mc = group_reduce(SumOp{c}, g, red, parity).v / st.n;
      }
    }
    const Mean2 mean2 = mean_of(x0s, m, mc, r);  // as in the register kernel's write
    T* yr = row_ptr<T>(p.out, row);
    for_row_vectors<T, V, true>(xr, p.x.col_stride, nv, g.t, g.tpr, [&](int64_t c, const Vec<T, V>& v) {
      const Vec<T, V> wc = w.load(c, 1.f), bc = b.load(c, 0.f);
      float y[V];
#pragma unroll
      for (int j = 0; j < V; ++j) y[j] = fmaf(mean2.normalize(v[j], xs), wc[j], bc[j]);
      store<T, V>(vec_ptr<V>(yr, c, p.out.col_stride), pack<T, V>(y));
    });
  }
}

struct Kernels {
  // Only a kernel of up to 4 vectors a thread holds weight and bias (kHold): the others are the
  // same kernel either way, which launch_reg then sees.
  template <class T, int V, int NVEC, bool kWave>
  static constexpr auto reg = layer_norm_reg<T, V, NVEC, kWave && keep_fp32_row(NVEC)>;
  template <class T, int V> static constexpr auto loop = layer_norm_loop<T, V>;
};

}  // namespace

void layer_norm_custom(const RowParams& p, void* stream) {
  run_row_op<Kernels>(p, stream, "layer_norm");
}

}  // namespace loraops::cuda
