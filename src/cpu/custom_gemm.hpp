// The float GEMM engine behind our custom CPU matmul, LoRA and attention kernels.
//
// Operands of any dtype and any strides are packed (converted to float) into small contiguous
// panels: A into micro-panels of MR rows stored depth-major ([l][MR]), B into micro-panels of NR
// columns ([l][NR]). A register-blocked micro-kernel then computes an MR x NR tile of C from one
// A and one B micro-panel, broadcasting A and streaming B, written with GCC vector extensions
// (portable SIMD, no intrinsics). The hot kernels are compiled twice, for the build's baseline
// ISA and (on x86-64) for AVX2+FMA, and the best one for the running CPU is picked once: a
// default build then runs at AVX2 speed on machines that have it, as OpenBLAS does with its own
// runtime dispatch.
#pragma once

#include <cstdint>
#include <type_traits>

#include "cpu/common.hpp"

// The AVX2+FMA copies of the hot loops: on x86-64 with GCC/Clang when the build's baseline lacks
// AVX2 (a -march=native build on an AVX2 machine needs no second copy).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__AVX2__)
#define LORAOPS_AVX2_CLONE 1
#define LORAOPS_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define LORAOPS_AVX2_CLONE 0
#endif
#define LORAOPS_INLINE inline __attribute__((always_inline))

namespace loraops::cpu::gemm {

inline constexpr int MR = 6;        // rows of a C tile: 6x16 floats = 12 AVX2 accumulators
inline constexpr int NR = 16;       // columns of a C tile
inline constexpr int64_t KC = 256;  // depth of one packed block: an A block of MB x KC stays in L2
inline constexpr int64_t MB = 96;   // rows of x per work item (a multiple of MR)

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A source matrix of any dtype: element (i, j) is at p + off(i) + off(j), where each coordinate
// is either a plain stride or a RowsView's row index (rows of a tensor with arbitrary leading
// dims). Covers MatView, RowsView and the transpose of either.
struct Src {
  DType t = DType::Float32;
  const void* p = nullptr;
  int64_t si = 0, sj = 0;            // strides of i and j (when not a RowsView coordinate)
  const RowsView* rows_i = nullptr;  // i indexes rows of this view
  const RowsView* rows_j = nullptr;  // j indexes rows of this view
  int64_t off_i(int64_t i) const { return rows_i ? rows_i->row_offset(i) : i * si; }
  int64_t off_j(int64_t j) const { return rows_j ? rows_j->row_offset(j) : j * sj; }
};

inline Src mat(const MatView& v, DType t, int64_t base = 0) {
  return Src{t, at(v.p, t, base), v.rs, v.cs, nullptr, nullptr};
}
inline Src mat_t(const MatView& v, DType t) { return Src{t, v.p, v.cs, v.rs, nullptr, nullptr}; }
inline Src floats(const float* p, int64_t si, int64_t sj) {
  return Src{DType::Float32, p, si, sj, nullptr, nullptr};
}
// Row i of v is row i of the matrix; with `transpose`, column i.
// Evenly spaced rows become a plain stride (the common case, and much cheaper to walk).
inline Src rows(const RowsView& v, DType t, bool transpose = false) {
  int64_t rs = 0;
  const bool even = v.uniform(&rs);
  const RowsView* rv = even ? nullptr : &v;
  return transpose ? Src{t, v.p, v.col_stride, rs, nullptr, rv}
                   : Src{t, v.p, rs, v.col_stride, rv, nullptr};
}

// dst[l*MR + ii] = mul * s(i0+ii, l0+l) for ii < nrows (<= MR), 0 for the padding rows.
void pack_a(const Src& s, int64_t i0, int nrows, int64_t l0, int64_t kc, float* dst,
            float mul = 1.f);
// dst[l*NR + jj] = s(l0+l, j0+jj) for jj < ncols (<= NR), 0 for the padding columns.
void pack_b(const Src& s, int64_t l0, int64_t kc, int64_t j0, int ncols, float* dst);

// Row i / column j of a source, `depth` long, as plain floats: dst[l] = s(i, l) resp. s(l, j).
void load_row(const Src& s, int64_t i, int64_t depth, float* dst);
void load_col(const Src& s, int64_t j, int64_t depth, float* dst);

// c[i*ldc + j] (+)= sum_l a[l*MR + i] * b[l*ldb + j] for i < rows (<= MR), j < NR. With
// accumulate false, c is overwritten (kc = 0 then writes zeros). Writes all NR columns: C
// buffers are padded to a multiple of NR. b is a packed panel (ldb = NR) or, for an fp32
// operand with unit column stride, the operand itself.
void micro(int rows, int64_t kc, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc,
           bool accumulate);
inline void micro(int rows, int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                  bool accumulate) {
  micro(rows, kc, a, b, NR, c, ldc, accumulate);
}

// out[i*ldo + u] = sum_l x[i*ldx + l] * w[u][l] for i < rows, u < nw (<= 4): rows of x against
// weight rows read where they lie (dot products; for a few rows against a long weight).
void dots(int rows, int nw, int64_t k, const float* x, int64_t ldx, const float* const* w,
          float* out, int64_t ldo);

// A reference to a callable, for callbacks made a few times per block (not per element).
template <class Sig>
class FnRef;
template <class R, class... A>
class FnRef<R(A...)> {
 public:
  template <class F>
  requires(!std::is_same_v<std::remove_cvref_t<F>, FnRef>)
      FnRef(F&& f)  // NOLINT: implicit on purpose, lambdas are passed straight in
      : obj_(const_cast<void*>(static_cast<const void*>(&f))), call_([](void* o, A... a) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(o))(a...);
        }) {}
  R operator()(A... a) const { return call_(obj_, a...); }

 private:
  void* obj_;
  R (*call_)(void*, A...);
};

// C = X @ W + scale * (X @ P) @ Q, with X [m,k], W [k,n], P [k,r], Q [r,n] (r may be 0).
// This one shape is matmul (r = 0), the LoRA forward (X = x, W = weight.T, P = lora_a.T,
// Q = lora_b.T) and the LoRA input gradient (X = grad_y, W = weight, P = lora_b, Q = lora_a).
// Work is split into items of up to MB rows of X (and a range of C's columns when there are few
// row blocks). Each item packs its X rows once, at full depth, and uses them for T = X@P and for
// C; T (scaled) is then one more block of depth r. W is packed once per call and shared when
// there are several row blocks, else packed KC x NR at a time by the item that uses it, so with
// up to MB rows W is read exactly once, in one pass. With up to 8 rows and W's depth contiguous
// (a weight used as weight.T: each column of W is a row of the weight) there is no packing at
// all: C comes from dot products of the X rows with the weight rows where they lie.
struct Chain {
  int64_t m = 0, n = 0, k = 0, r = 0;
  Src x, w, p, q;
  float scale = 0.f;
  float* t_out = nullptr;  // optional [m, r]: receives X @ P (unscaled)
  bool parallel = true;    // false: run on the calling thread only
};
// Receives each finished block of C: rows [i0, i0+rows), columns [j0, j0+cols), as floats with
// leading dimension ldc. Called once per block, from the thread that computed it.
using Store =
    FnRef<void(int64_t i0, int64_t rows, int64_t j0, int64_t cols, const float* c, int64_t ldc)>;
void chain(const Chain& op, Store store);

// OpenMP-parallel loop over [0, n) handing out single items dynamically (for items of uneven
// cost); serial when `parallel` is false or there is one item.
void parallel_items(int64_t n, bool parallel, FnRef<void(int64_t)> body);

// Whether the AVX2+FMA build of the kernels runs on this CPU (x86-64 builds without -mavx2).
bool use_avx2();

}  // namespace loraops::cpu::gemm
