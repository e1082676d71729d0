// rms_norm over each row, x * rsqrt(mean(x^2) + eps) * weight, for float32/float16/bfloat16 with
// fp32 sums. Register-resident kernel (rows up to 8192 vectors): the row is read once into
// registers, the sum of squares is one group reduction, and the row is written from registers;
// weight is loaded before the first row's loads and held (across the rows a thread does, when a
// block loops).
// Longer rows: a pass for the sum of squares, then a pass that re-reads (mostly from L2) and
// writes.
// A row whose fp32 sum of squares overflows (|x| from ~1e19) is redone scaled by a power of two,
// so it gives what the fp64 reference gives instead of zeros.
#include "cuda/kernels.hpp"
#include "cuda/kernels/row_common.cuh"

namespace loraops::cuda {

namespace {

using namespace rows;

template <class T, int V, int NVEC>
__global__ void __launch_bounds__(reg_max_threads(NVEC))
rms_norm_reg(RowParams p, int tpr) {
  __shared__ float red[kReduceFloats];
  const Group g(tpr);
  int nv = int(p.x.cols / V);  // <= 8192 here
  RowWalk<T> rw(p, g);
  RowAffine<T, V, NVEC, (NVEC <= 4)> w(p.weight, p.weight_stride, 1.f);
  settle(nv), rw.settle();
  wait_then_allow_dependents();  // launched as a programmatic dependent: before any memory access
  w.hold(g.t, tpr, nv);
  const float inv_n = 1.f / float(p.x.cols);
  int parity = 0;
  for (; rw.more(p); rw.next(p, g)) {
    const bool active = rw.active;
    const T* xr = rw.xr;
    T* yr = rw.yr;
    Vec<T, V> v[NVEC];  // slots past the row hold 0: they add nothing
#pragma unroll
    for (int k = 0; k < NVEC; ++k) {
      const int c = k * tpr + g.t;
      v[k] = active && c < nv ? load_last<T, V>(vec_ptr<V>(xr, c, p.x.col_stride)) : splat<T, V>(0.f);
    }
    w.refresh();  // after the loads: a block's first row does not wait for the weight
    auto sum_sq = [&](float xs) {
      float s = 0.f;
#pragma unroll
      for (int k = 0; k < NVEC; ++k)
#pragma unroll
        for (int j = 0; j < V; ++j) {
          const float x = v[k][j] * xs;
          s = fmaf(x, x, s);
        }
      const float total = group_reduce(SumOp{s}, g, red, parity).v;
      launder(v);
      return total;
    };
    float ss = sum_sq(1.f), xs = 1.f, eps = p.eps;
    const bool need = active && needs_rescale(ss, p.eps);
    if (__any_sync(~0u, need)) {  // the whole warp: the reductions shuffle over all of it
      float a = 0.f;
#pragma unroll
      for (int k = 0; k < NVEC; ++k)
#pragma unroll
        for (int j = 0; j < V; ++j) a = nanmax(a, fabsf(v[k][j]));
      a = group_reduce(MaxOp{a}, g, red, parity).v;
      launder(v);
      const bool ok = a > 0.f && a <= FLT_MAX;  // else inf/NaN/0 rows: the plain result is right
      const float sc = ok ? pow2_scale(a) : 1.f;
      const float ss2 = sum_sq(sc);
      if (need && ok) xs = sc, ss = ss2, eps = p.eps * sc * sc;
    }
    const float r = rsqrtf(ss * inv_n + eps);
#pragma unroll
    for (int k = 0; k < NVEC; ++k) {
      const int c = k * tpr + g.t;
      if (!active || c >= nv) continue;
      const Vec<T, V> wk = w.get(k, c);
      float y[V];
#pragma unroll
      for (int j = 0; j < V; ++j) y[j] = v[k][j] * xs * r * wk[j];
      store<T, V>(vec_ptr<V>(yr, c, p.out.col_stride), pack<T, V>(y));
    }
  }
}

// Rows too long for registers; a block per row.
template <class T, int V>
__global__ void __launch_bounds__(kLoopThreads) rms_norm_loop(RowParams p) {
  wait_then_allow_dependents();  // launched as a programmatic dependent: before any memory access
  __shared__ float red[kReduceFloats];
  const Group g(int(blockDim.x));
  const int64_t nv = p.x.cols / V;
  const Affine<T, V> w(p.weight, p.weight_stride);
  const float inv_n = 1.f / float(p.x.cols);
  int parity = 0;
  for (int64_t row = blockIdx.x; row < p.x.rows; row += gridDim.x) {
    const T* xr = row_ptr<const T>(p.x, row);
    auto sum_sq = [&](float xs) {
      float s = 0.f;
      for_row_vectors<T, V, false>(xr, p.x.col_stride, nv, g.t, g.tpr, [&](int64_t, const Vec<T, V>& v) {
#pragma unroll
        for (int j = 0; j < V; ++j) {
          const float x = v[j] * xs;
          s = fmaf(x, x, s);
        }
      });
      return group_reduce(SumOp{s}, g, red, parity).v;
    };
    float ss = sum_sq(1.f), xs = 1.f, eps = p.eps;
    if (needs_rescale(ss, p.eps)) {  // the same in the whole block
      float a = 0.f;
      for_row_vectors<T, V, false>(xr, p.x.col_stride, nv, g.t, g.tpr, [&](int64_t, const Vec<T, V>& v) {
#pragma unroll
        for (int j = 0; j < V; ++j) a = nanmax(a, fabsf(v[j]));
      });
      a = group_reduce(MaxOp{a}, g, red, parity).v;
      if (a > 0.f && a <= FLT_MAX) {
        xs = pow2_scale(a);
        ss = sum_sq(xs);
        eps = p.eps * xs * xs;
      }
    }
    const float r = rsqrtf(ss * inv_n + eps);
    T* yr = row_ptr<T>(p.out, row);
    for_row_vectors<T, V, true>(xr, p.x.col_stride, nv, g.t, g.tpr, [&](int64_t c, const Vec<T, V>& v) {
      const Vec<T, V> wc = w.load(c, 1.f);
      float y[V];
#pragma unroll
      for (int j = 0; j < V; ++j) y[j] = v[j] * xs * r * wc[j];
      store<T, V>(vec_ptr<V>(yr, c, p.out.col_stride), pack<T, V>(y));
    });
  }
}

struct Kernels {
  template <class T, int V, int NVEC, bool> static constexpr auto reg = rms_norm_reg<T, V, NVEC>;
  template <class T, int V> static constexpr auto loop = rms_norm_loop<T, V>;
};

}  // namespace

void rms_norm_custom(const RowParams& p, void* stream) {
  run_row_op<Kernels>(p, stream, "rms_norm");
}

}  // namespace loraops::cuda
