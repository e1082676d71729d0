// What the attention kernels (attention.cu: flash and general; attention_flash_wgmma.cu;
// attention_decode.cu: one query row) share: their argument block, the lazy rescale's slack, the
// swizzled [rows][D] shared-memory tiles that ldmatrix reads free of bank conflicts, the causal
// flash blocks' order (heaviest first over groups of (head, batch) pairs), the dynamic shared-memory
// opt-in, and the wgmma kernel's launcher.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <utility>

#include "cuda/common.cuh"
#include "cuda/kernels.hpp"
#include "cuda/mma.cuh"

namespace loraops::cuda::attn {

constexpr float kLog2e = 1.4426950408889634f;

struct AttnArgs {
  const void* q;
  const void* k;
  const void* v;
  void* out;                    // contiguous [B, Hq, Sq, D]
  int64_t qs[4], ks[4], vs[4];  // element strides of [B, H, S, D]
  int64_t hq, hkv, sq, sk, d;
  float scale_log2;  // scale * log2(e): scores go through exp2
  bool causal;
  int64_t pair_groups = 1;  // causal flash: groups of (head, batch) pairs, each heaviest first
};

inline AttnArgs args_of(const detail::AttentionParams& p) {
  AttnArgs a{};
  a.q = p.q, a.k = p.k, a.v = p.v, a.out = p.out;
  for (int i = 0; i < 4; ++i)
    a.qs[i] = p.q_strides[size_t(i)], a.ks[i] = p.k_strides[size_t(i)], a.vs[i] = p.v_strides[size_t(i)];
  a.hq = p.hq, a.hkv = p.hkv, a.sq = p.sq, a.sk = p.sk, a.d = p.d;
  a.scale_log2 = p.scale * kLog2e;
  a.causal = p.causal;
  return a;
}

// Whether every [.., D] row of an operand starts 16-byte aligned and is contiguous: what cp.async
// of 16-byte chunks (the flash and decode tiles, the SIMT decode kernel's staging) needs.
inline bool rows_aligned16(const void* ptr, const std::array<int64_t, 4>& strides, DType dtype) {
  const int64_t per16 = 16 / int64_t(dtype_size(dtype));
  if (!aligned16(ptr) || strides[3] != 1) return false;
  for (int i = 0; i < 3; ++i)
    if (strides[size_t(i)] % per16 != 0) return false;
  return true;
}

constexpr int kBN = 64;  // keys per K/V tile (the mma.sync kernels)

// How far (log2 units) a row's maximum may grow past the one its probabilities are taken against
// before the running maximum, sum and output are rescaled: probabilities stay below 2^8.
constexpr float kRescaleSlack = 8.f;

// Element offset of 16-byte chunk c of row r in a [rows][D] tile, chunks XOR-swizzled by row.
template <int D>
__device__ __forceinline__ int swz(int r, int c) {
  return r * D + ((c ^ (r & 7)) << 3);
}

// Rows [0, ROWS) of a [rows][D] matrix at g (row stride rs elements), all in bounds, into a
// swizzled [ROWS][D] tile by a block of kThreads threads. A thread copies one 16-byte chunk column
// c of rows r0, r0 + P, r0 + 2P, ... (P = kThreads / chunks per row, a multiple of 8, so r & 7 and
// with it the swizzled column stay the same): its shared address is converted once and its global
// one advances by a constant. (A loop over i with i / chunks and i % chunks cost ~15 instructions
// per chunk: ~700 per warp in the decode kernel, which issues little else; a bound test and its
// select of a 64-bit address ~12 more: H200, Sk 4096, 17% fewer instructions issued and 5.5% fewer
// SM cycles without them.)
template <class T, int D, int ROWS, int kThreads>
__device__ __forceinline__ void load_whole_tile(T* tile, const T* g, int64_t rs) {
  constexpr int kChunks = D / 8, kPass = kThreads / kChunks;
  static_assert(kThreads % kChunks == 0 && kPass % 8 == 0 && ROWS % kPass == 0,
                "whole passes of rows, each a multiple of the swizzle period");
  const int c = int(threadIdx.x) % kChunks, r0 = int(threadIdx.x) / kChunks;
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(tile + swz<D>(r0, c)));
  const T* src = g + r0 * rs + c * 8;
  const int64_t step = kPass * rs;
#pragma unroll
  for (int j = 0; j < ROWS / kPass; ++j, src += step)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst + uint32_t(j * kPass * D * sizeof(T))), "l"(src));
}

// load_whole_tile for a tile that may cross the matrix's end: rows at or past rows_left and 16-byte
// chunks at or past cols_left are zero-filled, each chunk behind its own bound test.
template <class T, int D, int ROWS, int kThreads>
__device__ __forceinline__ void load_bounded_tile(T* tile, const T* g, int64_t rs, int64_t rows_left,
                                                  int64_t cols_left = D) {
  constexpr int kChunks = D / 8, kPass = kThreads / kChunks;
  static_assert(kThreads % kChunks == 0 && kPass % 8 == 0 && ROWS % kPass == 0,
                "whole passes of rows, each a multiple of the swizzle period");
  const int c = int(threadIdx.x) % kChunks, r0 = int(threadIdx.x) / kChunks;
  T* const dst = tile + swz<D>(r0, c);
  const T* const src = g + r0 * rs + c * 8;
  const int64_t step = kPass * rs;
  const bool col_ok = c * 8 < cols_left;
#pragma unroll
  for (int j = 0; j < ROWS / kPass; ++j) {
    const bool ok = col_ok && r0 + j * kPass < rows_left;
    cp_async16(dst + j * kPass * D, ok ? src + j * step : g, ok);
  }
}

// Either of the two, by a test the block agrees on. (A kernel that knows which it needs calls that
// one: the decode kernel, whose every key tile of a split but a short last one is whole.)
template <class T, int D, int ROWS, int kThreads>
__device__ __forceinline__ void load_tile(T* tile, const T* g, int64_t rs, int64_t rows_left, int64_t cols_left = D) {
  if (rows_left >= ROWS && cols_left >= D) load_whole_tile<T, D, ROWS, kThreads>(tile, g, rs);
  else load_bounded_tile<T, D, ROWS, kThreads>(tile, g, rs, rows_left, cols_left);
}

// Which row block of which (head, batch) a flash block computes. The scheduler hands out blocks
// in linear blockIdx order. Causal: the last row blocks see the most keys, so blocks go heaviest
// first, across a group of (head, batch) pairs: every pair of the group has its heaviest block
// before any pair has its next, and the grid ends on light blocks (a short tail). The pairs are
// split into a.pair_groups groups of nearly equal size, one after the other. Per pair (as many
// groups as pairs), the heavy blocks of the last pairs start among the grid's last few hundred
// blocks: a simulation of in-order dispatch puts the tail at 7.5% (B4 H32 S4096 D128) and 10%
// (B16 H32 S1024 D64), against 0-3% for a few large groups. One group would read every head's K
// and V at once, past the L2 (set_pair_groups sizes the groups). Not causal: blockIdx as it is.
struct FlashBlock {
  int mb;
  int64_t h, b;
};
__device__ __forceinline__ FlashBlock flash_block(const AttnArgs& a) {
  if (!a.causal) return {int(blockIdx.x), int64_t(blockIdx.y), int64_t(blockIdx.z)};
  const int64_t nb = gridDim.x, nh = gridDim.y, pairs = nh * int64_t(gridDim.z);
  const int64_t lin = blockIdx.x + nb * (blockIdx.y + nh * int64_t(blockIdx.z));
  // The first `extra` groups hold base + 1 pairs, the others base.
  const int64_t ng = a.pair_groups, base = pairs / ng, extra = pairs - base * ng;
  const int64_t big = nb * (base + 1), split = extra * big;
  int64_t in, size, first;
  if (lin < split) {
    const int64_t gi = lin / big;
    in = lin - gi * big, size = base + 1, first = gi * (base + 1);
  } else {
    const int64_t gi = (lin - split) / (nb * base);
    in = lin - split - gi * nb * base, size = base, first = extra * (base + 1) + gi * base;
  }
  const int64_t rank = in / size, pair = first + (in - rank * size);
  return {int(nb - 1 - rank), pair % nh, pair / nh};
}

// The largest group of (head, batch) pairs (flash_block) whose K and V (the keys its heads share,
// under GQA) take at most 3/4 of the L2: in the simulation, large groups that fit the L2 leave a
// tail within ~2% (small ones do not: B1 H32 S4096 in groups of 12, 13%).
inline int64_t flash_max_group(const AttnArgs& a, int device) {
  const int bytes = device_attribute<cudaDevAttrL2CacheSize>(device);
  const int64_t l2_bytes = bytes > 0 ? bytes : (50 << 20);
  const int64_t kv_per_pair = std::max<int64_t>(1, 2 * a.sk * a.d * 2 / (a.hq / a.hkv));  // 16-bit K and V
  return std::max<int64_t>(1, l2_bytes * 3 / 4 / kv_per_pair);
}

// Causal: a.pair_groups for a grid of `batch` x a.hq (head, batch) pairs, in groups of at most
// head_group pairs (0: flash_max_group's).
inline void set_pair_groups(AttnArgs& a, int64_t batch, int device, int64_t head_group) {
  if (!a.causal) return;
  const int64_t pairs = a.hq * batch, group = head_group > 0 ? head_group : flash_max_group(a, device);
  a.pair_groups = std::max<int64_t>(1, (pairs + group - 1) / group);
}

// attention_flash_wgmma.cu: the flash forward on warpgroup MMAs, 128-row blocks (a's D 64 or 128,
// dtype float16 or bfloat16, what attention_flash_eligible admits).
void launch_flash_wgmma(const AttnArgs& a, DType dtype, int64_t batch, int device, cudaStream_t stream,
                        int64_t head_group);

// Lets `kernel` take `bytes` of dynamic shared memory on the current device (past the default 48
// KB). The attribute is set only when a call needs more than it was last set to for that
// (kernel, device), not on every launch.
inline void allow_dynamic_smem(const void* kernel, size_t bytes) {
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, size_t> allowed;
  int device = 0;
  LORAOPS_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mu);
  size_t& now = allowed[{kernel, device}];
  if (bytes <= now) return;
  LORAOPS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  now = bytes;
}

}  // namespace loraops::cuda::attn
