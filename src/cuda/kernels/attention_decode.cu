// attention for one query row (Sq = 1, D = 64 or 128, unit-stride rows): split-K. The keys of
// each key/value head are cut into splits; a block owns one split and serves up to 16 query heads
// of the head's group (all of them up to 16, so each K and V byte is read once from memory; a
// larger group's head tiles re-read it, mostly from L2). It leaves a partial (max score,
// sum of 2^(s - max), unnormalised output) per query head; the tensor-core kernel's last block of
// each head group merges the splits (up to 16 of them), else attention_decode_combine, a second
// launch, does. One 64-row flash block per query head would waste 63 of its 64 rows and fill a fraction
// of the SMs. With Sq = 1 the causal mask hides no key (bottom-right: the row sees all Sk).
//
// attention_decode_mma (float16/bfloat16, rows 16-byte aligned): tensor cores. Each warp of the
// block takes 16 keys of every 64-key tile as the 16 rows of mma.m16n8k16 and the group's query
// heads as the columns of one or two 8-column tiles (groups above 16 take several head tiles):
// S^T = K Q^T and O^T += V^T P^T with an online softmax in registers, and the block's warps merge
// at the end. K/V tiles stream through a 3-stage cp.async pipeline, so a split's loads stay in
// flight while earlier tiles are computed.
//
// attention_decode (float32, or halves with misaligned rows): the SIMT kernel, a chunk of keys per
// block staged in shared memory, a warp per key for the scores and a thread per output dim for
// P @ V. It was the only decode kernel until 2026-11-29; on the H200 it took 17.5 us (graph) for
// Sq = 1, Sk = 4096, 32/8 heads, D = 128, bound by its instruction count (Nsight Compute: 52%
// memory throughput, 12% of DRAM's), not by memory.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "cuda/arrival_slots.hpp"
#include "cuda/kernels/attention_tiles.cuh"
#include "cuda/stream_scratch.hpp"

namespace loraops::cuda {

namespace {

using attn::AttnArgs;
using attn::kBN;
using attn::swz;


// ---- the SIMT kernel (float32; halves whose rows are not 16-byte aligned) --------------------

constexpr int kDecodeWarps = 8;
constexpr int kDecodeMaxGroup = kDecodeWarps;  // query heads per kv head: a warp per row below

// Keys per block: the chunk's K and V tiles take 32 KB of shared memory (64 keys for bf16 at
// D = 128), so with the block's other 14 KB four blocks fit an SM without opting in to more.
template <class T, int D>
constexpr int decode_chunk() {
  return int(16384 / (D * sizeof(T)));
}

// n consecutive elements from shared memory as floats, in as few loads as their size allows (8 or
// 16 bytes: the slices of a row the lanes of a warp read side by side, conflict-free).
template <class T, int n>
__device__ __forceinline__ void load_row_slice(float (&out)[n], const T* src) {
  if constexpr (std::is_same_v<T, float> && n == 4) {
    const float4 x = *reinterpret_cast<const float4*>(src);
    out[0] = x.x, out[1] = x.y, out[2] = x.z, out[3] = x.w;
  } else if constexpr (std::is_same_v<T, float> && n == 2) {
    const float2 x = *reinterpret_cast<const float2*>(src);
    out[0] = x.x, out[1] = x.y;
  } else if constexpr (sizeof(T) == 2 && n == 4) {
    const uint2 x = *reinterpret_cast<const uint2*>(src);
    const T* h = reinterpret_cast<const T*>(&x);
#pragma unroll
    for (int e = 0; e < 4; ++e) out[e] = to_float(h[e]);
  } else {
#pragma unroll
    for (int e = 0; e < n; ++e) out[e] = to_float(src[e]);
  }
}

// Partials of chunk c for query head h of batch b, at [(b * hq + h) * nchunks + c]: the chunk's
// max score (base 2), its sum of 2^(s - max), and D unnormalised outputs.
// o starts 16-byte aligned (the in-grid merge reads it by float4).
struct DecodePartials {
  float* m;
  float* l;
  float* o;
  int64_t nchunks;
};

// `vec`: every K and V row starts 16-byte aligned, so the chunk streams in by cp.async.
template <class T, int D>
__global__ void __launch_bounds__(kDecodeWarps * 32)
    attention_decode(AttnArgs a, DecodePartials part, bool vec) {
  constexpr int kChunk = decode_chunk<T, D>();
  constexpr int kPerLane = D / 32;       // q and k elements per lane in the scores
  constexpr int kVec = 16 / sizeof(T);   // elements per 16-byte copy
  __shared__ __align__(16) T kt[kChunk * D];
  __shared__ __align__(16) T vt[kChunk * D];
  __shared__ __align__(16) float qs[kDecodeMaxGroup][D];
  __shared__ __align__(16) float ps[kDecodeMaxGroup][kChunk];
  __shared__ float osum[2][kDecodeMaxGroup][D];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t c = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
  const int group = int(a.hq / a.hkv);
  const int64_t j0 = c * kChunk;
  const int count = int(min(int64_t(kChunk), a.sk - j0));
  allow_dependents();  // the combine's blocks may be scheduled now (they wait for this grid's end)
  const T* k = static_cast<const T*>(a.k) + b * a.ks[0] + hk * a.ks[1] + j0 * a.ks[2];
  const T* v = static_cast<const T*>(a.v) + b * a.vs[0] + hk * a.vs[1] + j0 * a.vs[2];

  // The chunk's K, then its V, into shared memory with every load in flight at once: the
  // block's only long wait is one memory latency, and V streams while the scores are computed.
  if (vec) {
    for (int i = threadIdx.x; i < count * (D / kVec); i += blockDim.x) {
      const int j = i / (D / kVec), e = (i % (D / kVec)) * kVec;
      cp_async16(kt + j * D + e, k + j * a.ks[2] + e, true);
    }
    cp_async_commit();
    for (int i = threadIdx.x; i < count * (D / kVec); i += blockDim.x) {
      const int j = i / (D / kVec), e = (i % (D / kVec)) * kVec;
      cp_async16(vt + j * D + e, v + j * a.vs[2] + e, true);
    }
    cp_async_commit();
  } else {
    for (int i = threadIdx.x; i < count * D; i += blockDim.x) {
      const int j = i / D, e = i % D;
      kt[j * D + e] = k[j * a.ks[2] + e];
      vt[j * D + e] = v[j * a.vs[2] + e];
    }
  }

  for (int i = threadIdx.x; i < group * D; i += blockDim.x) {  // q of the group, scaled
    const int g = i / D, d = i % D;
    const T* q = static_cast<const T*>(a.q) + b * a.qs[0] + (hk * group + g) * a.qs[1];
    qs[g][d] = to_float(q[d]) * a.scale_log2;
  }
  cp_async_wait<1>();  // K landed (V may still be in flight)
  __syncthreads();

  // scores: a warp per key, every query head of the group. Shared memory, not DRAM, bounded
  // this phase: per key, scalar q reads 4-way bank-conflicted (lanes 8 floats apart) and five
  // shuffles per head. So each lane reads its q and k slices as vectors, and the heads' partial
  // dot products are reduced together: each shuffle step halves the values a lane carries, 9
  // shuffles for up to 8 heads, after which lane 4 g' + {0..3} holds the score of head
  // g = 4 b2 + 2 b3 + b4 (b = the lane's bits), g' = 0..7.
  for (int j = warp; j < count; j += kDecodeWarps) {
    float kv[kPerLane];
    load_row_slice<T, kPerLane>(kv, kt + j * D + lane * kPerLane);
    float v[kDecodeMaxGroup];
#pragma unroll
    for (int g = 0; g < kDecodeMaxGroup; ++g) {
      v[g] = 0.f;
      if (g < group) {
        float qv[kPerLane];
        load_row_slice<float, kPerLane>(qv, &qs[g][lane * kPerLane]);
#pragma unroll
        for (int e = 0; e < kPerLane; ++e) v[g] = fmaf(qv[e], kv[e], v[g]);
      }
    }
    // reduce-scatter: at offset `off`, a lane keeps one of each pair (by its bit `off`), adds
    // its partner's copy of the same one
#pragma unroll
    for (int n = kDecodeMaxGroup, off = 16; n > 1; n /= 2, off /= 2) {
      const bool upper = lane & off;
#pragma unroll
      for (int i = 0; i < n / 2; ++i) {
        const float keep = upper ? v[2 * i + 1] : v[2 * i];
        const float send = upper ? v[2 * i] : v[2 * i + 1];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, off);
      }
    }
    float sc = v[0];
    sc += __shfl_xor_sync(0xffffffffu, sc, 2);
    sc += __shfl_xor_sync(0xffffffffu, sc, 1);
    const int g = 4 * ((lane >> 2) & 1) + 2 * ((lane >> 3) & 1) + ((lane >> 4) & 1);
    if ((lane & 3) == 0 && g < group) ps[g][j] = sc;
  }
  __syncthreads();

  // the chunk's softmax, a warp per query head: max, then 2^(s - max) in place, and their sum
  if (warp < group) {
    float mx = -INFINITY;
    for (int j = lane; j < count; j += 32) mx = fmaxf(mx, ps[warp][j]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    float sum = 0.f;
    for (int j = lane; j < count; j += 32) {
      const float p = exp2f(ps[warp][j] - mx);
      ps[warp][j] = p;
      sum += p;
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (lane == 0) {
      const int64_t at = (b * a.hq + hk * group + warp) * part.nchunks + c;
      part.m[at] = mx;
      part.l[at] = sum;
    }
  }
  cp_async_wait<0>();  // V landed
  __syncthreads();

  // P @ V: thread t owns output dim t % D for a contiguous share of the chunk's keys (kHalves
  // shares), so that four probabilities of a head come in one broadcast float4.
  constexpr int kHalves = kDecodeWarps * 32 / D;  // 4 for D = 64, 2 for D = 128
  constexpr int kShare = kChunk / kHalves;        // keys per share, a multiple of 4
  const int d = threadIdx.x % D, half = threadIdx.x / D;
  const int jb = half * kShare, je = min(count, jb + kShare);
  float acc[kDecodeMaxGroup] = {};
  // (loops over the group run to the constant maximum, guarded: acc stays in registers)
  int j = jb;
  for (; j + 4 <= je; j += 4) {
    float vv[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) vv[u] = to_float(vt[(j + u) * D + d]);
#pragma unroll
    for (int g = 0; g < kDecodeMaxGroup; ++g)
      if (g < group) {
        const float4 p4 = *reinterpret_cast<const float4*>(&ps[g][j]);
        acc[g] = fmaf(p4.x, vv[0], fmaf(p4.y, vv[1], fmaf(p4.z, vv[2], fmaf(p4.w, vv[3], acc[g]))));
      }
  }
  for (; j < je; ++j) {
    const float vv = to_float(vt[j * D + d]);
#pragma unroll
    for (int g = 0; g < kDecodeMaxGroup; ++g)
      if (g < group) acc[g] = fmaf(ps[g][j], vv, acc[g]);
  }
  // fold the shares pairwise through shared memory: kHalves is 2 or 4
#pragma unroll
  for (int step = kHalves / 2; step >= 1; step /= 2) {
    if (half >= step && half < 2 * step) {
#pragma unroll
      for (int g = 0; g < kDecodeMaxGroup; ++g)
        if (g < group) osum[half - step][g][d] = acc[g];
    }
    __syncthreads();
    if (half < step) {
#pragma unroll
      for (int g = 0; g < kDecodeMaxGroup; ++g)
        if (g < group) acc[g] += osum[half][g][d];
    }
    __syncthreads();
  }
  if (half == 0) {
#pragma unroll
    for (int g = 0; g < kDecodeMaxGroup; ++g)
      if (g < group) part.o[((b * a.hq + hk * group + g) * part.nchunks + c) * D + d] = acc[g];
  }
}


// ---- merging the splits' partials ---------------------------------------------------------------

// The most splits the decode grid merges itself: a thread loads every split's partials at once.
// Above, the combine kernel merges them (on the H200, Sk 4096 in 32 splits: 7.54 µs in the grid,
// 7.37 by the combine kernel; in 16 splits 6.57 against 6.92).
constexpr int kMaxGridMergeSplits = 16;

// Output rows [row0, row0 + rows) (partials rows b * hq + h) from the partials of nchunks <=
// kMaxGridMergeSplits splits, by a block of kThreads threads, for the decode grid's last block of
// a head group. Thread (row, four dims) loads every split's max, sum and outputs at once (__ldcg:
// the grid's other blocks wrote them, past this SM's L1), takes their max, then adds the splits
// weighted by 2^(max_c - max): no step waits on the one before, as an online merge's would.
template <class T, int D, int kThreads>
__device__ __forceinline__ void merge_splits(const AttnArgs& a, const DecodePartials& part, int64_t row0, int rows) {
  constexpr int kQuads = D / 4, kMax = kMaxGridMergeSplits;
  const int n = int(part.nchunks);
  for (int i = threadIdx.x; i < rows * kQuads; i += kThreads) {
    const int64_t row = row0 + i / kQuads;
    const int d = (i % kQuads) * 4;
    const float* m = part.m + row * part.nchunks;
    const float* l = part.l + row * part.nchunks;
    const float4* o = reinterpret_cast<const float4*>(part.o + row * part.nchunks * D + d);
    float mc[kMax], lc[kMax];
    float4 oc[kMax];
#pragma unroll
    for (int c = 0; c < kMax; ++c) {
      const bool in = c < n;  // past the splits: max -inf, sum and outputs 0, which add nothing
      mc[c] = in ? __ldcg(m + c) : -INFINITY;
      lc[c] = in ? __ldcg(l + c) : 0.f;
      oc[c] = in ? __ldcg(o + c * kQuads) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
    float mx = -INFINITY;
#pragma unroll
    for (int c = 0; c < kMax; ++c) mx = fmaxf(mx, mc[c]);
    // A split whose scores were all NaN has max -inf (fmaxf skips NaN) and sum NaN: with base 0
    // where every max is -inf, its 0 * NaN keeps the NaN (NaN in, NaN out), as the combine's.
    const float base = mx == -INFINITY ? 0.f : mx;
    float sum = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int c = 0; c < kMax; ++c) {
      const float w = exp2f(mc[c] - base);
      sum += lc[c] * w;
      acc.x += oc[c].x * w, acc.y += oc[c].y * w, acc.z += oc[c].z * w, acc.w += oc[c].w * w;
    }
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    T* const out = static_cast<T*>(a.out) + row * D + d;  // 2-byte aligned only: four stores
    out[0] = from_float<T>(acc.x * inv), out[1] = from_float<T>(acc.y * inv);
    out[2] = from_float<T>(acc.z * inv), out[3] = from_float<T>(acc.w * inv);
  }
}

// ---- the tensor-core kernel ---------------------------------------------------------------------

// Counters of the in-grid merge (arrival_slots.hpp), one per (batch, head group) of a launch.
constexpr int64_t kArrivalSlots = int64_t(1) << 18;  // 1 MB a device
__device__ unsigned decode_arrivals[kArrivalSlots];

constexpr int kDecodeMmaThreads = 128;  // 4 warps, each 16 keys of a 64-key tile
constexpr int kDecodeStages = 3;        // K/V tiles in flight per block
constexpr int kDecodeMinTiles = 4;      // 256 keys per split at least (launch_mma_heads)

// Q's 16 rows, then kDecodeStages (K tile, V tile) pairs: 100 KB for D = 128 halves, so two
// blocks fit an SM (227 KB).
template <class T, int D>
constexpr size_t decode_mma_smem_bytes() {
  return size_t(16 + kDecodeStages * 2 * kBN) * D * sizeof(T);
}

// Query heads a block serves: 8 per n tile of the mma, NT = 1 for groups up to 8, 2 above.
template <int NT>
constexpr int decode_heads() {
  return 8 * NT;
}

// Block (split, hk * head_tiles + ht, b): query heads hk * group + ht * 8 NT + [0, 8 NT) against
// keys [split * tiles_per_split * 64, ...) of key/value head hk.
//
// The products are taken transposed, S^T = K Q^T and O^T = V^T P^T: the warp's 16 keys are the
// mma's 16 rows and the query heads its 8 columns (NT column tiles). A group of up to 8 heads
// (4 at 32/8) then fills half of each mma, where with the heads as the rows it filled 4 of 16:
// half the mmas, accumulators and rescales a tile. S^T's accumulator becomes P^T, the B operand
// of O^T's mma, by movmatrix's register transpose.
template <class T, int D, int NT>
__global__ void __launch_bounds__(kDecodeMmaThreads)
    attention_decode_mma(AttnArgs a, DecodePartials part, int group, int tiles_per_split, int head_tiles,
                         int64_t arrivals) {
  constexpr int kHeads = decode_heads<NT>();
  constexpr int kPitch = D + 4;  // red_o's row pitch in floats: the merge's stores miss no bank
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* const sq_tile = reinterpret_cast<T*>(smem_raw);  // 16 rows (ldmatrix reads two column tiles)
  T* const stages = sq_tile + 16 * D;  // stage s: K tile at stages + 2 s kBN D, then its V tile
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, tq = lane & 3;  // accumulator rows (keys / dims) g, g + 8; columns (heads) 2 tq, 2 tq + 1
  // No integer division where a group fits one head tile: each is a chain of ~30 instructions
  // that the first loads' addresses wait for.
  const int split = int(blockIdx.x), ht = head_tiles == 1 ? 0 : int(blockIdx.y) % head_tiles;
  const int64_t hk = head_tiles == 1 ? int64_t(blockIdx.y) : int64_t(blockIdx.y) / head_tiles, b = blockIdx.z;
  const int h0 = ht * kHeads, rows = min(kHeads, group - h0);  // query heads hk * group + h0 + [0, rows)
  const int sk = int(a.sk);                                    // < 2^30 (attention_decode_mma_eligible)
  const int kbeg = split * tiles_per_split * kBN;
  const int kend = min(sk, kbeg + tiles_per_split * kBN);
  const int ntiles = (kend - kbeg + kBN - 1) / kBN;  // >= 1: the launch makes no empty split
  // Launched as a programmatic dependent (launch_mma_heads): its blocks may be resident while the
  // work before still runs, and touch memory (q, K, V, the partials, the counters) only after the
  // wait. Then the next kernel's blocks (the combine's, or the next call's) may be scheduled: they
  // wait for this grid's end.
  wait_then_allow_dependents();
  const T* q = static_cast<const T*>(a.q) + b * a.qs[0] + (hk * group + h0) * a.qs[1];
  const T* k = static_cast<const T*>(a.k) + b * a.ks[0] + hk * a.ks[1];
  const T* v = static_cast<const T*>(a.v) + b * a.vs[0] + hk * a.vs[1];
  auto k_tile = [&](int s) { return stages + s * 2 * kBN * D; };
  auto v_tile = [&](int s) { return stages + (s * 2 + 1) * kBN * D; };
  auto load = [&](int t) {  // tile t of the split into stage t % kDecodeStages; rows past kend zero
    const int n0 = kbeg + t * kBN, s = t % kDecodeStages;
    if (n0 + kBN <= kend) {  // every tile of a split but its last, or that one too when whole
      attn::load_whole_tile<T, D, kBN, kDecodeMmaThreads>(k_tile(s), k + int64_t(n0) * a.ks[2], a.ks[2]);
      attn::load_whole_tile<T, D, kBN, kDecodeMmaThreads>(v_tile(s), v + int64_t(n0) * a.vs[2], a.vs[2]);
    } else {
      attn::load_bounded_tile<T, D, kBN, kDecodeMmaThreads>(k_tile(s), k + int64_t(n0) * a.ks[2], a.ks[2], kend - n0);
      attn::load_bounded_tile<T, D, kBN, kDecodeMmaThreads>(v_tile(s), v + int64_t(n0) * a.vs[2], a.vs[2], kend - n0);
    }
  };

  // Q (the rows past the block's heads zero-filled) joins the first tile's group.
  attn::load_bounded_tile<T, D, 16, kDecodeMmaThreads>(sq_tile, q, a.qs[1], rows);
#pragma unroll
  for (int t = 0; t < kDecodeStages - 1; ++t) {
    if (t < ntiles) load(t);
    cp_async_commit();
  }

  float o[D / 16][NT][4] = {};  // O^T: dims mt * 16 + g (+ 8) by heads nt * 8 + 2 tq (+ 1)
  float mrow[NT][2], lrow[NT][2];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) mrow[nt][0] = mrow[nt][1] = -INFINITY, lrow[nt][0] = lrow[nt][1] = 0.f;
  uint32_t qf[D / 16][4];  // Q^T as B: [2 nt], [2 nt + 1] for heads nt * 8 + [0, 8)
  const int kw = warp * 16;  // this warp's keys in every tile
  for (int t = 0; t < ntiles; ++t) {
    cp_async_wait<kDecodeStages - 2>();  // tile t (and Q) landed
    __syncthreads();  // ... for every thread; and every warp is done with tile t - 1's stage
    if (t + kDecodeStages - 1 < ntiles) load(t + kDecodeStages - 1);
    cp_async_commit();
    if (t == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        ldmatrix_x4(qf[kk], sq_tile + swz<D>((lane >> 4) * 8 + (lane & 7), kk * 2 + ((lane >> 3) & 1)));
    }
    const T* kt = k_tile(t % kDecodeStages);
    const T* vt = v_tile(t % kDecodeStages);
    // S^T: keys kw + g (+ 8) by heads. At one column tile its D / 16 mmas would be one chain, each
    // waiting for the one before: two chains (even and odd 16-dim blocks) added at the end. tps4
    // 6.42 -> 6.32 us (H200, 2026-11-30, session 26's bisect; NOTES.md).
    constexpr int kChains = NT == 1 ? 2 : 1;
    float sc[kChains][NT][4] = {};
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t ka[4];  // A fragment: this warp's 16 keys, dims kk * 16 + [0, 16)
      ldmatrix_x4(ka, kt + swz<D>(kw + (lane & 15), kk * 2 + (lane >> 4)));
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
        mma16816<T>(sc[kk % kChains][nt], ka[0], ka[1], ka[2], ka[3], qf[kk][2 * nt], qf[kk][2 * nt + 1]);
    }
    float s[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] = kChains == 2 ? sc[0][nt][e] + sc[kChains - 1][nt][e] : sc[0][nt][e];
    // the online softmax (base 2), a head a column: its max over the warp's keys is over g, the
    // lanes' bits 2-4; only the split's last tile can hold keys past its end
    const int n0 = kbeg + t * kBN;
    const bool masked = n0 + kBN > kend;
    float base[NT][2];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      float mx[2] = {mrow[nt][0], mrow[nt][1]};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[nt][e] * a.scale_log2;
        if (masked && n0 + kw + g + (e >> 1) * 8 >= kend) x = -INFINITY;
        s[nt][e] = x;
        mx[e & 1] = fmaxf(mx[e & 1], x);
      }
#pragma unroll
      for (int c = 0; c < 2; ++c) {
#pragma unroll
        for (int off = 4; off < 32; off <<= 1) mx[c] = fmaxf(mx[c], __shfl_xor_sync(0xffffffffu, mx[c], off));
        base[nt][c] = mx[c] == -INFINITY ? 0.f : mx[c];  // no key yet (a warp's keys all past kend)
        const float corr = fast_exp2(mrow[nt][c] - base[nt][c]);
        mrow[nt][c] = mx[c];
        lrow[nt][c] *= corr;
#pragma unroll
        for (int mt = 0; mt < D / 16; ++mt) o[mt][nt][c] *= corr, o[mt][nt][c + 2] *= corr;
      }
    }
    uint32_t pb[NT][2];  // P^T (this warp's 16 keys by 8 heads) as the B operand of O^T's mma
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const float p0 = fast_exp2(s[nt][0] - base[nt][0]), p1 = fast_exp2(s[nt][1] - base[nt][1]);
      const float p2 = fast_exp2(s[nt][2] - base[nt][0]), p3 = fast_exp2(s[nt][3] - base[nt][1]);
      lrow[nt][0] += p0 + p2;
      lrow[nt][1] += p1 + p3;
      pb[nt][0] = movmatrix_trans(pack2<T>(p0, p1));  // keys 2 tq, 2 tq + 1 of head g
      pb[nt][1] = movmatrix_trans(pack2<T>(p2, p3));  // keys 8 + 2 tq, 9 + 2 tq
    }
#pragma unroll
    for (int mt = 0; mt < D / 16; ++mt) {
      uint32_t va[4];  // A fragment of V^T: dims mt * 16 + [0, 16) by this warp's 16 keys
      ldmatrix_x4_trans(va, vt + swz<D>(kw + (lane & 7) + (lane >> 4) * 8, mt * 2 + ((lane >> 3) & 1)));
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) mma16816<T>(o[mt][nt], va[0], va[1], va[2], va[3], pb[nt][0], pb[nt][1]);
    }
  }

  // Merge the four warps' (max, sum, output) per head through shared memory (the stages, now
  // free), then write the split's partials for the block's heads.
  cp_async_wait<0>();
  __syncthreads();
  float* const red_m = reinterpret_cast<float*>(stages);  // [warp][16 heads]
  float* const red_l = red_m + 4 * 16;                    // [warp][16 heads]
  float* const red_o = red_l + 4 * 16;                    // [warp][16 heads][kPitch]
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int c = 0; c < 2; ++c) {
#pragma unroll
      for (int off = 4; off < 32; off <<= 1) lrow[nt][c] += __shfl_xor_sync(0xffffffffu, lrow[nt][c], off);
      const int head = nt * 8 + 2 * tq + c;
      if (g == 0) red_m[warp * 16 + head] = mrow[nt][c], red_l[warp * 16 + head] = lrow[nt][c];
    }
  __syncthreads();
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int head = nt * 8 + 2 * tq + c;
      if (head >= rows) continue;  // a padding column (past the block's heads): never read
      float m = red_m[head];
#pragma unroll
      for (int w = 1; w < 4; ++w) m = fmaxf(m, red_m[w * 16 + head]);
      const float sc = fast_exp2(mrow[nt][c] - (m == -INFINITY ? 0.f : m));  // 0 for a warp that saw no key
      float* const dst = red_o + (warp * 16 + head) * kPitch + g;
#pragma unroll
      for (int mt = 0; mt < D / 16; ++mt) dst[mt * 16] = o[mt][nt][c] * sc, dst[mt * 16 + 8] = o[mt][nt][c + 2] * sc;
    }
  __syncthreads();
  const int64_t row0 = b * a.hq + hk * group + h0;  // partials row of this block's first head
  for (int i = threadIdx.x; i < rows * D; i += kDecodeMmaThreads) {
    const int row = i / D, d = i % D;
    float acc = 0.f;
#pragma unroll
    for (int w = 0; w < 4; ++w) acc += red_o[(w * 16 + row) * kPitch + d];
    part.o[((row0 + row) * part.nchunks + split) * D + d] = acc;
  }
  if (threadIdx.x < rows) {
    const int row = threadIdx.x;
    float m = red_m[row];
#pragma unroll
    for (int w = 1; w < 4; ++w) m = fmaxf(m, red_m[w * 16 + row]);
    const float base = m == -INFINITY ? 0.f : m;
    float l = 0.f;
#pragma unroll
    for (int w = 0; w < 4; ++w) l += red_l[w * 16 + row] * fast_exp2(red_m[w * 16 + row] - base);
    part.m[(row0 + row) * part.nchunks + split] = m;
    part.l[(row0 + row) * part.nchunks + split] = l;
  }
  if (arrivals < 0) return;  // the combine kernel merges the splits

  // The last block of the head group to leave its partials merges every split's. As CUTLASS's
  // semaphores: the block barrier orders its threads' stores before thread 0's count, a release
  // (and an acquire: the last block's loads come after every block's stores).
  __shared__ bool last;
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned n = gridDim.x - 1;  // inc wraps to 0 past n: the counter is ready again
    unsigned prev;
    asm volatile("atom.acq_rel.gpu.global.inc.u32 %0, [%1], %2;"
                 : "=r"(prev)
                 : "l"(decode_arrivals + arrivals + b * gridDim.y + blockIdx.y), "r"(n)
                 : "memory");
    last = prev == n;
  }
  __syncthreads();
  if (last) merge_splits<T, D, kDecodeMmaThreads>(a, part, row0, rows);
}

// ---- the combine ------------------------------------------------------------------------------

// out[b, h, 0, :] from the chunks' partials, a block per query head. Thread (share, d) merges
// chunks share, share + kShares, ... of output dim d online (running max, sum and output), so
// that every load of the kernel is independent of the others and all of them are in flight at
// once: one L2 round trip, not one for the max, one for the sum and one for the outputs (the
// decode step at Sk 4096, 32/8 heads, D 128 went from 8.28 to 7.45 us in graph replay on the
// H200). The shares meet in shared memory in a fixed order.
constexpr int kCombineThreads = 256;

// (m, l, o) merged with chunk (mc, lc, oc), base 2. A chunk whose scores were all NaN has max
// -inf (fmaxf skips NaN) and sum NaN: with base 0 where both maxima are -inf, its 0 * NaN keeps
// the NaN (NaN in, NaN out), where a -inf max with a zero sum adds nothing.
__device__ __forceinline__ void merge_partial(float& m, float& l, float& o, float mc, float lc, float oc) {
  const float nm = fmaxf(m, mc), base = nm == -INFINITY ? 0.f : nm;
  const float fo = exp2f(m - base), fc = exp2f(mc - base);
  l = l * fo + lc * fc;
  o = o * fo + oc * fc;
  m = nm;
}

template <class T, int D>
__global__ void __launch_bounds__(kCombineThreads) attention_decode_combine(AttnArgs a, DecodePartials part) {
  constexpr int kShares = kCombineThreads / D;  // threads per output dim: 2 for D = 128, 4 for 64
  __shared__ float sm[kShares][D], sl[kShares][D], so[kShares][D];
  grid_dependency_wait();  // launched as a programmatic dependent: the partials are complete after this
  const int64_t row = blockIdx.x;  // b * hq + h
  const int d = threadIdx.x % D, share = threadIdx.x / D;
  const float* m = part.m + row * part.nchunks;
  const float* l = part.l + row * part.nchunks;
  const float* o = part.o + row * part.nchunks * D + d;
  float mx = -INFINITY, sum = 0.f, acc = 0.f;
#pragma unroll 8
  for (int64_t c = share; c < part.nchunks; c += kShares)
    merge_partial(mx, sum, acc, m[c], l[c], o[c * D]);  // plain loads: the decode grid wrote them
  sm[share][d] = mx, sl[share][d] = sum, so[share][d] = acc;
  __syncthreads();
  if (share == 0) {
    for (int s2 = 1; s2 < kShares; ++s2) merge_partial(mx, sum, acc, sm[s2][d], sl[s2][d], so[s2][d]);
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    static_cast<T*>(a.out)[row * D + d] = from_float<T>(acc * inv);
  }
}

// ---- launches -----------------------------------------------------------------------------------

// The partials under CUDA-graph capture (stream_scratch): a range of this pool per (capture,
// stream), where a stream-ordered allocation's alloc and free nodes would sit between one call's
// decode kernel and the next call's and cut their programmatic edge (lora_decode.cu's t, the
// same). The kernels touch the partials only once the last call has completed: the tensor-core
// kernel and the combine after their wait, the SIMT kernel as a plain launch.
__device__ __align__(256) float decode_partials_pool[2 * 1024 * 1024];  // 8 MiB a device; a live capture holds its largest
const CapturePool kPartialsPool{kAttentionDecodePartials, sizeof(decode_partials_pool),
                                pool_address<decode_partials_pool>};

// Partials of `chunks` splits for every query head, from the stream's scratch (held until the
// op's last kernel is enqueued); the decode grid's last blocks or the combine kernel merge them
// into out.
struct PartialsLease {
  Scratch lease;
  DecodePartials part;
};

template <int D>
PartialsLease partials_for(const detail::AttentionParams& p, int64_t chunks, cudaStream_t stream) {
  const int64_t rows = p.batch * p.hq, o_at = (2 * rows * chunks + 3) / 4 * 4;
  PartialsLease pl{stream_scratch(p.device_index, stream, size_t(o_at + rows * chunks * D) * sizeof(float),
                                  "attention", "q", &kPartialsPool),
                   {}};
  float* base = reinterpret_cast<float*>(pl.lease.get());
  pl.part = DecodePartials{base, base + rows * chunks, base + o_at, chunks};
  return pl;
}

// As a programmatic dependent of the decode kernel: its launch overlaps that kernel's run.
template <class T, int D>
void combine(const AttnArgs& a, const detail::AttentionParams& p, const DecodePartials& part, cudaStream_t stream) {
  launch_kernel(attention_decode_combine<T, D>, dim3(unsigned(p.batch * p.hq)), kCombineThreads, 0, stream,
                true, a, part);
}

template <class T, int D>
void launch_simt(const AttnArgs& a, const detail::AttentionParams& p, cudaStream_t stream) {
  constexpr int kChunk = decode_chunk<T, D>();
  const int64_t nchunks = (p.sk + kChunk - 1) / kChunk;
  const PartialsLease pl = partials_for<D>(p, nchunks, stream);
  const bool vec = attn::rows_aligned16(p.k, p.k_strides, p.dtype) && attn::rows_aligned16(p.v, p.v_strides, p.dtype);
  if (nchunks > 0) {
    const dim3 grid(unsigned(nchunks), unsigned(p.hkv), unsigned(p.batch));
    attention_decode<T, D><<<grid, kDecodeWarps * 32, 0, stream>>>(a, pl.part, vec);
    LORAOPS_CUDA_CHECK_LAUNCH("attention_decode");
  }
  combine<T, D>(a, p, pl.part, stream);
}

// Splits: as many as keep the whole grid in one wave (the blocks that fit at once: two per SM at
// D = 128, four at D = 64), at least one per head, each at least one 64-key tile; then as few as
// that tile count allows (the merge reads every split's partials). A partial second wave
// costs a whole split's time: on the H200 at batch 8, Sk 4096 (64 heads) 5 splits of 13 tiles
// took 51.4 µs, 4 of 16 took 37.8.
// A split has at least kDecodeMinTiles tiles: at batch 1, Sk 4096 (8 heads) 16 splits of 4 took
// 8.33 µs, 32 of 2 (one wave too) 8.81: each block's prologue (Q, the pipeline's fill) and
// epilogue (the warps' merge, the partials) cost more than the extra blocks gain.
// tiles_per_split > 0 overrides the choice (loraops_latency compares).
template <class T, int D, int NT>
void launch_mma_heads(const AttnArgs& a, const detail::AttentionParams& p, int tiles_per_split,
                      DecodeMerge merge, cudaStream_t stream) {
  const int64_t group = p.hq / p.hkv, head_tiles = (group + decode_heads<NT>() - 1) / decode_heads<NT>();
  const int64_t tiles = (p.sk + kBN - 1) / kBN;
  const int64_t heads = p.batch * p.hkv * head_tiles;
  constexpr size_t smem = decode_mma_smem_bytes<T, D>();
  const void* const kernel = reinterpret_cast<const void*>(attention_decode_mma<T, D, NT>);
  if constexpr (smem > 48 * 1024) attn::allow_dynamic_smem(kernel, smem);
  const int64_t wave = resident_blocks(kernel, kDecodeMmaThreads, p.device_index, smem);
  const int64_t want = std::clamp<int64_t>(wave / heads, 1, tiles);
  const int64_t per_split = tiles_per_split > 0
                                ? std::min<int64_t>(tiles_per_split, tiles)
                                : std::max((tiles + want - 1) / want, std::min<int64_t>(kDecodeMinTiles, tiles));
  const int64_t splits = (tiles + per_split - 1) / per_split;
  const PartialsLease pl = partials_for<D>(p, splits, stream);
  const dim3 grid(unsigned(splits), unsigned(p.hkv * head_tiles), unsigned(p.batch));
  const int64_t arrivals = merge == DecodeMerge::Auto && splits <= kMaxGridMergeSplits
                               ? arrival_slots(kAttentionDecodeCounters, kArrivalSlots, p.device_index, stream, heads)
                               : -1;
  launch_kernel(attention_decode_mma<T, D, NT>, grid, kDecodeMmaThreads, smem, stream, true, a, pl.part, int(group),
                int(per_split), int(head_tiles), arrivals);
  if (arrivals < 0) combine<T, D>(a, p, pl.part, stream);
}

template <class T, int D>
void launch_mma(const AttnArgs& a, const detail::AttentionParams& p, int tiles_per_split, DecodeMerge merge,
                cudaStream_t stream) {
  if (p.sk == 0) {  // no key: the combine of no split writes zeros
    const PartialsLease pl = partials_for<D>(p, 0, stream);
    return combine<T, D>(a, p, pl.part, stream);
  }
  if (p.hq / p.hkv <= decode_heads<1>()) return launch_mma_heads<T, D, 1>(a, p, tiles_per_split, merge, stream);
  launch_mma_heads<T, D, 2>(a, p, tiles_per_split, merge, stream);
}

bool common_eligible(const detail::AttentionParams& p) {
  if (p.sq != 1 || (p.d != 64 && p.d != 128) || p.hkv <= 0 || p.hq % p.hkv != 0) return false;
  if (p.batch > 65535 || p.batch * p.hq > (int64_t(1) << 31) - 1) return false;
  for (const auto* s : {&p.q_strides, &p.k_strides, &p.v_strides})
    if ((*s)[3] != 1) return false;
  return true;
}

bool simt_eligible(const detail::AttentionParams& p) {
  return common_eligible(p) && p.hq / p.hkv <= kDecodeMaxGroup && p.hkv <= 65535;
}

bool mma_eligible(const detail::AttentionParams& p) {
  if (!common_eligible(p) || p.dtype == DType::Float32) return false;
  if (p.hkv * ((p.hq / p.hkv + 15) / 16) > 65535 || p.sk > (int64_t(1) << 30)) return false;
  return attn::rows_aligned16(p.q, p.q_strides, p.dtype) && attn::rows_aligned16(p.k, p.k_strides, p.dtype) &&
         attn::rows_aligned16(p.v, p.v_strides, p.dtype);
}

template <class T>
void run(const detail::AttentionParams& p, DecodeKernel kernel, int tiles_per_split, DecodeMerge merge,
         cudaStream_t stream) {
  const AttnArgs a = attn::args_of(p);
  if constexpr (!std::is_same_v<T, float>) {
    if (kernel == DecodeKernel::TensorCore) {
      if (p.d == 64) return launch_mma<T, 64>(a, p, tiles_per_split, merge, stream);
      return launch_mma<T, 128>(a, p, tiles_per_split, merge, stream);
    }
  }
  if (p.d == 64) return launch_simt<T, 64>(a, p, stream);
  launch_simt<T, 128>(a, p, stream);
}

}  // namespace

bool attention_decode_takes(const detail::AttentionParams& p, DecodeKernel kernel) {
  switch (kernel) {
    case DecodeKernel::TensorCore: return mma_eligible(p);
    case DecodeKernel::Simt: return simt_eligible(p);
    case DecodeKernel::Auto: break;
  }
  return mma_eligible(p) || simt_eligible(p);
}

bool attention_decode_eligible(const detail::AttentionParams& p) {
  return attention_decode_takes(p, DecodeKernel::Auto);
}

void attention_decode_with(const detail::AttentionParams& p, void* stream, DecodeKernel kernel,
                           int tiles_per_split, DecodeMerge merge) {
  if (kernel == DecodeKernel::Auto) kernel = mma_eligible(p) ? DecodeKernel::TensorCore : DecodeKernel::Simt;
  if (!attention_decode_takes(p, kernel))
    throw Error(ErrorKind::Unsupported, "attention", "q",
                std::string("a shape the ") + (kernel == DecodeKernel::TensorCore ? "tensor-core" : "SIMT") +
                    " decode kernel takes (attention_decode_takes)",
                "another shape");
  if (p.batch == 0 || p.hq == 0) return;
  DeviceGuard guard(p.device_index);
  dispatch_dtype(p.dtype, [&](auto tag) { run<decltype(tag)>(p, kernel, tiles_per_split, merge, static_cast<cudaStream_t>(stream)); });
}

}  // namespace loraops::cuda
