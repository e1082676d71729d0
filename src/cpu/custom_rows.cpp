// Our CPU row operations: OpenMP-parallel over rows, fp32 accumulation, and inner loops kept to
// simple counted loops over contiguous float arrays so GCC vectorises them at -O3.
//
// Layout: an fp32 row with col_stride 1 is worked on where it lies; any other row (a half dtype,
// a strided or transposed view) is loaded into a per-thread float buffer, computed there and
// stored back. Activation over a fully contiguous tensor is one flat array split across threads.
//
// What keeps the loops vectorisable with GCC's default -ftrapping-math:
// - exp is the backend's branch-free polynomial (exp_le0, fast_exp.hpp), not a call to expf;
//   softmax and sigmoid only ever need exp of a non-positive value;
// - conditionals are bitwise selects (pick, fast_exp.hpp), because GCC will not if-convert a
//   float `?:` whose condition is a float comparison that may trap, and gives up on the loop;
// - float16/bfloat16 are converted by branch-free copies of dtype.hpp's conversions (same bits),
//   not the per-element, branchy load_as_float/store_from_float.
// tanh and gelu keep libm's tanhf/erfcf (scalar calls, exact to ~1 ulp).
//
// The hot loops are compiled twice on x86-64 (GCC's target_clones): for the baseline (SSE2, 4
// floats a vector) and for x86-64-v3 (AVX2 and FMA, 8 a vector); the loader picks the one the
// CPU runs. The build keeps its portable flags.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "cpu/common.hpp"
#include "cpu/fast_exp.hpp"
#include "cpu/kernels.hpp"

namespace loraops::cpu {

// -DLORAOPS_NO_TARGET_CLONES builds the baseline only (to test it on an AVX2 machine).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(LORAOPS_NO_TARGET_CLONES)
#define LORAOPS_HOT __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define LORAOPS_HOT
#endif

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

inline float sigmoid(float x) {
  const float e = exp_le0(-std::fabs(x));  // never overflows
  const float s = 1.f / (1.f + e);
  return pick(x < 0.f, e * s, s);
}

// x * factor with factor -> 0 as x -> -inf: where the factor has reached 0, the result is
// -0 rather than -inf * 0 = NaN (the limit, and what the reference gives).
inline float gated(float x, float factor) { return pick(factor == 0.f, -0.f, x * factor); }

// float16/bfloat16 <-> float: dtype.hpp's conversions, written as selects so these loops
// vectorise.

// n elements p[0], p[stride], ... of dtype t to/from floats.
LORAOPS_HOT void load_span(const void* p, DType t, int64_t stride, int64_t n, float* out) {
  if (t == DType::Float32) {
    const float* f = static_cast<const float*>(p);
    if (stride == 1)
      for (int64_t j = 0; j < n; ++j) out[j] = f[j];
    else
      for (int64_t j = 0; j < n; ++j) out[j] = f[j * stride];
    return;
  }
  const uint16_t* h = static_cast<const uint16_t*>(p);
  if (t == DType::BFloat16) {
    if (stride == 1)
      for (int64_t j = 0; j < n; ++j) out[j] = bf16_to_float(h[j]);
    else
      for (int64_t j = 0; j < n; ++j) out[j] = bf16_to_float(h[j * stride]);
  } else {
    if (stride == 1)
      for (int64_t j = 0; j < n; ++j) out[j] = fp16_to_float(h[j]);
    else
      for (int64_t j = 0; j < n; ++j) out[j] = fp16_to_float(h[j * stride]);
  }
}

LORAOPS_HOT void store_span(void* p, DType t, int64_t stride, int64_t n, const float* in) {
  if (t == DType::Float32) {
    float* f = static_cast<float*>(p);
    if (stride == 1)
      for (int64_t j = 0; j < n; ++j) f[j] = in[j];
    else
      for (int64_t j = 0; j < n; ++j) f[j * stride] = in[j];
    return;
  }
  uint16_t* h = static_cast<uint16_t*>(p);
  if (t == DType::BFloat16) {
    if (stride == 1)
      for (int64_t j = 0; j < n; ++j) h[j] = float_to_bf16(in[j]);
    else
      for (int64_t j = 0; j < n; ++j) h[j * stride] = float_to_bf16(in[j]);
  } else {
    if (stride == 1)
      for (int64_t j = 0; j < n; ++j) h[j] = float_to_fp16(in[j]);
    else
      for (int64_t j = 0; j < n; ++j) h[j * stride] = float_to_fp16(in[j]);
  }
}

// ---- one row (or span) on float arrays; y may be x ----------------------------------------

LORAOPS_HOT void softmax_span(const float* x, float* y, int64_t n) {
  float m = -kInf;
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < n; ++j) m = pick(x[j] > m, x[j], m);  // NaN never wins: see below
  if (m == -kInf) {
    // No finite value and no +inf: all -inf gives zeros; a NaN (skipped by the max) gives a NaN
    // row. Otherwise a NaN reaches the sum through exp(NaN - m) and makes the row NaN there.
    bool has_nan = false;
    for (int64_t j = 0; j < n; ++j) has_nan = has_nan || std::isnan(x[j]);
    const float fill = has_nan ? std::numeric_limits<float>::quiet_NaN() : 0.f;
    for (int64_t j = 0; j < n; ++j) y[j] = fill;
    return;
  }
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    const float e = exp_le0(x[j] - m);  // m = +inf: NaN for every entry, as PyTorch
    y[j] = e;
    sum += e;
  }
  const float inv = 1.f / sum;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) y[j] *= inv;
}

LORAOPS_HOT void rms_norm_span(const float* x, float* y, int64_t n, const float* w, float eps) {
  float ss = 0.f;
#pragma omp simd reduction(+ : ss)
  for (int64_t j = 0; j < n; ++j) ss += x[j] * x[j];
  const float r = 1.f / std::sqrt(ss / float(n) + eps);
  if (w) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] = x[j] * r * w[j];
  } else {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] = x[j] * r;
  }
}

LORAOPS_HOT void layer_norm_span(const float* x, float* y, int64_t n, const float* w,
                                 const float* b, float eps) {
  // The corrected two-pass method, on x - x[0]:
  // - shifting by x[0] keeps data far from zero (1e4 + noise) small and exact, and holds the
  //   mean as x[0] + m instead of rounding it to a float near 1e4 (whose ulp is 1e-3);
  // - pass 1 gives a first mean offset d; pass 2 sums the deviations v = (x - x0) - d and their
  //   squares. Sum(v)/n is the rounding error of d (when the first sum ran one-signed and large)
  //   and corrects both the mean and the variance; it is tiny, so var = Sum(v^2)/n - c^2 does
  //   not cancel. Never E[x^2] - E[x]^2;
  // - the write subtracts the mean from x, not from x - x0 (below).
  const float x0 = n > 0 ? x[0] : 0.f;
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) sum += x[j] - x0;
  const float d = sum / float(n);
  float s1 = 0.f, s2 = 0.f;
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t j = 0; j < n; ++j) {
    const float v = (x[j] - x0) - d;
    s1 += v;
    s2 += v * v;
  }
  const float c = s1 / float(n);
  const float var = std::max(s2 / float(n) - c * c, 0.f);  // max keeps NaN
  const float r = 1.f / std::sqrt(var + eps);
  // The write subtracts the mean x0 + d + c from x itself, the mean held as hi + lo (Knuth's
  // two-sum of x0 and d, then c): x - x0 rounds at 2^-24 of |x - x0| and d at 2^-24 of
  // |mean - x0|, neither of the order of the row's spread where x0 lies far from the rest of its
  // row (x0 = 60 in a row of [1, 3]: errors of ~3e-6); x - hi is exact where x and hi are within a
  // factor 2, and rounds at 2^-24 of |x - mean| otherwise.
  const float hi = x0 + d, bp = hi - x0, lo = (x0 - (hi - bp)) + (d - bp) + c;
  if (w && b) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] = ((x[j] - hi) - lo) * r * w[j] + b[j];
  } else if (w) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] = ((x[j] - hi) - lo) * r * w[j];
  } else if (b) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] = ((x[j] - hi) - lo) * r + b[j];
  } else {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] = ((x[j] - hi) - lo) * r;
  }
}

// Always inlined into activation_span, so it is compiled for each of that function's targets.
template <class F>
[[gnu::always_inline]] inline void map_span(const float* x, float* y, int64_t n, F f) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) y[j] = f(x[j]);
}

LORAOPS_HOT void activation_span(Activation kind, const float* x, float* y, int64_t n) {
  constexpr float kSqrt1_2 = 0.707106781f;
  constexpr float kSqrt2OverPi = 0.797884561f;
  switch (kind) {
    case Activation::Relu:
      return map_span(x, y, n, [](float v) { return pick(v < 0.f, 0.f, v); });  // NaN passes
    case Activation::Sigmoid:
      return map_span(x, y, n, [](float v) { return sigmoid(v); });
    case Activation::Tanh:
      return map_span(x, y, n, [](float v) { return std::tanh(v); });
    case Activation::Gelu:  // x * Phi(x); erfc keeps the left tail accurate where 1+erf cancels
      return map_span(x, y, n, [](float v) { return gated(v, 0.5f * std::erfc(-v * kSqrt1_2)); });
    case Activation::GeluTanh:
      // 0.5 * (1 + tanh(u)) == sigmoid(2u): the same function, without 1 + tanh cancelling
      // for negative x, and with our vectorised exp.
      return map_span(x, y, n, [](float v) {
        const float u = kSqrt2OverPi * (v + 0.044715f * v * v * v);
        return gated(v, sigmoid(2.f * u));
      });
    case Activation::Silu:
      return map_span(x, y, n, [](float v) { return gated(v, sigmoid(v)); });
  }
}

// Rough cost of one element, in flops, for parallel_for's serial cut-off.
int64_t activation_cost(Activation kind) {
  switch (kind) {
    case Activation::Relu: return 1;
    case Activation::Tanh:
    case Activation::Gelu: return 40;  // libm calls
    default: return 20;
  }
}

// ---- drivers ------------------------------------------------------------------------------

// weight/bias as a contiguous float array: the caller's own when it already is one, else
// converted once into `store` (a few KB, before the parallel loop).
const float* as_floats(const void* v, int64_t stride, DType t, int64_t n, std::vector<float>& store) {
  if (!v) return nullptr;
  if (t == DType::Float32 && stride == 1) return static_cast<const float*>(v);
  store.resize(size_t(n));
  load_span(v, t, stride, n, store.data());
  return store.data();
}

// Calls f(src, dst, cols) for every row, in parallel over rows: src/dst point into x/out when
// the row is fp32 with unit col stride, else into a per-thread buffer (loaded before, stored
// after). src and dst may be the same buffer.
template <class F>
void for_each_row(const RowParams& p, int64_t cost_per_elem, F f) {
  const RowsView& xv = p.x;
  const RowsView& ov = p.out;
  const DType t = p.dtype;
  const int64_t n = xv.cols;
  const bool x_direct = t == DType::Float32 && xv.col_stride == 1;
  const bool o_direct = t == DType::Float32 && ov.col_stride == 1;
  parallel_for(xv.rows, n * cost_per_elem, [&](int64_t begin, int64_t end) {
    std::vector<float> buf(x_direct && o_direct ? 0 : size_t(n));
    for (int64_t i = begin; i < end; ++i) {
      const void* xr = at(xv.p, t, xv.row_offset(i));
      void* yr = at(ov.p, t, ov.row_offset(i));
      const float* src = buf.data();
      if (x_direct)
        src = static_cast<const float*>(xr);
      else
        load_span(xr, t, xv.col_stride, n, buf.data());
      float* dst = o_direct ? static_cast<float*>(yr) : buf.data();
      f(src, dst, n);
      if (!o_direct) store_span(yr, t, ov.col_stride, n, buf.data());
    }
  });
}

// A view whose rows lie back to back with unit col stride: one flat array of rows*cols.
bool is_flat(const RowsView& v) {
  int64_t rs = 0;
  return v.col_stride == 1 && v.uniform(&rs) && (v.nlead == 0 || rs == v.cols);
}

}  // namespace

void softmax_custom(const RowParams& p, void*) {
  for_each_row(p, 24, [](const float* x, float* y, int64_t n) { softmax_span(x, y, n); });
}

void rms_norm_custom(const RowParams& p, void*) {
  std::vector<float> ws;
  const float* w = as_floats(p.weight, p.weight_stride, p.dtype, p.x.cols, ws);
  const float eps = p.eps;
  for_each_row(p, 4, [w, eps](const float* x, float* y, int64_t n) {
    rms_norm_span(x, y, n, w, eps);
  });
}

void layer_norm_custom(const RowParams& p, void*) {
  std::vector<float> ws, bs;
  const float* w = as_floats(p.weight, p.weight_stride, p.dtype, p.x.cols, ws);
  const float* b = as_floats(p.bias, p.bias_stride, p.dtype, p.x.cols, bs);
  const float eps = p.eps;
  for_each_row(p, 8, [w, b, eps](const float* x, float* y, int64_t n) {
    layer_norm_span(x, y, n, w, b, eps);
  });
}

void activation_custom(const RowParams& p, void*) {
  const Activation kind = p.kind;
  const int64_t cost = activation_cost(kind);
  if (!is_flat(p.x) || !is_flat(p.out)) {
    for_each_row(p, cost, [kind](const float* x, float* y, int64_t n) {
      activation_span(kind, x, y, n);
    });
    return;
  }
  const int64_t total = p.x.rows * p.x.cols;
  const DType t = p.dtype;
  if (t == DType::Float32) {
    const float* x = static_cast<const float*>(p.x.p);
    float* y = static_cast<float*>(p.out.p);
    parallel_for(total, cost, [&](int64_t begin, int64_t end) {
      activation_span(kind, x + begin, y + begin, end - begin);
    });
    return;
  }
  // Halves: convert through a small on-stack block that stays in L1.
  parallel_for(total, cost, [&](int64_t begin, int64_t end) {
    constexpr int64_t kBlock = 1024;
    float buf[kBlock];
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t len = end - b < kBlock ? end - b : kBlock;
      load_span(at(p.x.p, t, b), t, 1, len, buf);
      activation_span(kind, buf, buf, len);
      store_span(at(p.out.p, t, b), t, 1, len, buf);
    }
  });
}

}  // namespace loraops::cpu
