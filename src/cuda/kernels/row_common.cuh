// Shared by the row kernels (softmax, rms_norm, layer_norm): 16-byte vector loads and stores,
// reductions over the threads that own one row, row addressing over any RowsView, and the
// host-side choice of launch configuration.
//
// Work split. A row is owned by a group of `tpr` threads. Short rows: tpr <= 32 is a power of two,
// several groups share a warp and reduce with shuffles only. Long rows: tpr > 32 is a multiple of
// 32 and the group is the whole block (one smem exchange per reduction). Thread t of a group owns
// vectors t, t+tpr, t+2*tpr, ... of its row (consecutive threads read consecutive 16 bytes).
// The grid has a block per row group; the kernels still loop over rows with a stride of the grid
// (past 2^31 - 1 groups, or under the tests' set_row_grid_limit), the loop bound being the same
// for every thread of a block, so every thread of a warp takes part in every shuffle and barrier.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <mutex>
#include <type_traits>
#include <vector>

#include "core/params.hpp"
#include "cuda/common.cuh"
#include "cuda/kernels.hpp"

namespace loraops::cuda::rows {

using detail::RowParams;
using detail::RowsView;

// ---- sizes ----------------------------------------------------------------------------------------

// Vectors per thread of the register-resident kernels are 1, 2, 4 or 8; rows longer than
// kMaxThreads * 8 vectors take the looped kernel (a pass for the statistics, a pass to write).
constexpr int kMaxThreads = 1024;
constexpr int kLoopThreads = 1024;
constexpr int kLoopUnroll = 4;  // vectors in flight per thread per trip of the looped kernels
constexpr int kShortRowBlock = 128;

// NVEC <= 4 rows use at most 256 threads per row, so a kernel may spend registers on fp32 copies
// of the row (softmax's exponentials, layer_norm's shifted row) or on holding weight and bias;
// NVEC = 8 up to 1024 (64 registers).
constexpr int reg_max_threads(int nvec) { return nvec <= 4 ? 256 : kMaxThreads; }
// Whether a register-resident kernel can afford an fp32 copy of its row (NVEC * V floats, up to
// 32): at 8 vectors a thread (64 registers under the 1024-thread bound) up to 64 floats spill.
constexpr bool keep_fp32_row(int nvec) { return nvec <= 4; }

// ---- vectors -------------------------------------------------------------------------------------

// V elements of T kept as their raw bits (uint4 for 16 bytes, ... unsigned short for one half):
// a half row stays two elements per register, where an array of T would be split into one
// 16-bit value per register. v[j] is element j as a float.
template <int Bytes> struct RawOf;
template <> struct RawOf<16> { using type = uint4; };
template <> struct RawOf<8> { using type = uint2; };
template <> struct RawOf<4> { using type = unsigned; };
template <> struct RawOf<2> { using type = unsigned short; };

__device__ __forceinline__ unsigned word(const uint4& r, int i) {
  return i == 0 ? r.x : i == 1 ? r.y : i == 2 ? r.z : r.w;
}
__device__ __forceinline__ unsigned word(const uint2& r, int i) { return i == 0 ? r.x : r.y; }
__device__ __forceinline__ unsigned word(unsigned r, int) { return r; }
__device__ __forceinline__ unsigned word(unsigned short r, int) { return r; }
__device__ __forceinline__ void set_word(uint4& r, int i, unsigned w) {
  (i == 0 ? r.x : i == 1 ? r.y : i == 2 ? r.z : r.w) = w;
}
__device__ __forceinline__ void set_word(uint2& r, int i, unsigned w) { (i == 0 ? r.x : r.y) = w; }
__device__ __forceinline__ void set_word(unsigned& r, int, unsigned w) { r = w; }
__device__ __forceinline__ void set_word(unsigned short& r, int, unsigned w) { r = (unsigned short)w; }

// The bits of one element of T (low 16 bits for the half types).
template <class T> __device__ __forceinline__ unsigned bits_of(float f);
template <> __device__ __forceinline__ unsigned bits_of<float>(float f) { return __float_as_uint(f); }
template <> __device__ __forceinline__ unsigned bits_of<__half>(float f) {
  return __half_as_ushort(__float2half_rn(f));
}
template <> __device__ __forceinline__ unsigned bits_of<__nv_bfloat16>(float f) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

// Element `hi` (0 or 1) of a word of two halves, as a float.
template <class T> __device__ __forceinline__ float half_of(unsigned w, int hi);
template <> __device__ __forceinline__ float half_of<__nv_bfloat16>(unsigned w, int hi) {
  return __uint_as_float(hi ? w & 0xffff0000u : w << 16);
}
template <> __device__ __forceinline__ float half_of<__half>(unsigned w, int hi) {
  return __half2float(__ushort_as_half((unsigned short)(hi ? w >> 16 : w & 0xffffu)));
}

template <class T, int V>
struct Vec {
  using R = typename RawOf<int(sizeof(T)) * V>::type;
  R r;
  __device__ __forceinline__ float operator[](int j) const {
    if constexpr (sizeof(T) == 4) return __uint_as_float(word(r, j));
    else return half_of<T>(word(r, j / 2), j % 2);
  }
};

// Makes the compiler forget what v holds (an empty asm that "modifies" its words). Converting a
// half element to fp32 is one instruction; without this the compiler converts a held row (or the
// weight, hoisted out of the row loop) once and keeps the fp32 copies live: twice the registers.
__device__ __forceinline__ void launder_word(unsigned& w) { asm volatile("" : "+r"(w)); }
__device__ __forceinline__ void launder_word(unsigned short& w) { asm volatile("" : "+h"(w)); }
__device__ __forceinline__ void launder_raw(uint4& r) {
  launder_word(r.x), launder_word(r.y), launder_word(r.z), launder_word(r.w);
}
__device__ __forceinline__ void launder_raw(uint2& r) { launder_word(r.x), launder_word(r.y); }
__device__ __forceinline__ void launder_raw(unsigned& r) { launder_word(r); }
__device__ __forceinline__ void launder_raw(unsigned short& r) { launder_word(r); }
template <class T, int V, int N>
__device__ __forceinline__ void launder(Vec<T, V> (&v)[N]) {
  if constexpr (sizeof(T) == 2) {
#pragma unroll
    for (int k = 0; k < N; ++k) launder_raw(v[k].r);
  }
}

// Plain load: cached, for data read again soon (the first pass of the looped kernels).
template <class T, int V>
__device__ __forceinline__ Vec<T, V> load(const T* p) {
  return {*reinterpret_cast<const typename Vec<T, V>::R*>(p)};
}
// Streaming load (evict first): x read for the last time. Not the read-only path (ld.nc): out
// may be x itself, and each element is read before the same thread writes it.
template <class T, int V>
__device__ __forceinline__ Vec<T, V> load_last(const T* p) {
  return {__ldcs(reinterpret_cast<const typename Vec<T, V>::R*>(p))};
}
// Read-only path: weight and bias, shared by every row.
template <class T, int V>
__device__ __forceinline__ Vec<T, V> load_const(const T* p) {
  return {__ldg(reinterpret_cast<const typename Vec<T, V>::R*>(p))};
}
template <class T, int V>
__device__ __forceinline__ void store(T* p, const Vec<T, V>& v) {
  __stcs(reinterpret_cast<typename Vec<T, V>::R*>(p), v.r);
}

// Every element f (a constant: folds to an immediate per word).
template <class T, int V>
__device__ __forceinline__ Vec<T, V> splat(float f) {
  const unsigned b = bits_of<T>(f);
  const unsigned w = sizeof(T) == 4 ? b : b | b << 16;
  Vec<T, V> v;
  constexpr int kWords = (int(sizeof(T)) * V + 3) / 4;
#pragma unroll
  for (int i = 0; i < kWords; ++i) set_word(v.r, i, w);
  return v;
}

// fp32 results to a vector of T, two at a time for the half types (one cvt per pair).
template <class T, int V>
__device__ __forceinline__ Vec<T, V> pack(const float (&y)[V]) {
  Vec<T, V> o;
  if constexpr (sizeof(T) == 4) {
#pragma unroll
    for (int j = 0; j < V; ++j) set_word(o.r, j, __float_as_uint(y[j]));
  } else if constexpr (V == 1) {
    o.r = (unsigned short)bits_of<T>(y[0]);
  } else {
#pragma unroll
    for (int j = 0; j < V; j += 2) {
      unsigned w;
      if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        const __nv_bfloat162 h = __floats2bfloat162_rn(y[j], y[j + 1]);
        w = *reinterpret_cast<const unsigned*>(&h);
      } else {
        const __half2 h = __floats2half2_rn(y[j], y[j + 1]);
        w = *reinterpret_cast<const unsigned*>(&h);
      }
      set_word(o.r, j / 2, w);
    }
  }
  return o;
}

// ---- values ready before the dependency wait ------------------------------------------------

// A value computed from the kernel's parameters, made to exist in a register at this point: a
// volatile asm that reads and writes it keeps its order with the volatile asm of
// grid_dependency_wait, so the value (and the parameter loads under it) comes before the wait.
__device__ __forceinline__ void settle(int64_t& v) { asm volatile("mov.b64 %0, %0;" : "+l"(v)); }
__device__ __forceinline__ void settle(int& v) { asm volatile("mov.b32 %0, %0;" : "+r"(v)); }
__device__ __forceinline__ void settle(unsigned& v) { asm volatile("mov.b32 %0, %0;" : "+r"(v)); }
template <class T>
__device__ __forceinline__ void settle(T*& p) {
  auto u = reinterpret_cast<uintptr_t>(p);
  asm volatile("mov.b64 %0, %0;" : "+l"(u));
  p = reinterpret_cast<T*>(u);
}

// ---- row addressing -----------------------------------------------------------------------------

// RowsView::row_offset, one 64-bit division per dim (quotient and remainder together).
__device__ __forceinline__ int64_t row_offset(const RowsView& v, int64_t i) {
  int64_t off = 0;
#pragma unroll 1
  for (int d = v.nlead - 1; d >= 0; --d) {
    const int64_t s = v.lead_shape[size_t(d)], q = i / s;
    off += (i - q * s) * v.lead_stride[size_t(d)];
    i = q;
  }
  return off;
}

// First element of row `row` (the divisions only for views whose rows are not evenly spaced).
template <class T>
__device__ __forceinline__ T* row_ptr(const RowsView& v, int64_t row) {
  T* p = static_cast<T*>(v.p);
  if (v.nlead == 0) return p;
  if (v.nlead == 1) return p + row * v.lead_stride[0];
  return p + row_offset(v, row);
}

// Vector c of a row: V contiguous elements, or (V == 1) element c at any column stride.
template <int V, class T>
__device__ __forceinline__ T* vec_ptr(T* row, int64_t c, int64_t col_stride) {
  return V > 1 ? row + c * V : row + c * col_stride;
}

// weight / bias: null (the identity), or `cols` values; V > 1 only when they are contiguous and
// 16-byte aligned (plan_rows checks), V == 1 at any stride.
template <class T, int V>
struct Affine {
  const T* p;
  int64_t stride;
  unsigned has;
  __device__ Affine(const void* ptr, int64_t s) : p(static_cast<const T*>(ptr)), stride(s), has(ptr != nullptr) {}
  // Vector c; `none` in every element when absent.
  __device__ __forceinline__ Vec<T, V> load(int64_t c, float none) const {
    return has ? load_const<T, V>(vec_ptr<V>(p, c, stride)) : splat<T, V>(none);
  }
};

// weight or bias as a register-resident kernel sees it: held in registers (kHold: vector k of this
// thread's columns), or loaded at each use (long rows, where holding it would cost the registers
// that keep two blocks per SM; layer_norm on a full grid, where it would cost occupancy).
template <class T, int V, int NVEC, bool kHold>
struct RowAffine {
  Affine<T, V> a;
  float none;
  Vec<T, V> held[kHold ? NVEC : 1];
  // From the parameters. kHold: the pointer settled (see RowWalk), which puts it before the
  // dependency wait where the kernel constructs this before the wait (rms_norm; layer_norm
  // constructs it after: no gain on its seed shape, H200 2026-11-30). Loaded at each use: the
  // pointer stays a constant-bank operand instead of 5 registers.
  __device__ RowAffine(const void* p, int64_t stride, float none_value) : a(p, stride), none(none_value) {
    if constexpr (kHold) rows::settle(a.p), rows::settle(a.stride), rows::settle(a.has);
  }
  // kHold: the loads are issued here and waited for at the values' first use (the write).
  // rms_norm calls this once, before its first row; layer_norm with each row, behind the row's
  // loads (see there). The same order in rms_norm (seed 1.30 -> 1.27 us) cost its bf16
  // 16384x4096 0.7%, so rms_norm keeps the weight ahead of the first row.
  __device__ __forceinline__ void hold(int t, int tpr, int nv) {
    if constexpr (kHold) {
#pragma unroll
      for (int k = 0; k < NVEC; ++k) {
        const int c = k * tpr + t;
        held[k] = c < nv ? a.load(c, none) : splat<T, V>(none);
      }
    }
  }
  // Once per row, after the row's loads are issued. Held: keeps the values packed (see launder;
  // an empty asm, no wait). Loaded: hides that `has` is the same for every row, or the
  // compiler copies the whole row loop for each case.
  __device__ __forceinline__ void refresh() {
    if constexpr (kHold) launder(held);
    else asm volatile("" : "+r"(a.has));
  }
  __device__ __forceinline__ Vec<T, V> get(int k, int c) const {
    if constexpr (kHold) return held[k];
    else return a.load(c, none);
  }
};

// Runs f(c, vector c) over this thread's vectors of a row, kLoopUnroll loads in flight at a time
// (the looped kernels). kLast: the row's last read (streaming loads).
template <class T, int V, bool kLast, class F>
__device__ __forceinline__ void for_row_vectors(const T* xr, int64_t col_stride, int64_t nv, int t,
                                                int tpr, F&& f) {
  const int64_t step = int64_t(kLoopUnroll) * tpr;
  for (int64_t c0 = t; c0 < nv; c0 += step) {
    Vec<T, V> v[kLoopUnroll];
#pragma unroll
    for (int u = 0; u < kLoopUnroll; ++u) {
      const int64_t c = c0 + int64_t(u) * tpr;
      if (c < nv) {
        const T* q = vec_ptr<V>(xr, c, col_stride);
        v[u] = kLast ? load_last<T, V>(q) : load<T, V>(q);
      }
    }
#pragma unroll
    for (int u = 0; u < kLoopUnroll; ++u) {
      const int64_t c = c0 + int64_t(u) * tpr;
      if (c < nv) f(c, v[u]);
    }
  }
}

// ---- reductions ---------------------------------------------------------------------------------

// max that keeps NaN (fmaxf drops it): a NaN anywhere makes the row max NaN.
__device__ __forceinline__ float nanmax(float a, float b) {
  float r;
  asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}

// exp(x - m) as ex2.approx(x*log2e - m*log2e), subnormal results flushed to 0 (they are below
// any tolerance; __expf without -use_fast_math spends five more instructions keeping them).
__device__ __forceinline__ float exp_diff(float x, float m) {
  float r;
  asm("{\n\t.reg .f32 t;\n\tsub.f32 t, %1, %2;\n\tmul.f32 t, t, 0f3FB8AA3B;\n\t"
      "ex2.approx.ftz.f32 %0, t;\n\t}"
      : "=f"(r) : "f"(x), "f"(m));
  return r;
}
// The same, opaque to the compiler: the write pass recomputes exp(x - m) from the row held in
// registers, and must not be merged with the sum pass, or the compiler keeps every exponential
// live (fp32: twice the registers of a half row, which spills at 8 vectors per thread).
__device__ __forceinline__ float exp_diff_again(float x, float m) {
  float r;
  asm volatile("{\n\t.reg .f32 t;\n\tsub.f32 t, %1, %2;\n\tmul.f32 t, t, 0f3FB8AA3B;\n\t"
               "ex2.approx.ftz.f32 %0, t;\n\t}"
               : "=f"(r) : "f"(x), "f"(m));
  return r;
}

// kSymmetric: merge(a, b) and merge(b, a) are the same bits (IEEE add and max; the adds are
// __fadd_rn, never contracted into an fma with a product before them), so after a butterfly of
// xor shuffles every lane holds the same result and group_reduce needs no broadcast.
struct SumOp {
  float v;
  static constexpr bool kSymmetric = true;
  static __device__ SumOp identity() { return {0.f}; }
  static __device__ SumOp merge(SumOp a, SumOp b) { return {__fadd_rn(a.v, b.v)}; }
  static __device__ SumOp shfl_xor(SumOp a, int o) { return {__shfl_xor_sync(~0u, a.v, o)}; }
  static __device__ SumOp shfl(SumOp a, int src, int width) { return {__shfl_sync(~0u, a.v, src, width)}; }
};

struct Sum2Op {
  float a, b;
  static constexpr bool kSymmetric = true;
  static __device__ Sum2Op identity() { return {0.f, 0.f}; }
  static __device__ Sum2Op merge(Sum2Op x, Sum2Op y) { return {__fadd_rn(x.a, y.a), __fadd_rn(x.b, y.b)}; }
  static __device__ Sum2Op shfl_xor(Sum2Op x, int o) {
    return {__shfl_xor_sync(~0u, x.a, o), __shfl_xor_sync(~0u, x.b, o)};
  }
  static __device__ Sum2Op shfl(Sum2Op x, int src, int width) {
    return {__shfl_sync(~0u, x.a, src, width), __shfl_sync(~0u, x.b, src, width)};
  }
};

struct MaxOp {
  float v;
  static constexpr bool kSymmetric = true;
  static __device__ MaxOp identity() { return {-INFINITY}; }
  static __device__ MaxOp merge(MaxOp a, MaxOp b) { return {nanmax(a.v, b.v)}; }
  static __device__ MaxOp shfl_xor(MaxOp a, int o) { return {__shfl_xor_sync(~0u, a.v, o)}; }
  static __device__ MaxOp shfl(MaxOp a, int src, int width) { return {__shfl_sync(~0u, a.v, src, width)}; }
};

// Scratch for group_reduce: two buffers of 32 states of up to 4 floats.
constexpr int kReduceFloats = 2 * 32 * 4;

// Which row-slot and which position in its group this thread has.
struct Group {
  int tpr;   // threads per row
  int t;     // position in the group
  int slot;  // which of the block's rows
  int rpb;   // rows per block per trip
  __device__ explicit Group(int threads_per_row) : tpr(threads_per_row) {
    if (tpr <= 32) {
      t = int(threadIdx.x) & (tpr - 1);
      slot = int(threadIdx.x) / tpr;
      rpb = int(blockDim.x) / tpr;
    } else {
      t = int(threadIdx.x);
      slot = 0;
      rpb = 1;
    }
  }
};

// Which row of its block's row groups a thread of a register-resident kernel is on, whether that
// row exists, and the row's x and out addresses. The walk steps by the grid (the grid has a block
// per row group; it loops only past 2^31 - 1 groups, or under the tests' set_row_grid_limit).
// The first row's are computed from the kernel's parameters before the dependency wait, and
// settled there (see settle): parameters are never written by the work before, so their
// constant-bank misses and the address arithmetic overlap the wait instead of following it. A
// copy of softmax's kernel on the seed shape (64 rows of 1024 fp32, graph replay, H200,
// 2026-11-30): from the wait to the row's max, 1154 -> 587 cycles.
template <class T>
struct RowWalk {
  int64_t r0;
  bool active;
  const T* xr;
  T* yr;
  __device__ RowWalk(const RowParams& p, const Group& g) : r0(int64_t(blockIdx.x) * g.rpb) { at(p, g); }
  __device__ __forceinline__ void at(const RowParams& p, const Group& g) {
    const int64_t row = r0 + g.slot;
    active = row < p.x.rows;
    // Both row addresses up front: for views that need divisions, nothing else is live yet.
    xr = row_ptr<const T>(p.x, active ? row : 0);
    yr = row_ptr<T>(p.out, active ? row : 0);
  }
  // The row count and the step are read from the parameters at each use (constant-bank operands,
  // not registers: the 64-register kernels spill otherwise).
  __device__ __forceinline__ bool more(const RowParams& p) const { return r0 < p.x.rows; }
  // Unconditional (at clamps a row past the end to row 0): a conditional update would keep the
  // current row's addresses live through the whole loop body, and the 64-register kernels spill.
  __device__ __forceinline__ void next(const RowParams& p, const Group& g) {
    r0 += int64_t(gridDim.x) * g.rpb;
    at(p, g);
  }
  // Before the dependency wait: the first row's values are in registers. Each kernel settles
  // (with its row length) where its latency matters more than the registers held through the row
  // loop: softmax up to 4 vectors a thread, rms_norm always, layer_norm on one wave (on a full
  // grid its 64-register kernels spilled; NOTES, session 20).
  __device__ __forceinline__ void settle() {
    rows::settle(r0), rows::settle(xr), rows::settle(yr);
  }
};

// The next of kReduceFloats' two 32 x 16-byte slots (a group reduction's per-warp states), by
// `parity`, which it flips: consecutive reductions alternate slots, so a reduction never
// overwrites one that other warps may still be reading (between two uses of a slot there is
// always the other reduction's barrier). A slot is fixed whatever the state's size: consecutive
// reductions of different state sizes must not overlap (a 12-byte state at parity 0 would
// otherwise reach into a 4-byte state's parity-1 slot while slow warps still read it).
__device__ __forceinline__ float* reduce_slot(float* smem, int& parity) {
  float* slot = smem + 32 * 4 * parity;
  parity ^= 1;
  return slot;
}

// The merge of `s` over the group; every thread of the group gets the same value (for ops that
// are not kSymmetric, the group's first thread's: their merges need not be commutative to the last
// bit). Every thread of the warp must call it (of the block when tpr > 32). `parity` picks the
// smem slot (reduce_slot).
// The shuffle steps are unrolled with the group's width as a uniform test (tpr is a kernel
// argument: a loop over it cost a compare and a branch a step), and a kSymmetric op skips the
// final broadcast: the seed shape's reductions (2 warps a row) are on the critical path of a
// ~1.5 us kernel.
template <class S>
__device__ __forceinline__ S group_reduce(S s, const Group& g, float* smem, int& parity) {
  static_assert(sizeof(S) <= 4 * sizeof(float));
  if (g.tpr >= 32) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s = S::merge(s, S::shfl_xor(s, o));
  } else {
    for (int o = g.tpr / 2; o > 0; o >>= 1) s = S::merge(s, S::shfl_xor(s, o));
  }
  if (g.tpr <= 32) {
    if constexpr (S::kSymmetric) return s;
    else return S::shfl(s, 0, g.tpr);
  }
  S* buf = reinterpret_cast<S*>(reduce_slot(smem, parity));
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  if (lane == 0) buf[warp] = s;
  __syncthreads();
  // The group's warps' states, merged in as many steps as the warp count needs (1 for 2 warps,
  // 5 for 17-32): the steps past it would only merge identities, at ~30 cycles of shuffle
  // latency each. Lanes read the states in spans of a power of two >= the warp count (identities
  // past it), so every span ends with the whole merge, lane 0's in the same order as before.
  // Exactly so for the sums (x + 0; no sum here starts at or cancels to -0) and the max
  // (max(x, -inf)); softmax's online state and layer_norm's Welford state reduce only in the
  // looped kernels' 32-warp blocks, where every step still runs.
  const int warps = g.tpr >> 5, span = 2 << (31 - __clz(warps - 1));  // warps >= 2 here
  const int i = lane & (span - 1);
  s = i < warps ? buf[i] : S::identity();
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    if (o < span) s = S::merge(s, S::shfl_xor(s, o));
  if constexpr (S::kSymmetric) return s;
  else return S::shfl(s, 0, 32);
}

// A power of two 2^k that brings amax (finite, > 0) to [0.5, 2): multiplying by it is exact, and
// the norms' sums of squares of the scaled row neither overflow nor underflow.
__device__ __forceinline__ float pow2_scale(float amax) {
  int e;
  frexpf(amax, &e);
  const int k = max(-126, min(126, -e));
  return __int_as_float((k + 127) << 23);
}

// The norms rescale a row whose sum of squares (or its mean, the variance) overflowed (|x| from
// ~1e19), or underflowed while eps is too small to dominate it. Never taken on ordinary data.
__device__ __forceinline__ bool needs_rescale(float sum_sq, float eps) {
  return !(sum_sq <= FLT_MAX) || (sum_sq < 0x1p-100f && eps < 0x1p-60f);
}

// ---- launch configuration (host) ----------------------------------------------------------------

struct RowPlan {
  int v = 1;          // elements per vector
  int64_t nv = 0;     // vectors per row
  bool looped = false;
  int nvec = 1;       // vectors per thread (register-resident kernels)
  int tpr = 1;        // threads per row
  int block = 1;      // threads per block
};

inline int64_t pow2_ceil(int64_t n) {
  int64_t p = 1;
  while (p < n) p *= 2;
  return p;
}

// Whether every row of `v` starts on a `bytes` boundary and is contiguous.
inline bool vector_ok(const RowsView& v, int elems, size_t bytes) {
  if (v.col_stride != 1 || v.cols % elems != 0) return false;
  if (reinterpret_cast<uintptr_t>(v.p) % bytes != 0) return false;
  for (int d = 0; d < v.nlead; ++d)
    if (v.lead_stride[size_t(d)] % elems != 0) return false;
  return true;
}

template <class T>
RowPlan plan_rows(const RowParams& p) {
  constexpr int kV = 16 / int(sizeof(T));
  RowPlan pl;
  // Vectors when x, out, weight and bias all allow them; else element by element throughout.
  auto affine_ok = [](const void* a, int64_t stride) {
    return !a || (stride == 1 && reinterpret_cast<uintptr_t>(a) % 16 == 0);
  };
  pl.v = vector_ok(p.x, kV, 16) && vector_ok(p.out, kV, 16) && affine_ok(p.weight, p.weight_stride) &&
                 affine_ok(p.bias, p.bias_stride)
             ? kV
             : 1;
  pl.nv = p.x.cols / pl.v;
  if (pl.nv > int64_t(kMaxThreads) * 8) {
    pl.looped = true;
    pl.tpr = pl.block = kLoopThreads;
    return pl;
  }
  const int64_t nv = pl.nv;
  if (nv <= 4) {  // a thread per row
    pl.nvec = int(pow2_ceil(nv));
    pl.tpr = 1;
  } else if (nv <= 4 * 256) {
    pl.nvec = 4;
    const int64_t t = (nv + 3) / 4;
    pl.tpr = int(t <= 32 ? pow2_ceil(t) : (t + 31) / 32 * 32);
  } else {
    pl.nvec = 8;
    pl.tpr = int(((nv + 7) / 8 + 31) / 32 * 32);
  }
  pl.block = pl.tpr <= 32 ? kShortRowBlock : pl.tpr;
  return pl;
}

// Row groups of a plan: blocks of a per-row-group grid.
inline int64_t row_groups(const RowPlan& pl, const RowParams& p) {
  const int64_t rpb = pl.tpr <= 32 ? pl.block / pl.tpr : 1;
  return (p.x.rows + rpb - 1) / rpb;
}

// A block per row group (the kernels still loop, past 2^31 - 1 blocks or under
// set_row_grid_limit's cap). The grid used to be one wave that looped over the rows, so each
// thread loaded weight and bias once: 16384 rows over 1320 resident blocks made 12.4 rounds, the
// last one 41% full; as the activations' many short blocks (5% ahead of a capped grid that
// loops), the block scheduler now keeps every SM fed to the end (softmax bf16 16384x4096 3534 ->
// 3797 GB/s, rms_norm 3589 -> 3773, H200 2026-11-29).
template <class... Params, class... Args>
void launch_rows(void (*kernel)(Params...), const RowPlan& pl, const RowParams& p, cudaStream_t stream,
                 Args... args) {
  const unsigned limit = row_grid_limit().load(std::memory_order_relaxed);
  const int64_t cap = limit ? std::min<int64_t>(limit, INT32_MAX) : INT32_MAX;
  launch_kernel(kernel, dim3(unsigned(std::min(row_groups(pl, p), cap))), pl.block, 0, stream,
                row_ops_pdl().load(std::memory_order_relaxed), p, args...);
}

// One op's kernels, named for launch_plan: Op::reg<T, V, NVEC, kWave> (row in registers) and
// Op::loop<T, V> (rows too long for registers). kWave: every block of the grid is resident at
// once (fewer row groups than fit), so occupancy is no concern and the kernel may spend registers
// on loading weight and bias into registers and holding them.
template <class Op, class T, int V, int NVEC>
void launch_reg(const RowParams& p, const RowPlan& pl, cudaStream_t s) {
  const auto wave = Op::template reg<T, V, NVEC, true>, many = Op::template reg<T, V, NVEC, false>;
  const bool fits = wave == many ||
                    row_groups(pl, p) <= resident_blocks(reinterpret_cast<const void*>(wave), pl.block, p.device_index);
  launch_rows(fits ? wave : many, pl, p, s, pl.tpr);
}

// Picks the kernel for a plan (looped, or 1/2/4/8 vectors per thread) and launches it.
template <class Op, class T, int V>
void launch_plan(const RowParams& p, const RowPlan& pl, cudaStream_t s) {
  if (pl.looped) return launch_rows(Op::template loop<T, V>, pl, p, s);
  switch (pl.nvec) {
    case 1: return launch_reg<Op, T, V, 1>(p, pl, s);
    case 2: return launch_reg<Op, T, V, 2>(p, pl, s);
    case 4: return launch_reg<Op, T, V, 4>(p, pl, s);
    default: return launch_reg<Op, T, V, 8>(p, pl, s);
  }
}

// The entry point every row op shares: skip empty work, pick the device, turn the dtype into a
// type and the alignment into a vector width, plan, launch on the caller's stream, check.
template <class Op>
void run_row_op(const RowParams& p, void* stream, const char* name) {
  if (p.x.rows == 0 || p.x.cols == 0) return;
  DeviceGuard guard(p.device_index);
  auto s = static_cast<cudaStream_t>(stream);
  dispatch_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    const RowPlan pl = plan_rows<T>(p);
    if (pl.v > 1) launch_plan<Op, T, 16 / sizeof(T)>(p, pl, s);
    else launch_plan<Op, T, 1>(p, pl, s);
  });
  LORAOPS_CUDA_CHECK_LAUNCH(name);
}

}  // namespace loraops::cuda::rows
