// lora_forward on CUDA, custom, for decode-sized batches (m <= kLoraDecodeMaxM): y is bound by
// reading W once, so the whole op is one pass over W at memory speed with the low-rank term added
// where y is stored. Two kernels on the stream:
//
//   lora_shrink   t = scale * x @ A.T, fp32 [m, r] in scratch (A is r rows: a small read), and
//                 x @ A.T unscaled into the caller's xa_out when asked;
//   lora_decode_* y = x @ W.T + bias + t @ B.T, W streamed once; t is only needed at the store.
//
// Both are launched as programmatic dependents (Hopper), each while the kernel before it still
// runs. The shrink waits for the work before it (griddepcontrol.wait) before anything else (but
// an L2 prefetch of W by its extra blocks, see kPrefetchBytes) and only then lets the decode
// kernel start, so the decode kernel may stream W at once (all work before the shrink is
// complete); it waits for the shrink's grid only before its epilogue, which reads t. Without a
// shrink the decode kernel waits first (after the one-token kernel's L2 prefetch of its W). A
// decode grid lets the next kernel start at once (decode_prologue). Against plain launches (graph
// replay, H200, 2026-11-30): m = 1 at scale 0, bf16 4096^2 10.30 -> 9.81 us, fp32 1024^2 2.83 ->
// 2.25; with the shrink no change (11.1 us at bf16 4096^2 r16: the decode kernel still launches
// after the shrink's wait); eager 0.7-0.9 us less. The shrink is kept to few blocks (one per 4
// rows of A; at one token 2 or 1 where A's rows are long, one_token_shrink_rows): its blocks take
// SM slots the W stream would use, and more of them (split over tokens or K) measured slower, as
// did one fused kernel whose first blocks computed t for the others (NOTES.md). Also slower in
// graph replay, though one launch fewer (NOTES.md, session 23): t computed once per thread-block
// cluster of the decode grid and shared through distributed shared memory (a cluster launch alone
// cost 0.8-1.6 us); t computed by every block for itself (float32 m = 1, r <= 16: A's rows read
// by every block at once); the shrink letting the decode kernel start before its own wait (the
// decode kernel then waits first, and W's stream no longer overlaps the shrink: bf16 m = 16 15.3
// -> 23.3 us).
//
// lora_decode_mma (float16/bfloat16, 16-byte aligned rows, K % 8 == 0): a block owns 16 rows of
// W; its warps split K in 64-element chunks. Each lane loads 16 bytes of two W rows and of up to
// 8 tokens straight into registers and feeds mma.m16n8k16 with W as the 16-row operand and the
// tokens as the 8 columns ("swap AB": m <= 8 tokens fill one n8 tile). A dot product does not
// care which k goes where, so each lane's 8 contiguous elements are assigned to the 4 k-slots it
// owns in two consecutive mmas, in W and x alike: no shuffles, no shared memory in the loop. The
// warps' partial sums meet in shared memory in a fixed order (deterministic).
//
// lora_decode_mma_paired (what runs for m = 2..4; lora_decode_mma above) is the same design with
// each load instruction covering 4 rows x 128 bytes instead of 8 rows x 64, each token taking
// two of the tile's columns (see there).
//
// lora_decode_linear (one token, any dtype, 16-byte rows): each load instruction 512 contiguous
// bytes of one row, the products on FMAs (see there).
//
// lora_decode_fma (float32 — true fp32, no TF32 — from 2 tokens, and any layout of any dtype): a
// warp per row of W, 16-byte loads when aligned, element loads with strides otherwise, up to 8
// tokens per pass.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda/arrival_slots.hpp"
#include "cuda/common.cuh"
#include "cuda/mma.cuh"
#include "cuda/kernels.hpp"
#include "cuda/stream_scratch.hpp"

namespace loraops::cuda {

namespace {

using detail::LoraForwardParams;
using detail::MatView;
using detail::RowsView;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <class T>
constexpr int kVec = 16 / int(sizeof(T));  // elements per 16-byte vector

// W is read exactly once: keep it out of L1 (x, read by every block, stays there). .L2::128B has
// L2 fetch the whole 128-byte line on a miss: lora_decode_mma's warp loads cover 64 bytes of each
// of 8 rows (the mma operand's layout), so the half the next instruction asks for comes with it
// (the paired kernel's and the fma kernel's loads cover whole lines anyway).
// Volatile: the compiler keeps volatile asm in program order, so these loads stay after
// decode_prologue's wait (griddepcontrol.wait, a volatile asm) where the kernel waits first. (The
// PTX of all 48 shrink and decode kernels is the same as without it: nvcc 13.0 kept that order
// anyway, but nothing in the language made it.)
__device__ __forceinline__ uint4 load_stream(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.L2::128B.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

__device__ __forceinline__ uint4 load_shared_ro(const void* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}

// A hint that p's line will be read soon: L2 fetches it, the thread does not wait.
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

template <class T>
__device__ __forceinline__ void unpack(uint4 u, float (&out)[kVec<T>]) {
  if constexpr (std::is_same_v<T, float>) {
    out[0] = __uint_as_float(u.x), out[1] = __uint_as_float(u.y);
    out[2] = __uint_as_float(u.z), out[3] = __uint_as_float(u.w);
  } else {
    const T* h = reinterpret_cast<const T*>(&u);
#pragma unroll
    for (int i = 0; i < kVec<T>; ++i) out[i] = to_float(h[i]);
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// ---- t = scale * x @ A.T -------------------------------------------------------------------

constexpr int kShrinkRows = 4;  // rows of A per block

// The first `bytes` of a decode block's span of W (its rows [j * rows, j * rows + rows) of n, from
// the first row's start, stopping at the last row's last element: at 8 KiB rows, its first 4 rows
// whole), asked of L2 ahead of the block's own loads (cp.async.bulk.prefetch: one instruction a
// region, no registers, nothing read into the SM, so it may run before a wait: L2 is where the
// work before writes, so a line it brings is the one that work leaves). Who asks, and when: see
// kPrefetchBytes.
struct WPrefetch {
  const char* w = nullptr;  // null: none
  int64_t rs = 0;           // bytes between rows
  int64_t row_bytes = 0;    // bytes of a row's k elements
  int64_t n = 0;
  int rows = 0;             // a decode block's rows
  int bytes = 0;            // a multiple of 16
};

__device__ __forceinline__ void prefetch_w_block(const WPrefetch& p, int64_t j) {
  const int64_t r0 = j * p.rows, in = min(int64_t(p.rows), p.n - r0);
  if (in <= 0) return;
  const int64_t len = min(int64_t(p.bytes), ((in - 1) * p.rs + p.row_bytes) & ~int64_t(15));
  const char* at = p.w + r0 * p.rs;
  for (int64_t o = 0; o < len; o += 32768) {
    const unsigned piece = unsigned(min(int64_t(32768), len - o));
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(at + o), "r"(piece) : "memory");
  }
}

struct ShrinkArgs {
  RowsView x;
  MatView a;  // [r, k]
  int64_t m, k, r;
  float scale;
  float* t;  // [m, r]: scale * x@A.T, or null when only xa is wanted
  void* xa;  // [m, r]: x@A.T unscaled in T (the caller's xa_out), or null
  WPrefetch pf;           // the decode kernel's W (w null: none)
  int64_t pf_blocks;      // decode blocks prefetched: as many prefetch blocks follow the shrink's
  int64_t shrink_blocks;  // the blocks that compute t
};

// kShrinkTokens tokens per pass over A's rows: 1 for one token, whose pass would otherwise reduce
// 8 x 4 sums across the block where 4 are stored (160 shuffles a warp against 20).
template <class T, bool kVector, int kShrinkTokens, int ROWS = kShrinkRows>
__global__ void __launch_bounds__(kThreads) lora_shrink(ShrinkArgs s) {
  // Blocks past the shrink's ask L2 for the first lines of a decode block's rows and end (see
  // kPrefetchBytes), without a wait: they touch no memory (an L2 prefetch only).
  if (blockIdx.x >= s.shrink_blocks) {
    if (threadIdx.x == 0) prefetch_w_block(s.pf, int64_t(blockIdx.x) - s.shrink_blocks);
    return;
  }
  // After the work before: the decode kernel, which streams W without a wait of its own, starts
  // only once that work is complete.
  wait_then_allow_dependents();
  __shared__ float red[kWarps][kShrinkTokens * ROWS];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const T* x = static_cast<const T*>(s.x.p);
  const T* a = static_cast<const T*>(s.a.p);
  const int64_t j0 = int64_t(blockIdx.x) * ROWS;
  const T* arow[ROWS];
#pragma unroll
  for (int i = 0; i < ROWS; ++i) arow[i] = a + (j0 + i < s.r ? j0 + i : 0) * s.a.rs;

  for (int64_t m0 = 0; m0 < s.m; m0 += kShrinkTokens) {
    const T* xrow[kShrinkTokens];  // tokens past m read row 0 and are never stored
#pragma unroll
    for (int i = 0; i < kShrinkTokens; ++i) xrow[i] = x + s.x.row_offset(m0 + i < s.m ? m0 + i : 0);
    float acc[kShrinkTokens][ROWS] = {};
    if constexpr (kVector) {
      constexpr int V = kVec<T>;
      for (int64_t k = int64_t(threadIdx.x) * V; k < s.k; k += int64_t(kThreads) * V) {
        float av[ROWS][V];
#pragma unroll
        for (int i = 0; i < ROWS; ++i) unpack<T>(load_shared_ro(arow[i] + k), av[i]);
#pragma unroll
        for (int tk = 0; tk < kShrinkTokens; ++tk) {
          float xv[V];
          unpack<T>(load_shared_ro(xrow[tk] + k), xv);
#pragma unroll
          for (int i = 0; i < ROWS; ++i)
#pragma unroll
            for (int v = 0; v < V; ++v) acc[tk][i] = fmaf(xv[v], av[i][v], acc[tk][i]);
        }
      }
    } else {
      for (int64_t k = threadIdx.x; k < s.k; k += kThreads) {
        float av[ROWS];
#pragma unroll
        for (int i = 0; i < ROWS; ++i) av[i] = to_float(arow[i][k * s.a.cs]);
#pragma unroll
        for (int tk = 0; tk < kShrinkTokens; ++tk) {
          const float xv = to_float(xrow[tk][k * s.x.col_stride]);
#pragma unroll
          for (int i = 0; i < ROWS; ++i) acc[tk][i] = fmaf(xv, av[i], acc[tk][i]);
        }
      }
    }
#pragma unroll
    for (int tk = 0; tk < kShrinkTokens; ++tk)
#pragma unroll
      for (int i = 0; i < ROWS; ++i) {
        const float v = warp_sum(acc[tk][i]);
        if (lane == 0) red[warp][tk * ROWS + i] = v;
      }
    __syncthreads();
    if (threadIdx.x < kShrinkTokens * ROWS) {
      const int tk = threadIdx.x / ROWS, i = threadIdx.x % ROWS;
      float sum = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) sum += red[w][threadIdx.x];
      if (m0 + tk < s.m && j0 + i < s.r) {
        const int64_t o = (m0 + tk) * s.r + j0 + i;
        if (s.t) s.t[o] = s.scale * sum;
        if (s.xa) static_cast<T*>(s.xa)[o] = from_float<T>(sum);
      }
    }
    __syncthreads();
  }
}

// ---- y = x @ W.T + bias + t @ B.T ------------------------------------------------------------

struct DecodeArgs {
  RowsView x;
  MatView w;  // [n, k]
  MatView b;  // [n, r]
  const void* bias;
  int64_t bias_stride;
  const float* t;  // [m, r], scale applied; null: no low-rank term
  void* y;         // [m, n]
  int64_t m, n, k, r;
  bool wait_first;  // no shrink before: the work before may still write x, W, B or bias
  bool b_whole;     // store_rows loads B's rows whole and stages t (see there)
  WPrefetch pf;     // lora_decode_linear waiting first: its first lines of W before the wait
};

// store_rows' one-round-trip low-rank term: B's rows of at most kWholeBVectors 16-byte vectors
// (r <= 64 in 16-bit types), t (m * r <= 16 * 64 floats: 4 KB) staged in shared memory. Only in the
// kernel of 9-16 tokens (8 warps, a thread an output): there, bf16 4096^2 m = 16 went 30.8 ->
// 24.7 us at r = 64 and 15.27 -> 15.10 at r = 16; in the 16-warp kernels (m <= 8) it lost, 11.46
// -> 11.78 at m = 1 r = 16 and 12.39 -> 12.65 at m = 8 (H200, 2026-11-30, graph replay, old and
// new twice each in one run; not understood).
constexpr int kWholeBVectors = 8;
template <int WARPS, int TOK>
constexpr bool kWholeB = WARPS == 8 && 16 * TOK <= WARPS * 32;

// The start of every decode kernel, before any memory access. Every grid lets the next kernel
// start early, of one wave or more: a dependent launches only once every block of this grid has
// triggered or ended, i.e. once the last wave has started, so its blocks cannot take the slots a
// later wave needs, and it waits for this grid's end before it touches memory. What it gains is
// the next call's shrink and prefetch blocks resident in the last wave's tail: bf16 8192^2 m16
// r64 54.73 -> 49.5 us, m1 r64 34.06 -> 33.85 (triggering only where the grid was one wave
// before; 4096^2 m1-m16 unchanged; graph replay, 4 weight sets rotating, H200 2026-12-01, two
// rounds interleaved).
__device__ __forceinline__ void decode_prologue(const DecodeArgs& a) {
  if (a.wait_first) grid_dependency_wait();
  allow_dependents();
}

// The dot product with W plus the bias entry of column n, if any.
template <class T>
__device__ __forceinline__ float add_bias(const DecodeArgs& a, int64_t n, float acc) {
  return a.bias ? acc + to_float(static_cast<const T*>(a.bias)[n * a.bias_stride]) : acc;
}

// The terms j = first, first + step, ... of the low-rank product t[m] . B[n] (a.t non-null).
template <class T>
__device__ __forceinline__ float low_rank_part(const DecodeArgs& a, int64_t m, int64_t n, int64_t first,
                                               int64_t step) {
  const T* b = static_cast<const T*>(a.b.p) + n * a.b.rs;
  const float* t = a.t + m * a.r;
  float lr = 0.f;
  for (int64_t j = first; j < a.r; j += step) lr = fmaf(t[j], to_float(b[j * a.b.cs]), lr);
  return lr;
}

// One token's value at y[m][n] from a warp, given the dot product with W (every lane): the bias,
// then the low-rank term's r products split over the lanes (one round trip for t and B's row at
// r <= 32). The fma kernel's one-token epilogue and lora_decode_linear's above its loop rank.
template <class T>
__device__ __forceinline__ float finish_warp(const DecodeArgs& a, int64_t m, int64_t n, float dot, int lane) {
  float v = add_bias<T>(a, n, dot);
  if (a.t) v += warp_sum(low_rank_part<T>(a, m, n, lane, 32));
  return v;
}

// The value stored at y[m][n], given the dot product with W: the dot, the bias, the low-rank term
// t[m] . B[n], added in that order (the one-token fma epilogue keeps it), the last summed by this
// thread alone. (The mma kernels' epilogue, and the fma kernel's at several tokens. Loads batched
// 16 at a time measured no faster in the mma kernels at r = 16, H200 2026-11-29; the fma kernel
// at one token splits the sum over its lanes.)
template <class T>
__device__ __forceinline__ float finish(const DecodeArgs& a, int64_t m, int64_t n, float acc) {
  acc = add_bias<T>(a, n, acc);
  if (a.t) acc += low_rank_part<T>(a, m, n, 0, 1);
  return acc;
}

__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// The dot product of row `row` with token `tok`: the WARPS warps' partial sums in red, added in a
// fixed order.
template <int WARPS, int TOK>
__device__ __forceinline__ float warps_sum(const float* red, int row, int tok) {
  float sum = 0.f;
#pragma unroll
  for (int w = 0; w < WARPS; ++w) sum += red[(w * 16 + row) * TOK + tok];
  return sum;
}

// The block's epilogue: the WARPS partial sums of each of its ROWS rows (16, or
// lora_decode_linear's 8) x TOK tokens, in red[warp][row][token] (a row pitch of 16 rows either
// way; shared memory, written before a barrier), added in a fixed order (deterministic), finished
// (bias, low-rank term) and stored.
// ts: shared memory after red, m * r floats where b_whole.
template <class T, int WARPS, int TOK, int ROWS = 16>
__device__ __forceinline__ void store_rows(const DecodeArgs& a, const float* red, float* ts, int64_t n0) {
  constexpr int R = ROWS;
  // The shrink's t (and its x@A.T, when kept) is complete and visible after this; a kernel that
  // waited first returns at once. Every decode kernel waits before it ends, so that its end
  // implies the shrink's.
  grid_dependency_wait();
  T* y = static_cast<T*>(a.y);
  if constexpr (kWholeB<WARPS, TOK>) {
    // A thread an output, where B's rows are 16-byte vectors of r <= 64 and t fits shared memory:
    // the thread loads its B row whole into registers and the block stages t, all loads in flight
    // at once, so the low-rank term costs one round trip. finish's loop (below) loads t[j] and
    // B[n][j] j after j, a round trip for every few j, on the critical path of every block's end.
    // (The same sums in the same order: the same bits.)
    if (a.b_whole) {
      constexpr int V = kVec<T>;
      const int row = threadIdx.x % R, tok = threadIdx.x / R;
      const int64_t n = n0 + row;
      const bool valid = threadIdx.x < R * TOK && n < a.n && tok < a.m;
      const T* brow = static_cast<const T*>(a.b.p) + (valid ? n : 0) * a.b.rs;
      uint4 bv[kWholeBVectors];
#pragma unroll
      for (int v = 0; v < kWholeBVectors; ++v)
        bv[v] = valid && v * V < a.r ? load_shared_ro(brow + v * V) : make_uint4(0, 0, 0, 0);
      for (int64_t j = threadIdx.x; j < a.m * a.r; j += WARPS * 32) ts[j] = a.t[j];
      __syncthreads();
      if (!valid) return;
      const float sum = add_bias<T>(a, n, warps_sum<WARPS, TOK>(red, row, tok));
      const float* tt = ts + tok * a.r;
      float lr = 0.f;
#pragma unroll
      for (int v = 0; v < kWholeBVectors; ++v) {
        if (v * V >= a.r) break;
        float bf[V];
        unpack<T>(bv[v], bf);
#pragma unroll
        for (int e = 0; e < V; ++e) lr = fmaf(tt[v * V + e], bf[e], lr);
      }
      y[tok * a.n + n] = from_float<T>(sum + lr);
      return;
    }
  }
  for (int i = threadIdx.x; i < R * TOK; i += WARPS * 32) {
    const int row = i % R, tok = i / R;  // consecutive threads: consecutive n of one token
    const int64_t n = n0 + row;
    if (n >= a.n || tok >= a.m) continue;
    y[tok * a.n + n] = from_float<T>(finish<T>(a, tok, n, warps_sum<WARPS, TOK>(red, row, tok)));
  }
}

// Prefetch of the epilogue's bias entries and B rows for rows n0..n0+15 (see lora_decode_mma).
template <class T>
__device__ __forceinline__ void prefetch_epilogue(const DecodeArgs& a, int64_t n0) {
  if (threadIdx.x < 16 && n0 + threadIdx.x < a.n) {
    const int64_t n = n0 + threadIdx.x;
    if (a.bias) prefetch_l2(static_cast<const T*>(a.bias) + n * a.bias_stride);
    if (a.t && a.b.cs == 1) {
      const T* brow = static_cast<const T*>(a.b.p) + n * a.b.rs;
      for (int64_t j = 0; j < a.r; j += 32 / int64_t(sizeof(T))) prefetch_l2(brow + j);
    }
  }
}

// NT tiles of 8 tokens, 16 rows per block, WARPS warps splitting K; U chunks of 64 in flight per
// warp. The W stream is bound by bytes in flight per SM (Little's law), so the small-m variants
// run 16 warps per block (one tile: at <= 64 registers, two blocks per SM).
template <class T, int NT, int WARPS>
__global__ void __launch_bounds__(WARPS * 32, WARPS == 16 ? 2 : 1) lora_decode_mma(DecodeArgs a) {
  constexpr int U = NT <= 2 ? 2 : 1;
  constexpr int R = 16, TK = 8 * NT;
  extern __shared__ float red[];  // [WARPS][R][TK]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const int64_t n0 = int64_t(blockIdx.x) * R;
  const T* w = static_cast<const T*>(a.w.p);
  const T* x = static_cast<const T*>(a.x.p);
  decode_prologue(a);

  // Rows past the end and tokens past m read row 0 (always there) and are never stored: the
  // loads stay unconditional, only the K tail is predicated.
  const T* wrow[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t n = n0 + h * 8 + g;
    wrow[h] = w + (n < a.n ? n : 0) * a.w.rs + c * 8;
  }
  const T* xrow[NT];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int64_t m = nt * 8 + g;
    xrow[nt] = x + a.x.row_offset(m < a.m ? m : 0) + c * 8;
  }

  // The epilogue reads bias[n] and B's rows after the W stream, each a dependent DRAM round trip
  // at the block's end when they are cold (weights rotating past L2): L2 fetches them now, under
  // the stream. B's row of r elements in 32-byte pieces when its columns are contiguous.
  prefetch_epilogue<T>(a, n0);

  float acc[NT][4] = {};
  const int64_t chunks = (a.k + 63) / 64;
  for (int64_t ch0 = warp; ch0 < chunks; ch0 += int64_t(WARPS) * U) {
    uint4 wv[U][2][2], xv[U][2][NT];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        const int64_t k = (ch0 + int64_t(u) * WARPS) * 64 + s * 32;  // + c*8 in the pointers
        const bool in = k + c * 8 < a.k;  // K % 8 == 0: a vector is all in or all out
#pragma unroll
        for (int h = 0; h < 2; ++h)
          wv[u][s][h] = in ? load_stream(wrow[h] + k) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
          xv[u][s][nt] = in ? load_shared_ro(xrow[nt] + k) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int s = 0; s < 2; ++s)
#pragma unroll
        for (int q = 0; q < 2; ++q)
#pragma unroll
          for (int nt = 0; nt < NT; ++nt)
            mma16816<T>(acc[nt], word(wv[u][s][0], 2 * q), word(wv[u][s][1], 2 * q),
                        word(wv[u][s][0], 2 * q + 1), word(wv[u][s][1], 2 * q + 1),
                        word(xv[u][s][nt], 2 * q), word(xv[u][s][nt], 2 * q + 1));
  }

  // Accumulator nt: d0,d1 = rows g, tokens 2c,2c+1; d2,d3 = rows g+8, the same tokens.
  float* mine = red + warp * R * TK;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int tok = nt * 8 + 2 * c;
    mine[g * TK + tok] = acc[nt][0];
    mine[g * TK + tok + 1] = acc[nt][1];
    mine[(g + 8) * TK + tok] = acc[nt][2];
    mine[(g + 8) * TK + tok + 1] = acc[nt][3];
  }
  __syncthreads();
  store_rows<T, WARPS, TK>(a, red, red + WARPS * R * TK, n0);
}

// Paired layout, for few tokens: the same 16 rows a block, but each load instruction of a warp
// covers 4 rows x 128 contiguous bytes (lane l: row l / 8, bytes (l % 8) * 16 of the chunk)
// where lora_decode_mma's covers 8 rows x 64 bytes: the W stream then asks L2 for whole lines,
// and a read of W in each pattern without the math took 9.5 against 10.9 µs (loraops_latency,
// H200). In the mma's operand, lane (g, c) holds tile row g: here physical row g / 2, half g % 2
// of the 128-byte chunk. Each token takes two columns of the n8 tile, one per half, its x
// halves placed to match: D[2ρ][2τ] + D[2ρ+1][2τ+1] is row ρ's dot product with token τ over the
// chunk (the other two entries multiply mismatched halves and are dropped). 4 tokens: one tile
// (2 and 4 tiles ran no faster than lora_decode_mma at m = 8 and 16: 15.98 and 15.57 µs against
// 15.16, H200 2026-11-29), 16 warps at <= 64 registers, two blocks per SM.
constexpr int kPairedWarps = 16, kPairedTokens = 4;

template <class T>
__global__ void __launch_bounds__(kPairedWarps * 32, 2) lora_decode_mma_paired(DecodeArgs a) {
  constexpr int U = 2;  // chunks in flight per warp
  constexpr int R = 16, TOK = kPairedTokens, WARPS = kPairedWarps;
  extern __shared__ float red[];  // [WARPS][R][TOK]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const int64_t n0 = int64_t(blockIdx.x) * R;
  const T* w = static_cast<const T*>(a.w.p);
  const T* x = static_cast<const T*>(a.x.p);
  decode_prologue(a);

  // wrow[p][h]: tile p (rows 8p..8p+7), instruction h (rows +4h): row 8p + 4h + lane / 8.
  // Rows past the end and tokens past m read row 0 and are never stored.
  const int piece = (lane & 7) * 8;  // the lane's 8 elements of a 64-element chunk
  const T* wrow[2][2];
#pragma unroll
  for (int p = 0; p < 2; ++p)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t n = n0 + 8 * p + 4 * h + (lane >> 3);
      wrow[p][h] = w + (n < a.n ? n : 0) * a.w.rs + piece;
    }
  // Tile column g: token g / 2, half g % 2, whose piece (g % 2) * 32 + c * 8 is the lane's own
  // W piece: x and W line up k for k.
  const int64_t m = g >> 1;
  const T* xrow = x + a.x.row_offset(m < a.m ? m : 0) + piece;
  prefetch_epilogue<T>(a, n0);

  float acc[2][4] = {};
  const int64_t chunks = (a.k + 63) / 64;
  for (int64_t ch0 = warp; ch0 < chunks; ch0 += int64_t(WARPS) * U) {
    uint4 wv[U][2][2], xv[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t k = (ch0 + int64_t(u) * WARPS) * 64;
      const bool in = k + piece < a.k;  // K % 8 == 0: a vector is all in or all out
#pragma unroll
      for (int p = 0; p < 2; ++p)
#pragma unroll
        for (int h = 0; h < 2; ++h) wv[u][p][h] = in ? load_stream(wrow[p][h] + k) : make_uint4(0, 0, 0, 0);
      xv[u] = in ? load_shared_ro(xrow + k) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int p = 0; p < 2; ++p)
#pragma unroll
        for (int q = 0; q < 2; ++q)
          mma16816<T>(acc[p], word(wv[u][p][0], 2 * q), word(wv[u][p][1], 2 * q), word(wv[u][p][0], 2 * q + 1),
                      word(wv[u][p][1], 2 * q + 1), word(xv[u], 2 * q), word(xv[u], 2 * q + 1));
  }

  // Accumulator: d0,d1 = tile row g, columns 2c, 2c+1 (token c, halves 0 and 1); d2,d3 = tile
  // row g+8. Tile row g's matching half is column 2c + g % 2; the other half of its physical row
  // is tile row g ^ 1, in lane ^ 4.
  float* mine = red + warp * R * TOK;
#pragma unroll
  for (int p = 0; p < 2; ++p) {
    float lo = (g & 1) ? acc[p][1] : acc[p][0];
    float hi = (g & 1) ? acc[p][3] : acc[p][2];
    lo += __shfl_xor_sync(0xffffffffu, lo, 4);
    hi += __shfl_xor_sync(0xffffffffu, hi, 4);
    if ((g & 1) == 0) {
      const int tok = c, row = 8 * p + (g >> 1);
      mine[row * TOK + tok] = lo;
      mine[(row + 4) * TOK + tok] = hi;
    }
  }
  __syncthreads();
  store_rows<T, WARPS, TOK>(a, red, red + WARPS * R * TOK, n0);
}

// Block-linear layout, one token, any dtype (16-byte rows): 16 rows a block (8 for small N, see
// launch_linear) and 16 warps, each load instruction 512 contiguous bytes of one row (a read of W
// in that order without the math took 8.9 against 9.5 us for the paired layout's 4 rows x 128
// bytes, loraops_latency, H200). With 16 rows, warp w takes rows 8 (w % 2) .. 8 (w % 2) + 7 and
// the chunks (of 512 bytes) w / 2, w / 2 + 8, ... of each, row after row; with 8 rows, every warp
// the block's rows and the chunks w, w + 16, .... A lane's 16 bytes of x (V elements) stay in
// registers for the 8 rows; the products are fp32 FMAs (one token needs no tensor core), 8 row
// sums a lane reduced over the warp by halving exchanges (9 shuffles). Graph replay, H200
// 2026-12-01, three machines: bf16 4096^2 against the paired kernel, r = 16 11.44-11.55 ->
// 11.04-11.32 us, scale 0 10.05-10.18 -> 9.78-10.08; float32 against lora_decode_fma (a warp a
// row, x staged), with 16-row blocks, x[1,1024] r8 3.55 -> 3.30, x[1,2048] r8 7.2 -> 6.7-6.9,
// x[1,512] r8 3.00 -> 2.88 (8-row blocks: launch_linear). A variant without the FMAs (the
// loads' words xor-ed) took 9.99 at bf16 scale 0 against 10.08: the math is not what keeps it 1
// us over the read (9.0).
constexpr int kLinearWarps = 16, kLinearRows = 8;  // rows a warp
// Ranks above this take the low-rank term a warp an output row, the lanes over j (one round trip
// for t and B's row): bf16 8192^2 m = 1 r = 64 37.1 -> 35.4 us; at r = 16 store_rows' thread an
// output stays faster, 11.32 against 11.44 (H200, 2026-12-01, graph replay).
constexpr int kLinearLoopRank = 16;

// RB rows a block: 16 (two halves of 8 rows, 8 warps a row), or 8 (16 warps a row) where blocks
// of 16 rows would leave SMs without a second block (ceil(N / 16) <= SMs): the same bytes in
// flight per block over twice the blocks, each warp with half the chunks (launch_linear).
template <class T, int RB>
__global__ void __launch_bounds__(kLinearWarps * 32, 2) lora_decode_linear(DecodeArgs a) {
  constexpr int R = RB, J = kLinearRows, V = kVec<T>, CH = 32 * V;  // CH: a load instruction's elements
  constexpr int HALVES = R / J, SPLIT = kLinearWarps / HALVES;      // SPLIT: warps a row
  extern __shared__ float red[];                                    // [SPLIT][16] (store_rows' layout)
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, half = warp % HALVES, part = warp / HALVES;
  const int64_t n0 = int64_t(blockIdx.x) * R;
  const T* x = static_cast<const T*>(a.x.p) + a.x.row_offset(0);
  if (a.pf.w && threadIdx.x == 0) prefetch_w_block(a.pf, blockIdx.x);  // (kPrefetchBytes)
  decode_prologue(a);
  prefetch_epilogue<T>(a, n0);

  // Rows past the end read the block's first row and are never stored.
  const int rows = int(a.n - n0 < R ? a.n - n0 : R) - half * J;
  const T* wb = static_cast<const T*>(a.w.p) + (n0 + half * J * (rows > 0)) * a.w.rs;
  float acc[J] = {};
  for (int64_t k = int64_t(part) * CH + lane * V; k - lane * V < a.k; k += int64_t(SPLIT) * CH) {
    const bool in = k < a.k;  // K % V == 0: a vector is all in or all out
    uint4 wv[J];
#pragma unroll
    for (int j = 0; j < J; ++j) wv[j] = in ? load_stream(wb + (j < rows ? j : 0) * a.w.rs + k) : make_uint4(0, 0, 0, 0);
    float xf[V];
    unpack<T>(in ? load_shared_ro(x + k) : make_uint4(0, 0, 0, 0), xf);
#pragma unroll
    for (int j = 0; j < J; ++j) {
      float wf[V];
      unpack<T>(wv[j], wf);
#pragma unroll
      for (int e = 0; e < V; ++e) acc[j] = fmaf(wf[e], xf[e], acc[j]);
    }
  }
  // Halving exchanges: at offsets 16, 8, 4 the lanes with that bit keep the upper half of their
  // sums and send the lower, so lane l ends with row l / 4's sum over 8 lanes; offsets 2 and 1
  // complete it over the warp.
#pragma unroll
  for (int o = 16, n = J / 2; o > 2; o >>= 1, n >>= 1) {
    const bool up = lane & o;
#pragma unroll
    for (int i = 0; i < n; ++i) {
      const float keep = up ? acc[i + n] : acc[i], send = up ? acc[i] : acc[i + n];
      acc[i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
    }
  }
  acc[0] += __shfl_xor_sync(0xffffffffu, acc[0], 2);
  acc[0] += __shfl_xor_sync(0xffffffffu, acc[0], 1);
  if ((lane & 3) == 0) red[part * 16 + half * J + (lane >> 2)] = acc[0];
  __syncthreads();
  if (a.t && a.r > kLinearLoopRank) {
    static_assert(kLinearWarps >= R, "a warp an output row");
    grid_dependency_wait();  // as in store_rows
    const int64_t n = n0 + warp;
    if (warp >= R || n >= a.n) return;
    const float v = finish_warp<T>(a, 0, n, warps_sum<SPLIT, 1>(red, warp, 0), lane);
    if (lane == 0) static_cast<T*>(a.y)[n] = from_float<T>(v);
    return;
  }
  // (b_whole is never set for this kernel: store_rows' whole-B path, compiled in at 16 rows
  // because SPLIT is 8, strides by 8 warps' threads and stages t after red; not for 16 warps.)
  store_rows<T, SPLIT, 1, R>(a, red, red + SPLIT * 16, n0);
}

// A warp per row of W; MT tokens per pass (the passes re-read the row, from L2).
// kStageX (16-byte rows, MT rows of x within kStageXBytes): the block first copies the pass's rows
// of x into shared memory, one load per thread, while each warp's first batch of W is in flight.
// Read from global memory, x's loads came one after another, each after the previous vector's
// math: ncu on the fp32 seed shape K = N = 1024 (one block of 8 warps per SM) found two thirds of
// the cycles waiting on L1TEX, and the pass took 2.4 us over an empty kernel in graph replay.
template <class T, int MT, bool kVector, bool kStageX>
__global__ void __launch_bounds__(kThreads) lora_decode_fma(DecodeArgs a) {
  static_assert(kVector || !kStageX, "staging copies 16-byte vectors");
  extern __shared__ uint4 xs[];  // kStageX: [MT][k / V] vectors of x
  decode_prologue(a);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t n = int64_t(blockIdx.x) * kWarps + warp;
  // Staging needs every warp at its barriers: a warp past N reads row N-1 and stores nothing.
  const bool live = n < a.n;
  if (!kStageX && !live) return;
  const T* wrow = static_cast<const T*>(a.w.p) + (live ? n : a.n - 1) * a.w.rs;
  const T* x = static_cast<const T*>(a.x.p);
  T* y = static_cast<T*>(a.y);
  bool waited = false;  // before the first store (see store_rows)
  for (int64_t m0 = 0; m0 < a.m; m0 += MT) {
    const T* xrow[MT];
#pragma unroll
    for (int i = 0; i < MT; ++i) xrow[i] = x + a.x.row_offset(m0 + i < a.m ? m0 + i : 0);
    float acc[MT] = {};
    if constexpr (kVector) {
      // Batches of B vectors per lane: all B loads of the row are issued before the first is
      // used (a dependent load per iteration would leave one 512-byte request per warp in flight).
      constexpr int V = kVec<T>, B = 8;
      const int64_t kv = a.k / V;  // vectors in a row of x
      const int64_t first = int64_t(lane) * V;
      uint4 wv[B];
      if constexpr (kStageX) {  // the first batch of W in flight while x is staged
#pragma unroll
        for (int b = 0; b < B; ++b) {
          const int64_t k = first + int64_t(b) * 32 * V;
          wv[b] = k < a.k ? load_stream(wrow + k) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int i = 0; i < MT; ++i)
          for (int64_t c = threadIdx.x; c < kv; c += kThreads) xs[i * kv + c] = load_shared_ro(xrow[i] + c * V);
        __syncthreads();
      }
      for (int64_t k0 = first; k0 < a.k; k0 += int64_t(32) * V * B) {
        if (!kStageX || k0 != first) {
#pragma unroll
          for (int b = 0; b < B; ++b) {
            const int64_t k = k0 + int64_t(b) * 32 * V;
            wv[b] = k < a.k ? load_stream(wrow + k) : make_uint4(0, 0, 0, 0);
          }
        }
#pragma unroll
        for (int b = 0; b < B; ++b) {
          const int64_t k = k0 + int64_t(b) * 32 * V;
          if (k >= a.k) break;
          float wf[V];
          unpack<T>(wv[b], wf);
#pragma unroll
          for (int i = 0; i < MT; ++i) {
            float xf[V];
            if constexpr (kStageX) unpack<T>(xs[i * kv + k / V], xf);
            else unpack<T>(load_shared_ro(xrow[i] + k), xf);
#pragma unroll
            for (int v = 0; v < V; ++v) acc[i] = fmaf(wf[v], xf[v], acc[i]);
          }
        }
      }
      if constexpr (kStageX) __syncthreads();  // every warp is done with xs before the next pass
    } else {
#pragma unroll 4
      for (int64_t k = lane; k < a.k; k += 32) {
        const float wf = to_float(wrow[k * a.w.cs]);
#pragma unroll
        for (int i = 0; i < MT; ++i) acc[i] = fmaf(wf, to_float(xrow[i][k * a.x.col_stride]), acc[i]);
      }
    }
    float mine = 0.f;
#pragma unroll
    for (int i = 0; i < MT; ++i) {
      const float v = warp_sum(acc[i]);
      if (lane == i) mine = v;
    }
    if (!waited) grid_dependency_wait(), waited = true;  // the shrink is complete after this
    if constexpr (MT == 1) {
      // One token: the low-rank term's r products split over the warp's lanes (one round trip for
      // t and B's row at r <= 32), where one lane's loop made r dependent-ish loads. The fp32
      // seed shape x[1,1024] at r = 4 / 8 / 16 / 64 went 3.62 / 3.70 / 3.79 / 5.30 -> 3.55 /
      // 3.57 / 3.52 / 3.98 us in graph replay (H200, 2026-11-30, with the shrink's one-token pass;
      // vectorised rows of one token have run on lora_decode_linear since 2026-12-01).
      // (Several tokens keep finish's loop in lanes 0..MT-1: a version with the lanes' split for
      // them measured slower at m = 2 and 4, and at one token too; NOTES.md, session 23.)
      // (a warp past N reads row N-1 and stores nothing; one token is never staged now, so no
      // warp past N gets here: kept as it ran)
      const int64_t nr = live ? n : a.n - 1;
      const float v = finish_warp<T>(a, m0, nr, mine, lane);
      if (live && lane == 0) y[m0 * a.n + n] = from_float<T>(v);
    } else {
      const int64_t m = m0 + lane;
      if (live && lane < MT && m < a.m) y[m * a.n + n] = from_float<T>(finish<T>(a, m, n, mine));
    }
  }
}

// ---- launching ----------------------------------------------------------------------------------

// Rows of `cols` elements that can be read as 16-byte vectors.
bool rows_vectorisable(const RowsView& v, int64_t es) {
  if (v.col_stride != 1 && v.cols > 1) return false;
  if (!aligned16(v.p) || (v.cols * es) % 16 != 0) return false;
  for (int d = 0; d < v.nlead; ++d)
    if ((v.lead_stride[size_t(d)] * es) % 16 != 0) return false;
  return true;
}

bool mat_vectorisable(const MatView& v, int64_t rows, int64_t cols, int64_t es) {
  if (v.cs != 1 && cols > 1) return false;
  return aligned16(v.p) && (cols * es) % 16 == 0 && (rows <= 1 || rows16(v.p, v.rs, es));
}

// A decode kernel's launch, as a programmatic dependent (it lets the next one start early:
// decode_prologue).
void launch_decode(void (*kernel)(DecodeArgs), const DecodeArgs& a, unsigned blocks, int threads, size_t smem,
                   cudaStream_t stream) {
  launch_kernel(kernel, dim3(blocks), threads, smem, stream, true, a);
}

// A block per 16 rows of W, WARPS warps; shared memory for the partial sums red[WARPS][16][TOK],
// then t where store_rows stages it (b_whole: one output a thread, B's rows whole).
template <int WARPS, int TOK>
constexpr size_t kPartialSumsSmem = size_t(WARPS) * 16 * TOK * sizeof(float);

template <class T, int WARPS, int TOK>
void launch_16_rows(void (*kernel)(DecodeArgs), DecodeArgs a, cudaStream_t stream) {
  constexpr size_t smem = kPartialSumsSmem<WARPS, TOK>;
  static_assert(smem <= 48 * 1024, "the partial sums fit the default shared memory");
  static_assert(!kWholeB<WARPS, TOK> || smem + size_t(TOK) * kWholeBVectors * kVec<T> * sizeof(float) <= 48 * 1024,
                "and t where it is staged");
  a.b_whole = kWholeB<WARPS, TOK> && a.t && a.r <= kWholeBVectors * kVec<T> &&
              mat_vectorisable(a.b, a.n, a.r, sizeof(T));
  const size_t staged = a.b_whole ? size_t(a.m * a.r) * sizeof(float) : 0;
  launch_decode(kernel, a, unsigned((a.n + 15) / 16), WARPS * 32, smem + staged, stream);
}

template <class T, int NT, int WARPS>
void launch_mma(const DecodeArgs& a, cudaStream_t stream) {
  launch_16_rows<T, WARPS, 8 * NT>(lora_decode_mma<T, NT, WARPS>, a, stream);
}

// The blocks of launch_mma<T, NT, WARPS>'s kernel that fit the device at once (t not staged).
template <class T, int NT, int WARPS>
int mma_slots(int device) {
  return resident_blocks(reinterpret_cast<const void*>(lora_decode_mma<T, NT, WARPS>), WARPS * 32, device,
                         kPartialSumsSmem<WARPS, 8 * NT>);
}

// Rows of x staged in shared memory up to this many bytes a pass (lora_decode_fma's kStageX).
// H200, fp32 m = 1 r = 8, graph replay, staged against not (same run, 2026-11-29, when one token
// ran here): K = 1024 (4 KiB) 3.78 against 4.03 µs, K = 2048 (8 KiB) 7.71 against 7.40-7.44, K =
// 512 3.31 against 3.25.
constexpr int64_t kStageXBytes = 4 * 1024;

template <class T, int MT>
void launch_fma(const DecodeArgs& a, bool vector, cudaStream_t stream) {
  const unsigned blocks = unsigned((a.n + kWarps - 1) / kWarps);
  const int64_t stage = int64_t(MT) * a.k * int64_t(sizeof(T));  // a multiple of 16 when vector
  // Staged for float at 2 tokens a pass: 16-bit types reach this kernel vectorised only past the
  // mma kernels' reach, and at 4 and 8 tokens ptxas spilled the staged kernel (36-68 bytes).
  constexpr bool kMayStage = std::is_same_v<T, float> && MT == 2;
  if constexpr (kMayStage) {
    if (vector && stage <= kStageXBytes)
      return launch_decode(lora_decode_fma<T, MT, true, true>, a, blocks, kThreads, size_t(stage), stream);
  }
  // One token comes here only with rows that are not 16-byte vectors (lora_decode_linear takes
  // the rest).
  if constexpr (MT > 1) {
    if (vector) return launch_decode(lora_decode_fma<T, MT, true, false>, a, blocks, kThreads, 0, stream);
  }
  launch_decode(lora_decode_fma<T, MT, false, false>, a, blocks, kThreads, 0, stream);
}

// Blocks of 8 rows while blocks of 16 would not give every SM a second block (ceil(N / 16) <=
// SMs: twice the blocks, still one wave; e.g. the float32 seed shapes), else of 16. Against
// 16-row blocks there (graph replay, H200 2026-12-01): fp32 x[1,2048] r8 6.7 -> 5.0 us (scale 0
// 5.2 -> 3.9), x[1,1024] r8 3.3 -> 3.3 (r64 3.65 -> 3.55), x[1,512] r8 2.87 -> 2.77.
constexpr size_t kLinearSmem = size_t(kLinearWarps) * 16 * sizeof(float);

template <class T>
auto linear_kernel(int rows) {
  return rows == 16 ? lora_decode_linear<T, 16> : lora_decode_linear<T, 8>;
}

// The blocks of `rows` rows that fit the device at once.
template <class T>
int linear_slots(int rows, int device) {
  return resident_blocks(reinterpret_cast<const void*>(linear_kernel<T>(rows)), kLinearWarps * 32, device, kLinearSmem);
}

// lora_decode_linear's grid for n rows: blocks of 16 rows, or of 8 where 16 would leave SMs
// without a second block; whether it is one wave. Worked out once a call (occupancy lookups take
// a lock), for the prefetch and the launch.
struct LinearGrid {
  int rows;
  int64_t blocks;
  bool one_wave;
};

template <class T>
LinearGrid linear_grid(int64_t n, int device) {
  const int slots16 = linear_slots<T>(16, device);
  const int rows = 2 * ((n + 15) / 16) > slots16 ? 16 : 8;
  const int64_t blocks = (n + rows - 1) / rows;
  return {rows, blocks, blocks <= (rows == 16 ? slots16 : linear_slots<T>(8, device))};
}

template <class T>
void launch_linear(const DecodeArgs& a, const LinearGrid& g, cudaStream_t stream) {
  launch_decode(linear_kernel<T>(g.rows), a, unsigned(g.blocks), kLinearWarps * 32, kLinearSmem, stream);
}

// Rows of A a one-token shrink block reads: at most kShrinkBlockBytes of A a block (4 rows up to
// rows of 8 KiB, 2 up to 16 KiB, then 1). bf16 8192^2 m = 1 r = 64 (rows of 16 KiB): 35.09 us
// with 4 rows a block (16 blocks), 34.75 with 2 or 1; no change at 4096^2 r16 (11.13 at 4 or 2
// rows); float32 x[1,2048] r8 (8 KiB rows) 5.0 at 4 rows against 5.3 at 1 (graph replay, H200,
// 2026-12-01, each twice in one run).
constexpr int64_t kShrinkBlockBytes = 32 * 1024;
int one_token_shrink_rows(int64_t row_bytes) {
  return row_bytes * 4 <= kShrinkBlockBytes ? 4 : row_bytes * 2 <= kShrinkBlockBytes ? 2 : 1;
}

template <class T, bool kVector>
auto one_token_shrink(int rows) {
  static_assert(kShrinkRows == 4, "the rows one_token_shrink_rows picks");
  return rows == 4   ? lora_shrink<T, kVector, 1, 4>
         : rows == 2 ? lora_shrink<T, kVector, 1, 2>
                     : lora_shrink<T, kVector, 1, 1>;
}

// t's memory under CUDA-graph capture (stream_scratch): a range of this pool per (capture,
// stream). With a stream-ordered allocation, its alloc and free nodes sat between one call's
// decode kernel and the next call's shrink, and the shrink entered only ~0.75 us after the decode
// kernel's last block ended, as a plain launch (a %globaltimer trace of the last launches of a
// 40-call graph, H200, 2026-12-01; branch next/s29-trace). A call's shrink writes t only after its
// wait, once the work before it (the last call's decode kernel, which read t) has completed.
__device__ __align__(256) float lora_t_pool[512 * 1024];  // 2 MiB a device; a live capture holds its largest m x r
const CapturePool kTPool{kLoraDecodeT, sizeof(lora_t_pool), pool_address<lora_t_pool>};

// The decode's W: kPrefetchBytes of each block's rows asked of L2 before the block streams them,
// by whoever is resident while the kernel before ends. At one token that is the decode kernel
// itself where it waits first (no shrink: the next call's blocks take the slots the last call's
// free, and ask before their wait), else extra blocks of the shrink's grid, one a decode block
// (the decode kernel launches only ~0.7 us after the shrink's wait). DRAM would idle in that
// window: the last call's tail, then the wait's release and the launch. Where the
// one-token grid is several waves, only its first (a later wave's blocks start long after), and
// only by the shrink's blocks (without a shrink, not measured); the mma kernels (2 to 64
// tokens, 16-row blocks) have their first blocks, one an SM (at 17-32 tokens every block of the
// first wave; mma_prefetch), prefetched by the shrink's extra blocks (nothing without a
// shrink: their blocks are not resident early). Graph
// replay, bf16 4096^2 r16 with 4 weight sets rotating past L2, H200 2026-12-01: m1 10.70 -> 9.41
// us and 9.49-9.51 on another machine (16 KiB a block 9.82;
// asked instead by the shrink's own 4 blocks after their wait, 10.6 -> 15.3 at 8 KiB and ~4.5 us
// more per 2 MiB after: the shrink's grid, which the decode kernel's epilogue waits for, ends only
// once its prefetches have); scale 0 9.84 -> 8.37 (32 KiB; 64 KiB 8.41); the float32 seed shapes
// with W hot in L2 within 0.05 (x[1,512] r8 2.42 -> 2.45, x[1,1024] r8 2.90 -> 2.85); m8 12.12 ->
// 11.44, m16 15.48 -> 14.33, m16 r64 23.47 -> 23.41, 8192^2 m16 r64 55.36 -> 54.73 (at 32 KiB one
// an SM; 5-32 tokens since: mma_prefetch).
constexpr int kPrefetchBytes = 32 * 1024;

// The mma kernels' W (2 to 64 tokens, 16-row blocks): the first blocks, asked by the shrink's
// extra blocks.
template <class T>
WPrefetch mma_prefetch(const LoraForwardParams& p, int device, int64_t* blocks) {
  const int64_t es = sizeof(T);
  // 64 KiB a block at 5-32 tokens, and every block at 17-32 (graph replay, bf16 4096^2 r16, 4
  // weight sets rotating, H200 2026-12-01, two rounds interleaved on each of two machines; 32
  // KiB one an SM before): m8 11.13 -> 10.97 and 11.15 -> 10.96, m32 26.00 -> 25.41 and 25.99 ->
  // 25.37 (64 KiB one an SM 25.83), m16 13.99 both ways (r64 and 8192^2 r64 within 0.1); every
  // block at 64 KiB lost at m8 (12.37) and m16 (r64 23.89, 8192^2 50.53). 2-4 and 33-64 tokens
  // not measured: 32 KiB one an SM. "Every block" is the first wave's (only one wave, 256 of
  // 264 slots, was measured; a later wave's blocks start long after, and a large N would ask
  // more of L2 than it holds).
  const int64_t grid = (p.n + 15) / 16;
  const bool more = p.m > kPairedTokens && p.m <= 32;
  const int64_t wave = p.m > 16 && more ? mma_slots<T, 4, 8>(device)  // (run's kernel at 17-32 tokens)
                                        : sm_count(device);
  *blocks = std::min<int64_t>(grid, wave);
  return WPrefetch{static_cast<const char*>(p.weight.p), p.weight.rs * es, p.k * es, p.n, 16,
                   more ? 2 * kPrefetchBytes : kPrefetchBytes};
}

// What to prefetch for a decode call on vectorised rows (w null: nothing), and the blocks
// (*blocks) the shrink's grid would add for it; lin: the one-token grid (m = 1).
template <class T>
WPrefetch decode_prefetch(const LoraForwardParams& p, const LinearGrid& lin, int device, int64_t* blocks) {
  const int64_t es = sizeof(T);
  if (p.n == 0 || p.k == 0) return {};  // (k = 0: no W to read)
  if (p.m > 1) {  // the mma kernels' first blocks, by the shrink's blocks
    if constexpr (std::is_same_v<T, float>)
      return {};  // (lora_decode_fma: not measured)
    else
      return mma_prefetch<T>(p, device, blocks);
  }
  // A grid of several waves (8192 rows at 16 a block): its first wave's blocks, by the shrink's
  // extra blocks. bf16 8192^2 m1 r64: 33.85 -> 33.70 us with every grid triggering early
  // (without that, 34.06 -> 34.58; graph replay, H200 2026-12-01, two rounds interleaved).
  *blocks = lin.one_wave ? lin.blocks : linear_slots<T>(lin.rows, device);
  return WPrefetch{static_cast<const char*>(p.weight.p), p.weight.rs * es, p.k * es, p.n, lin.rows, kPrefetchBytes};
}

template <class T>
void run(const LoraForwardParams& p, cudaStream_t stream) {
  const int64_t es = sizeof(T);
  const bool low_rank = p.r > 0 && p.scale != 0.f;
  const bool keep_xa = p.xa_out != nullptr && p.r > 0;  // the shrink also stores x@A.T
  const bool x_vec = rows_vectorisable(p.x, es);
  // Held until the decode kernel is enqueued (both kernels use t).
  const Scratch lease = stream_scratch(p.device_index, stream, low_rank ? size_t(p.m * p.r) * 4 : 0,
                                       "lora_forward", "x", &kTPool);
  float* t = reinterpret_cast<float*>(lease.get());
  const int dev = p.device_index;
  const bool vec = x_vec && mat_vectorisable(p.weight, p.n, p.k, es);
  const LinearGrid lin = vec && p.m == 1 ? linear_grid<T>(p.n, dev) : LinearGrid{};
  int64_t pf_blocks = 0;  // the decode blocks whose W is prefetched
  const WPrefetch pf = vec ? decode_prefetch<T>(p, lin, dev, &pf_blocks) : WPrefetch{};
  if (low_rank || keep_xa) {
    const int rows = p.m == 1 ? one_token_shrink_rows(p.k * es) : kShrinkRows;
    const int64_t shrink_blocks = (p.r + rows - 1) / rows;
    ShrinkArgs s{p.x, p.lora_a, p.m, p.k, p.r, p.scale, low_rank ? t : nullptr, p.xa_out, pf,
                 pf.w ? pf_blocks : 0, shrink_blocks};
    const dim3 blocks(unsigned(shrink_blocks + s.pf_blocks));
    const bool vector = x_vec && mat_vectorisable(p.lora_a, p.r, p.k, es);
    auto shrink = p.m == 1 ? (vector ? one_token_shrink<T, true>(rows) : one_token_shrink<T, false>(rows))
                           : (vector ? lora_shrink<T, true, 8> : lora_shrink<T, false, 8>);
    launch_kernel(shrink, blocks, kThreads, 0, stream, true, s);
  }
  if (p.n == 0) return;  // only xa was wanted (y is empty)
  const DecodeArgs a{p.x, p.weight, p.lora_b, p.bias, p.bias_stride, low_rank ? t : nullptr,
                     p.out, p.m, p.n, p.k, p.r, /*wait_first=*/!(low_rank || keep_xa),
                     /*b_whole=*/false, (low_rank || keep_xa || p.m != 1 || !lin.one_wave) ? WPrefetch{} : pf};
  // One token, every dtype: the block-linear layout.
  if (vec && p.m == 1) return launch_linear<T>(a, lin, stream);
  if constexpr (!std::is_same_v<T, float>) {
    if (vec) {
      // Up to 4 tokens, the paired layout (whole 128-byte lines per load); above, lora_decode_mma
      // (why: at lora_decode_mma_paired).
      if (p.m <= kPairedTokens)
        return launch_16_rows<T, kPairedWarps, kPairedTokens>(lora_decode_mma_paired<T>, a, stream);
      // 16 warps at <= 64 registers for one token tile, two blocks per SM; 8 warps above.
      if (p.m <= 8) return launch_mma<T, 1, 16>(a, stream);
      if (p.m <= 16) return launch_mma<T, 2, 8>(a, stream);
      if (p.m <= 32) return launch_mma<T, 4, 8>(a, stream);
      return launch_mma<T, 8, 8>(a, stream);
    }
  }
  if (p.m == 1) return launch_fma<T, 1>(a, vec, stream);
  if (p.m == 2) return launch_fma<T, 2>(a, vec, stream);
  if (p.m <= 4) return launch_fma<T, 4>(a, vec, stream);
  launch_fma<T, 8>(a, vec, stream);
}

}  // namespace

bool lora_decode_vectorised(const detail::LoraForwardParams& p) {
  const int64_t es = dtype_size(p.dtype);
  return rows_vectorisable(p.x, es) && mat_vectorisable(p.weight, p.n, p.k, es) &&
         (p.r == 0 || p.scale == 0.f || mat_vectorisable(p.lora_a, p.r, p.k, es));
}

void lora_forward_decode(const detail::LoraForwardParams& p, void* stream) {
  DeviceGuard guard(p.device_index);
  dispatch_dtype(p.dtype, [&](auto tag) { run<decltype(tag)>(p, static_cast<cudaStream_t>(stream)); });
}

}  // namespace loraops::cuda
