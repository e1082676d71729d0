// softmax over each row for float32/float16/bfloat16, accumulating in fp32.
// Register-resident kernel (rows up to 8192 vectors): the row is read once into registers, the
// max and the sum of exponentials are group reductions, and the row is written from registers:
// one HBM read and one write per element. Longer rows: an online (max, sum) pass, then a pass
// that re-reads (mostly from L2) and writes.
// Special rows as the reference: NaN anywhere gives a NaN row (the max keeps NaN), all -inf gives
// 0, +inf gives NaN (inf - inf), as the plain formula does.
#include "cuda/kernels.hpp"
#include "cuda/kernels/row_common.cuh"

namespace loraops::cuda {

namespace {

using namespace rows;

template <class T, int V, int NVEC>
__global__ void __launch_bounds__(reg_max_threads(NVEC))
softmax_reg(RowParams p, int tpr) {
  __shared__ float red[kReduceFloats];
  const Group g(tpr);
  int nv = int(p.x.cols / V);  // <= 8192 here
  RowWalk<T> rw(p, g);
  if constexpr (NVEC <= 4) settle(nv), rw.settle();
  wait_then_allow_dependents();  // launched as a programmatic dependent: before any memory access
  int parity = 0;
  for (; rw.more(p); rw.next(p, g)) {
    const bool active = rw.active;
    const T* xr = rw.xr;
    T* yr = rw.yr;
    // Every load of the row in flight before the first use; slots past the row hold -inf, which
    // adds nothing to the max or the sum.
    Vec<T, V> v[NVEC];
#pragma unroll
    for (int k = 0; k < NVEC; ++k) {
      const int c = k * tpr + g.t;
      v[k] = active && c < nv ? load_last<T, V>(vec_ptr<V>(xr, c, p.x.col_stride))
                              : splat<T, V>(-INFINITY);
    }
    float m = -INFINITY;
#pragma unroll
    for (int k = 0; k < NVEC; ++k)
#pragma unroll
      for (int j = 0; j < V; ++j) m = nanmax(m, v[k][j]);
    m = group_reduce(MaxOp{m}, g, red, parity).v;
    launder(v);
    // An all -inf row has no mass anywhere: subtract 0 (exp gives 0s) and scale by 0.
    const bool none = m == -INFINITY;
    const float mm = none ? 0.f : m;
    // Up to 4 vectors per thread (at most 32 floats, 256 threads a block) the exponentials of the
    // sum pass are kept for the write pass: one ex2 per element instead of two (at bf16 the MUFU
    // unit's two would take half the memory time; bf16 16384x4096 went from 3343 to 3467-3546
    // GB/s, H200 2026-11-29). With 8 vectors per thread (up to 1024 threads, 64 registers) they would
    // spill: the write pass computes them again.
    constexpr bool kKeep = keep_fp32_row(NVEC);
    float e[kKeep ? NVEC : 1][V];
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < NVEC; ++k)
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const float ej = exp_diff(v[k][j], mm);
        if constexpr (kKeep) e[k][j] = ej;
        s += ej;
      }
    s = group_reduce(SumOp{s}, g, red, parity).v;
    if constexpr (!kKeep) launder(v);
    const float inv = none ? 0.f : 1.f / s;
#pragma unroll
    for (int k = 0; k < NVEC; ++k) {
      const int c = k * tpr + g.t;
      if (!active || c >= nv) continue;
      float y[V];
#pragma unroll
      for (int j = 0; j < V; ++j) {
        if constexpr (kKeep) y[j] = e[k][j] * inv;
        else y[j] = exp_diff_again(v[k][j], mm) * inv;
      }
      store<T, V>(vec_ptr<V>(yr, c, p.out.col_stride), pack<T, V>(y));
    }
  }
}

// Running (max, sum of exp(x - max)) of part of a row; merges rescale the smaller max's sum.
struct OnlineOp {
  float m, s;
  static constexpr bool kSymmetric = false;  // a.s * e + b.s * e may contract either product
  static __device__ OnlineOp identity() { return {-INFINITY, 0.f}; }
  static __device__ OnlineOp merge(OnlineOp a, OnlineOp b) {
    const float m = nanmax(a.m, b.m);
    if (m == -INFINITY) return {m, 0.f};
    return {m, a.s * exp_diff(a.m, m) + b.s * exp_diff(b.m, m)};
  }
  static __device__ OnlineOp shfl_xor(OnlineOp a, int o) {
    return {__shfl_xor_sync(~0u, a.m, o), __shfl_xor_sync(~0u, a.s, o)};
  }
  static __device__ OnlineOp shfl(OnlineOp a, int src, int width) {
    return {__shfl_sync(~0u, a.m, src, width), __shfl_sync(~0u, a.s, src, width)};
  }
};

// Rows too long for registers; a block per row.
template <class T, int V>
__global__ void __launch_bounds__(kLoopThreads) softmax_loop(RowParams p) {
  wait_then_allow_dependents();  // launched as a programmatic dependent: before any memory access
  __shared__ float red[kReduceFloats];
  const Group g(int(blockDim.x));
  const int64_t nv = p.x.cols / V, step = int64_t(kLoopUnroll) * g.tpr;
  int parity = 0;
  for (int64_t row = blockIdx.x; row < p.x.rows; row += gridDim.x) {
    const T* xr = row_ptr<const T>(p.x, row);
    OnlineOp st = OnlineOp::identity();
    for (int64_t c0 = g.t; c0 < nv; c0 += step) {
      Vec<T, V> v[kLoopUnroll];
#pragma unroll
      for (int u = 0; u < kLoopUnroll; ++u) {
        const int64_t c = c0 + int64_t(u) * g.tpr;
        v[u] = c < nv ? load<T, V>(vec_ptr<V>(xr, c, p.x.col_stride)) : splat<T, V>(-INFINITY);
      }
      float cm = -INFINITY;
#pragma unroll
      for (int u = 0; u < kLoopUnroll; ++u)
#pragma unroll
        for (int j = 0; j < V; ++j) cm = nanmax(cm, v[u][j]);
      const float mn = nanmax(st.m, cm);
      if (mn != -INFINITY) {
        float cs = 0.f;
#pragma unroll
        for (int u = 0; u < kLoopUnroll; ++u)
#pragma unroll
          for (int j = 0; j < V; ++j) cs += exp_diff(v[u][j], mn);
        st.s = st.s * exp_diff(st.m, mn) + cs;
        st.m = mn;
      }
    }
    st = group_reduce(st, g, red, parity);
    const bool none = st.m == -INFINITY;
    const float mm = none ? 0.f : st.m, inv = none ? 0.f : 1.f / st.s;
    T* yr = row_ptr<T>(p.out, row);
    for_row_vectors<T, V, true>(xr, p.x.col_stride, nv, g.t, g.tpr, [&](int64_t c, const Vec<T, V>& v) {
      float y[V];
#pragma unroll
      for (int j = 0; j < V; ++j) y[j] = exp_diff(v[j], mm) * inv;
      store<T, V>(vec_ptr<V>(yr, c, p.out.col_stride), pack<T, V>(y));
    });
  }
}

struct Kernels {
  template <class T, int V, int NVEC, bool> static constexpr auto reg = softmax_reg<T, V, NVEC>;
  template <class T, int V> static constexpr auto loop = softmax_loop<T, V>;
};

}  // namespace

void softmax_custom(const RowParams& p, void* stream) {
  run_row_op<Kernels>(p, stream, "softmax");
}

}  // namespace loraops::cuda
