// The float GEMM engine: packing, the micro-kernel (baseline and AVX2+FMA copies) and the
// blocked driver `chain` (see custom_gemm.hpp for the design).
//
// a*b + c may become one FMA in this file (GCC in ISO C++ mode turns contraction off by
// default; Clang contracts within an expression already): that is what the kernels' inner loops
// are made of. Nothing here depends on the rounding of a separate multiply.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
#endif

#include "cpu/custom_gemm.hpp"

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

namespace loraops::cpu::gemm {

namespace {

// ---- packing -----------------------------------------------------------------------------------

template <DType T>
inline float cvt(const void* p, int64_t i) {
  if constexpr (T == DType::Float32)
    return static_cast<const float*>(p)[i];
  else if constexpr (T == DType::Float16)
    return fp16_to_float(static_cast<const uint16_t*>(p)[i]);
  else
    return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
}

template <class F>
void with_dtype(DType t, F&& f) {
  switch (t) {
    case DType::Float32:
      f(std::integral_constant<DType, DType::Float32>{});
      break;
    case DType::Float16:
      f(std::integral_constant<DType, DType::Float16>{});
      break;
    case DType::BFloat16:
      f(std::integral_constant<DType, DType::BFloat16>{});
      break;
  }
}

// Pack `lines` (<= width) lines of `depth` elements into dst[l*width + line], zero-padding the
// lines up to `width`. Line u starts at element off_line[u], step l is at off_depth(l) from it.
// Walks whichever way the source is contiguous: along the depth when a line is a unit-stride run
// (rows of x, rows of the weight), across the lines otherwise (transposed views).
template <DType T>
void pack_lines(const Src& s, bool lines_are_i, int64_t first_line, int lines, int width,
                int64_t l0, int64_t depth, float* dst, float mul) {
  int64_t off_line[NR > MR ? NR : MR];
  for (int u = 0; u < lines; ++u)
    off_line[u] = lines_are_i ? s.off_i(first_line + u) : s.off_j(first_line + u);
  const RowsView* depth_rows = lines_are_i ? s.rows_j : s.rows_i;
  const int64_t depth_stride = lines_are_i ? s.sj : s.si;
  const int64_t line_stride = lines_are_i ? s.si : s.sj;
  const bool depth_first = !depth_rows && (lines == 1 || std::abs(depth_stride) <= 1 ||
                                           std::abs(depth_stride) < std::abs(line_stride));
  if (depth_first) {
    for (int u = 0; u < lines; ++u) {
      const int64_t base = off_line[u] + l0 * depth_stride;
      float* d = dst + u;
      if (depth_stride == 1)
        for (int64_t l = 0; l < depth; ++l) d[l * width] = mul * cvt<T>(s.p, base + l);
      else
        for (int64_t l = 0; l < depth; ++l)
          d[l * width] = mul * cvt<T>(s.p, base + l * depth_stride);
    }
  } else {
    // Lines one element apart (a row-major B, the rows of a transposed A): a plain copy per l.
    const RowsView* line_rows = lines_are_i ? s.rows_i : s.rows_j;
    const bool unit_lines = !line_rows && line_stride == 1;
    for (int64_t l = 0; l < depth; ++l) {
      const int64_t o = depth_rows ? depth_rows->row_offset(l0 + l) : (l0 + l) * depth_stride;
      float* d = dst + l * width;
      if (unit_lines) {
        const int64_t b = o + off_line[0];
        for (int u = 0; u < lines; ++u) d[u] = mul * cvt<T>(s.p, b + u);
      } else {
        for (int u = 0; u < lines; ++u) d[u] = mul * cvt<T>(s.p, o + off_line[u]);
      }
    }
  }
  if (lines < width)
    for (int64_t l = 0; l < depth; ++l)
      for (int u = lines; u < width; ++u) dst[l * width + u] = 0.f;
}

// ---- the micro-kernel ----------------------------------------------------------------------

// Vectors of W floats through GCC's vector extensions (Clang has them too): explicit SIMD
// without intrinsics, lowered to whatever the target has (AVX2 ymm in the AVX2 copy, SSE/NEON
// registers in the baseline). GCC's auto-vectoriser was tried first and spilled accumulators or
// left part of the tile scalar depending on the row count; this form compiles to the textbook
// loop: per step of l, NR/W loads of b, one broadcast of a per row, R*NR/W FMAs.
template <int W>
struct Vec;
template <>
struct Vec<4> {
  typedef float type __attribute__((vector_size(16)));
};
template <>
struct Vec<8> {
  typedef float type __attribute__((vector_size(32)));
};

// One step of l for R rows: ac[i] += a[i] * b[0..NR).
template <int R, int W>
LORAOPS_INLINE void step(typename Vec<W>::type (&ac)[R][NR / W], const float* a, const float* b) {
  using V = typename Vec<W>::type;
  V bv[NR / W];
  for (int v = 0; v < NR / W; ++v) std::memcpy(&bv[v], b + v * W, sizeof(V));
  for (int i = 0; i < R; ++i) {
    const V ai = a[i] - V{};                                  // a broadcast (x - 0 folds to x)
    for (int v = 0; v < NR / W; ++v) ac[i][v] += ai * bv[v];  // one FMA where there is one
  }
}

// acc (R x NR floats) lives in registers: 6 x 16 is 12 AVX2 accumulators, plus 2 for b and one
// broadcast. With 1 or 2 rows there are too few independent FMAs to hide their latency, so
// S sets of accumulators take turns over consecutive l and are summed at the end.
template <int R, int W>
LORAOPS_INLINE void tile(int64_t kc, const float* __restrict a, const float* __restrict b,
                         int64_t ldb, float* __restrict c, int64_t ldc, bool accumulate) {
  using V = typename Vec<W>::type;
  constexpr int NV = NR / W, S = R == 1 ? 4 : R == 2 ? 2 : 1;
  V acc[S][R][NV] = {};
  int64_t l = 0;
  for (; l + S <= kc; l += S)
    for (int s = 0; s < S; ++s) step<R, W>(acc[s], a + (l + s) * MR, b + (l + s) * ldb);
  for (; l < kc; ++l) step<R, W>(acc[0], a + l * MR, b + l * ldb);
  for (int s = 1; s < S; ++s)
    for (int i = 0; i < R; ++i)
      for (int v = 0; v < NV; ++v) acc[0][i][v] += acc[s][i][v];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v) {
      float* cp = c + i * ldc + v * W;
      V cv = acc[0][i][v];
      if (accumulate) {
        V old;
        std::memcpy(&old, cp, sizeof(V));
        cv += old;
      }
      std::memcpy(cp, &cv, sizeof(V));
    }
}

template <int W>
LORAOPS_INLINE void micro_any(int rows, int64_t kc, const float* a, const float* b, int64_t ldb,
                              float* c, int64_t ldc, bool accumulate) {
  switch (rows) {
    case 1:
      tile<1, W>(kc, a, b, ldb, c, ldc, accumulate);
      break;
    case 2:
      tile<2, W>(kc, a, b, ldb, c, ldc, accumulate);
      break;
    case 3:
      tile<3, W>(kc, a, b, ldb, c, ldc, accumulate);
      break;
    case 4:
      tile<4, W>(kc, a, b, ldb, c, ldc, accumulate);
      break;
    case 5:
      tile<5, W>(kc, a, b, ldb, c, ldc, accumulate);
      break;
    default:
      tile<MR, W>(kc, a, b, ldb, c, ldc, accumulate);
      break;
  }
}

// The baseline copy: 8-wide vectors when the build already targets AVX, else 4-wide (SSE2,
// NEON).
#if defined(__AVX__)
constexpr int kBaseWidth = 8;
#else
constexpr int kBaseWidth = 4;
#endif

void micro_base(int rows, int64_t kc, const float* a, const float* b, int64_t ldb, float* c,
                int64_t ldc, bool accumulate) {
  micro_any<kBaseWidth>(rows, kc, a, b, ldb, c, ldc, accumulate);
}

#if LORAOPS_AVX2_CLONE
LORAOPS_TARGET_AVX2 void micro_avx2(int rows, int64_t kc, const float* a, const float* b,
                                    int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  micro_any<8>(rows, kc, a, b, ldb, c, ldc, accumulate);
}
#endif

// ---- the dot kernel (few rows against weight rows read in place) ---------------------------

// out[i*ldo + u] = sum_l x[i*ldx + l] * w[u][l] for i < R, u < NW: R rows of x against NW
// contiguous weight rows, W floats at a time, R*NW vector accumulators (<= 8), summed across
// the vector at the end.
template <int R, int NW, int W>
LORAOPS_INLINE void dot_tile(int64_t k, const float* __restrict x, int64_t ldx,
                             const float* const* w, float* __restrict out, int64_t ldo) {
  using V = typename Vec<W>::type;
  V acc[R][NW] = {};
  int64_t l = 0;
  for (; l + W <= k; l += W) {
    V wv[NW];
    for (int u = 0; u < NW; ++u) std::memcpy(&wv[u], w[u] + l, sizeof(V));
    for (int i = 0; i < R; ++i) {
      V xv;
      std::memcpy(&xv, x + i * ldx + l, sizeof(V));
      for (int u = 0; u < NW; ++u) acc[i][u] += xv * wv[u];
    }
  }
  for (int i = 0; i < R; ++i)
    for (int u = 0; u < NW; ++u) {
      float s = 0.f;
      for (int e = 0; e < W; ++e) s += acc[i][u][e];
      for (int64_t t = l; t < k; ++t) s += x[i * ldx + t] * w[u][t];
      out[i * ldo + u] = s;
    }
}

// R rows of x against nw weight rows: four at a time for one or two rows of x, else two (the
// accumulators must stay in registers).
template <int R, int W>
LORAOPS_INLINE void dot_rows(int nw, int64_t k, const float* x, int64_t ldx, const float* const* w,
                             float* out, int64_t ldo) {
  int u = 0;
  if constexpr (R <= 2)
    for (; u + 4 <= nw; u += 4) dot_tile<R, 4, W>(k, x, ldx, w + u, out + u, ldo);
  for (; u + 2 <= nw; u += 2) dot_tile<R, 2, W>(k, x, ldx, w + u, out + u, ldo);
  if (u < nw) dot_tile<R, 1, W>(k, x, ldx, w + u, out + u, ldo);
}

template <int W>
LORAOPS_INLINE void dots_any(int rows, int nw, int64_t k, const float* x, int64_t ldx,
                             const float* const* w, float* out, int64_t ldo) {
  for (int i = 0; i < rows; i += 4) {
    const float* xi = x + i * ldx;
    float* oi = out + i * ldo;
    switch (rows - i) {
      case 1:
        dot_rows<1, W>(nw, k, xi, ldx, w, oi, ldo);
        break;
      case 2:
        dot_rows<2, W>(nw, k, xi, ldx, w, oi, ldo);
        break;
      case 3:
        dot_rows<3, W>(nw, k, xi, ldx, w, oi, ldo);
        break;
      default:
        dot_rows<4, W>(nw, k, xi, ldx, w, oi, ldo);
        break;
    }
  }
}

void dots_base(int rows, int nw, int64_t k, const float* x, int64_t ldx, const float* const* w,
               float* out, int64_t ldo) {
  dots_any<kBaseWidth>(rows, nw, k, x, ldx, w, out, ldo);
}

#if LORAOPS_AVX2_CLONE
LORAOPS_TARGET_AVX2 void dots_avx2(int rows, int nw, int64_t k, const float* x, int64_t ldx,
                                   const float* const* w, float* out, int64_t ldo) {
  dots_any<8>(rows, nw, k, x, ldx, w, out, ldo);
}
#endif

using DotsFn = void (*)(int, int, int64_t, const float*, int64_t, const float* const*, float*,
                        int64_t);

DotsFn pick_dots() {
#if LORAOPS_AVX2_CLONE
  if (use_avx2()) return dots_avx2;
#endif
  return dots_base;
}

using MicroFn = void (*)(int, int64_t, const float*, const float*, int64_t, float*, int64_t, bool);

MicroFn pick_micro() {
#if LORAOPS_AVX2_CLONE
  if (use_avx2()) return micro_avx2;
#endif
  return micro_base;
}

int max_threads(bool parallel) {
#if defined(_OPENMP)
  return parallel ? omp_get_max_threads() : 1;
#else
  (void)parallel;
  return 1;
#endif
}

// Per-thread scratch that grows and is kept: packed panels of a large weight are tens of MB, and
// fresh allocations that size cost a page fault per 4 KB on every call. Uninitialised: every
// float the kernels read from it they wrote first. Slot 0 is for the calling thread's shared
// panels, slot 1 for one work item's buffers (the same thread may hold both).
float* scratch(int slot, size_t n) {
  struct Buf {
    std::unique_ptr<float[]> p;
    size_t n = 0;
  };
  thread_local Buf bufs[2];
  Buf& b = bufs[slot];
  if (b.n < n) {
    b.p.reset();  // free first: the old and new buffers need not both fit
    b.p.reset(new float[n]);
    b.n = n;
  }
  return b.p.get();
}

// parallel_for, or the plain loop when the caller is already one of many parallel workers.
template <class F>
void maybe_parallel(bool parallel, int64_t n, int64_t cost, F&& body) {
  if (parallel)
    parallel_for(n, cost, body);
  else
    body(int64_t(0), n);
}

}  // namespace

bool use_avx2() {
#if LORAOPS_AVX2_CLONE
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return yes;
#else
  return false;
#endif
}

void pack_a(const Src& s, int64_t i0, int nrows, int64_t l0, int64_t kc, float* dst, float mul) {
  with_dtype(s.t, [&](auto T) {
    pack_lines<decltype(T)::value>(s, true, i0, nrows, MR, l0, kc, dst, mul);
  });
}

void pack_b(const Src& s, int64_t l0, int64_t kc, int64_t j0, int ncols, float* dst) {
  with_dtype(s.t, [&](auto T) {
    pack_lines<decltype(T)::value>(s, false, j0, ncols, NR, l0, kc, dst, 1.f);
  });
}

void load_row(const Src& s, int64_t i, int64_t depth, float* dst) {
  with_dtype(s.t,
             [&](auto T) { pack_lines<decltype(T)::value>(s, true, i, 1, 1, 0, depth, dst, 1.f); });
}
void load_col(const Src& s, int64_t j, int64_t depth, float* dst) {
  with_dtype(
      s.t, [&](auto T) { pack_lines<decltype(T)::value>(s, false, j, 1, 1, 0, depth, dst, 1.f); });
}

void micro(int rows, int64_t kc, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc,
           bool accumulate) {
  static const MicroFn fn = pick_micro();
  fn(rows, kc, a, b, ldb, c, ldc, accumulate);
}

void dots(int rows, int nw, int64_t k, const float* x, int64_t ldx, const float* const* w,
          float* out, int64_t ldo) {
  static const DotsFn fn = pick_dots();
  fn(rows, nw, k, x, ldx, w, out, ldo);
}

void parallel_items(int64_t n, bool parallel, FnRef<void(int64_t)> body) {
#if defined(_OPENMP)
  if (parallel && n > 1 && omp_get_max_threads() > 1) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) body(i);
}

namespace {

// Decode shapes: a few rows of X, and W's depth contiguous in memory (each column of W is a row
// of the weight). y[i][j] is then a dot product of row i of X with weight row j, read in place
// (converted row by row for half dtypes): one pass over the weight, no packing, all rows of X
// at once. The adapter part, T = X@P and scale*T@Q, is small and goes through the micro-kernel.
constexpr int64_t kDotRows = 8;    // at most this many rows of X (measured: 2-4x the packed
                                   // path at 1..8 rows, even at 12..16)
constexpr int64_t kDotBlock = 64;  // weight rows per work item (a multiple of NR)

bool dot_path(const Chain& op) { return op.m <= kDotRows && !op.w.rows_i && op.w.si == 1; }

void chain_dot(const Chain& op, Store store) {
  const int64_t m = op.m, n = op.n, k = op.k, r = op.r;
  const int64_t nmp = ceil_div(m, MR), rp = ceil_div(r, NR);
  const size_t xf_n = size_t(m * k), xp_n = size_t(r > 0 ? nmp * MR * k : 0),
               pp_n = size_t(rp * k * NR), tb_n = size_t(nmp * MR * rp * NR);
  float* const xf = scratch(0, xf_n + xp_n + pp_n + tb_n + size_t(nmp * MR * r));
  float* const xp = xf + xf_n;
  float* const pp = xp + xp_n;
  float* const tb = pp + pp_n;
  float* const tp = tb + tb_n;  // scale*T packed as A micro-panels of depth r
  auto mr = [&](int64_t u) { return int(std::min<int64_t>(MR, m - u * MR)); };
  for (int64_t i = 0; i < m; ++i) load_row(op.x, i, k, xf + i * k);
  if (r > 0) {
    const int64_t ldt = rp * NR;
    for (int64_t u = 0; u < nmp; ++u) pack_a(op.x, u * MR, mr(u), 0, k, xp + u * k * MR);
    for (int64_t s = 0; s < rp; ++s) {
      pack_b(op.p, 0, k, s * NR, int(std::min<int64_t>(NR, r - s * NR)), pp + s * k * NR);
      for (int64_t u = 0; u < nmp; ++u)
        micro(mr(u), k, xp + u * k * MR, pp + s * k * NR, tb + u * MR * ldt + s * NR, ldt, false);
    }
    if (op.t_out)
      for (int64_t i = 0; i < m; ++i) std::memcpy(op.t_out + i * r, tb + i * ldt, size_t(r) * 4);
    for (int64_t u = 0; u < nmp; ++u)
      pack_a(floats(tb + u * MR * ldt, ldt, 1), 0, mr(u), 0, r, tp + u * r * MR, op.scale);
  }
  const bool in_place = op.w.t == DType::Float32 && !op.w.rows_j;
  const int64_t nblk = ceil_div(n, kDotBlock);
  maybe_parallel(op.parallel, nblk, kDotBlock * k * m + 1, [&](int64_t b, int64_t e) {
    const size_t yb_n = size_t(nmp * MR * kDotBlock), qb_n = size_t(r * NR);
    float* const yb = scratch(1, yb_n + qb_n + (in_place ? 0 : size_t(4 * k)));
    float* const qb = yb + yb_n;
    float* const wb = qb + qb_n;  // weight rows converted to float
    for (int64_t blk = b; blk < e; ++blk) {
      const int64_t j0 = blk * kDotBlock, cols = std::min(kDotBlock, n - j0);
      for (int64_t jj = 0; jj < cols; jj += 4) {
        const int nw = int(std::min<int64_t>(4, cols - jj));
        const float* w[4];
        for (int u = 0; u < nw; ++u) {
          const int64_t j = j0 + jj + u;
          if (in_place) {
            w[u] = static_cast<const float*>(op.w.p) + op.w.off_j(j);
          } else {
            load_col(op.w, j, k, wb + u * k);
            w[u] = wb + u * k;
          }
        }
        dots(int(m), nw, k, xf, k, w, yb + jj, kDotBlock);
      }
      if (r > 0)
        for (int64_t p = 0; p < ceil_div(cols, NR); ++p) {
          pack_b(op.q, 0, r, j0 + p * NR, int(std::min<int64_t>(NR, cols - p * NR)), qb);
          for (int64_t u = 0; u < nmp; ++u)
            micro(mr(u), r, tp + u * r * MR, qb, yb + u * MR * kDotBlock + p * NR, kDotBlock, true);
        }
      store(0, m, j0, cols, yb, kDotBlock);
    }
  });
}

}  // namespace

void chain(const Chain& op, Store store) {
  if (op.m > 0 && op.n > 0 && dot_path(op)) return chain_dot(op, store);
  const int64_t m = op.m, n = op.n, k = op.k, r = op.r;
  if (m <= 0 || n <= 0) return;
  const int64_t np = ceil_div(n, NR), rp = ceil_div(r, NR), nrb = ceil_div(m, MB);
  const int threads = max_threads(op.parallel);
  auto cols_of = [](int64_t total, int64_t panel) {
    return int(std::min<int64_t>(NR, total - panel * NR));
  };

  // P and Q are small (r columns / rows): packed whole, once. W is shared by all row blocks when
  // there are several, else packed KC x NR at a time by its one user, on the fly.
  const bool shared_w = nrb > 1;
  const size_t pp_n = size_t(rp * k * NR), qp_n = size_t(np * r * NR);
  float* const pp = scratch(0, pp_n + qp_n + (shared_w ? size_t(np * k * NR) : 0));
  float* const qp = pp + pp_n;
  float* const wp = qp + qp_n;
  for (int64_t s = 0; s < rp; ++s) pack_b(op.p, 0, k, s * NR, cols_of(r, s), pp + s * k * NR);
  if (r > 0)
    maybe_parallel(op.parallel, np, r * NR * 4, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p) pack_b(op.q, 0, r, p * NR, cols_of(n, p), qp + p * r * NR);
    });
  if (shared_w)
    maybe_parallel(op.parallel, np, k * NR * 4, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p) pack_b(op.w, 0, k, p * NR, cols_of(n, p), wp + p * k * NR);
    });
  // With one row block, an fp32 W with unit column stride serves the micro-kernel where it lies
  // (its rows are the kernel's rows of B); only a last partial panel is packed.
  const bool w_in_place =
      !shared_w && op.w.t == DType::Float32 && !op.w.rows_i && !op.w.rows_j && op.w.sj == 1;
  // Few row blocks: split the columns too, so every thread has work.
  int64_t ncs = 1;
  if (threads > 1 && nrb < 4 * threads) ncs = std::min(np, ceil_div(4 * threads, nrb));
  const int64_t items = nrb * ncs;
  const int64_t max_panels = ceil_div(np, ncs);
  const int64_t cost = std::min<int64_t>(MB * max_panels * NR * (k + r + 1), int64_t(1) << 40);

  maybe_parallel(op.parallel, items, cost, [&](int64_t ib, int64_t ie) {
    const size_t xp_n = size_t(MB * k), tb_n = size_t(MB * rp * NR), tp_n = size_t(MB * r),
                 cb_n = size_t(MB * max_panels * NR);
    float* const xp = scratch(1, xp_n + tb_n + tp_n + cb_n + (shared_w ? 0 : size_t(KC * NR)));
    float* const tb = xp + xp_n;
    float* const tp = tb + tb_n;
    float* const cb = tp + tp_n;
    float* const wl = cb + cb_n;
    for (int64_t it = ib; it < ie; ++it) {
      const int64_t rb = it / ncs, cs = it % ncs;
      const int64_t i0 = rb * MB, rows = std::min(MB, m - i0), nmp = ceil_div(rows, MR);
      const int64_t p0 = np * cs / ncs, p1 = np * (cs + 1) / ncs;
      if (p0 == p1) continue;
      const int64_t ldc = (p1 - p0) * NR;
      auto mr = [&](int64_t u) { return int(std::min<int64_t>(MR, rows - u * MR)); };
      for (int64_t u = 0; u < nmp; ++u) pack_a(op.x, i0 + u * MR, mr(u), 0, k, xp + u * k * MR);
      if (r > 0) {
        // T = X@P for these rows, then scale*T packed as one more A block of depth r.
        const int64_t ldt = rp * NR;
        for (int64_t s = 0; s < rp; ++s)
          for (int64_t u = 0; u < nmp; ++u)
            micro(mr(u), k, xp + u * k * MR, pp + s * k * NR, tb + u * MR * ldt + s * NR, ldt,
                  false);
        if (op.t_out && cs == 0)
          for (int64_t i = 0; i < rows; ++i)
            std::memcpy(op.t_out + (i0 + i) * r, tb + i * ldt, size_t(r) * sizeof(float));
        for (int64_t u = 0; u < nmp; ++u)
          pack_a(floats(tb + u * MR * ldt, ldt, 1), 0, mr(u), 0, r, tp + u * r * MR, op.scale);
      }
      for (int64_t pc = 0; pc < k; pc += KC) {
        const int64_t kc = std::min(KC, k - pc);
        for (int64_t p = p0; p < p1; ++p) {
          const float* bp;
          int64_t ldb = NR;
          if (shared_w) {
            bp = wp + p * k * NR + pc * NR;
          } else if (w_in_place && (p + 1) * NR <= n) {
            bp = static_cast<const float*>(op.w.p) + pc * op.w.si + p * NR;
            ldb = op.w.si;
          } else {
            pack_b(op.w, pc, kc, p * NR, cols_of(n, p), wl);
            bp = wl;
          }
          for (int64_t u = 0; u < nmp; ++u)
            micro(mr(u), kc, xp + u * k * MR + pc * MR, bp, ldb, cb + u * MR * ldc + (p - p0) * NR,
                  ldc, pc > 0);
        }
      }
      if (k == 0) std::fill(cb, cb + rows * ldc, 0.f);
      if (r > 0)
        for (int64_t p = p0; p < p1; ++p)
          for (int64_t u = 0; u < nmp; ++u)
            micro(mr(u), r, tp + u * r * MR, qp + p * r * NR, cb + u * MR * ldc + (p - p0) * NR,
                  ldc, true);
      store(i0, rows, p0 * NR, std::min(n, p1 * NR) - p0 * NR, cb, ldc);
    }
  });
}

}  // namespace loraops::cpu::gemm
