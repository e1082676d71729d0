// The fold's shrinks on tensor cores: out = scale * X @ A^T (and X @ A^T unscaled, from the same
// fp32 sums) for X [m, k] and A [r, k] with r <= 64, the product the LoRA fold puts beside its
// GEMM (lora_fold.cu: s*t = s * x @ A.T forward, s*gB = s * g @ B backward).
//
// It replaced the "skinny" kernel (the LoRA decode kernel with its roles swapped), which re-read
// A from L2 for every 16 rows of X: faster at every measured shape (NOTES.md, session 13), but
// still far from X's bytes (16 MiB in 8.1 µs at m = 2048 r = 16 is 2 TB/s), and at r = 64 A's
// tile is as large as X's. lora_fold.cu takes cuBLASLt's product where that wins.
//
// Here a block owns 64 rows of X (a warp 16 of them, mma.m16n8k16 with A's r rows as the
// columns) and a share of K; A's tile sits in shared memory once per 64 rows. K is split over a
// cluster of up to 16 blocks (8 where the device does not run 16), enough blocks for two per SM,
// and the cluster adds its fp32
// partials through distributed shared memory in rank order: one launch, no scratch, and the
// same bits on every call of a shape on a device (the cluster size follows m and the SM count,
// so a row's bits may differ between batch sizes or devices, as cuBLAS's do). Tiles of 64 k
// stream through a 4-stage cp.async pipeline.
//
// Needs halves, k % 8 == 0 and 16-byte-aligned rows with unit column stride
// (fold_shrink_supported); the outputs are [m, r] contiguous.
#include <cooperative_groups.h>

#include <algorithm>
#include <cstdint>

#include "cuda/kernels.hpp"
#include "cuda/kernels/attention_tiles.cuh"

namespace loraops::cuda {

namespace {

namespace cg = cooperative_groups;
using attn::swz;

constexpr int kShrinkThreads = 128;  // 4 warps, 16 rows of X each
constexpr int kShrinkRows = 64;      // rows of X per block
constexpr int kShrinkK = 64;         // k per tile
// 4 stages: 8 (two blocks an SM still, 80 KB each at r <= 16) measured slower on the H200
// (2026-11-30, graph, shrink alone: m = 2048 r = 16 12.5 against 8.0 µs, r = 64 21.8 against
// 13.8; m = 8192 r = 16 21.7 against 22.1), though Nsight Compute had 4 stages short of bytes in
// flight (34% of DRAM's bandwidth, 12.5% occupancy at m = 2048).
constexpr int kShrinkStages = 4;
// Clusters up to 16 blocks where the device runs them, past the portable 8: at m = 512, 8 row
// blocks in clusters of 8 were 64 blocks for 132 SMs. H200, K = 4096, graph replay, the shrink
// alone at m = 512: 4.30 µs at r = 16 and 7.06 at r = 64 against 4.73-5.20 and 8.15-8.26 with
// clusters of 8 on four other machines (NOTES.md, session 18; the fold's total did not move
// measurably).
constexpr int kShrinkMaxCluster = 16;

// Stage elements: X's 64 x 64 tile, then A's (16 * NP) x 64 tile (rows past r zero-filled).
template <int NP>
constexpr size_t shrink_stage_elems() {
  return size_t(kShrinkRows + 16 * NP) * kShrinkK;
}
template <class T, int NP>
constexpr size_t shrink_smem_bytes() {
  return kShrinkStages * shrink_stage_elems<NP>() * sizeof(T);
}

struct ShrinkParams {
  const void* x;
  int64_t x_rs;
  const void* a;
  int64_t a_rs;
  void* out;           // scale * X @ A^T, [m, r]
  void* out_unscaled;  // X @ A^T, [m, r]; null: not kept
  float scale;
  int m, k, r;
  int tiles_per_rank;  // k tiles of each block of a cluster
};

// Block x = row block * cluster size + rank (clusters along x).
template <class T, int NP>
__global__ void __launch_bounds__(kShrinkThreads) fold_shrink_mma(ShrinkParams a) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* const stages = reinterpret_cast<T*>(smem_raw);
  wait_then_allow_dependents();  // launched as a programmatic dependent (launch below)
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = int(cluster.block_rank()), ranks = int(cluster.num_blocks());
  const int row0 = int(blockIdx.x) / ranks * kShrinkRows;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, tq = lane & 3;
  const int ktiles = (a.k + kShrinkK - 1) / kShrinkK;
  const int t0 = rank * a.tiles_per_rank, nt = max(0, min(ktiles, t0 + a.tiles_per_rank) - t0);
  const T* const x = static_cast<const T*>(a.x) + int64_t(row0) * a.x_rs;
  const T* const af = static_cast<const T*>(a.a);
  auto x_tile = [&](int s) { return stages + s * shrink_stage_elems<NP>(); };
  auto a_tile = [&](int s) { return x_tile(s) + kShrinkRows * kShrinkK; };
  auto load = [&](int t) {  // tile t of this rank into stage t % kShrinkStages
    const int k0 = (t0 + t) * kShrinkK, s = t % kShrinkStages;
    // (rows past m or r and chunks past k zero-filled: the zeros add nothing to the products)
    attn::load_tile<T, kShrinkK, kShrinkRows, kShrinkThreads>(x_tile(s), x + k0, a.x_rs, a.m - row0, a.k - k0);
    attn::load_tile<T, kShrinkK, 16 * NP, kShrinkThreads>(a_tile(s), af + k0, a.a_rs, a.r, a.k - k0);
  };
#pragma unroll
  for (int t = 0; t < kShrinkStages - 1; ++t) {
    if (t < nt) load(t);
    cp_async_commit();
  }

  float acc[2 * NP][4] = {};
  for (int t = 0; t < nt; ++t) {
    cp_async_wait<kShrinkStages - 2>();  // tile t landed
    __syncthreads();                     // ... for every thread; every warp done with tile t - 1
    if (t + kShrinkStages - 1 < nt) load(t + kShrinkStages - 1);
    cp_async_commit();
    const T* xs = x_tile(t % kShrinkStages);
    const T* as = a_tile(t % kShrinkStages);
#pragma unroll
    for (int kk = 0; kk < kShrinkK / 16; ++kk) {
      uint32_t xf[4];  // A operand: this warp's 16 rows of X, k 16 kk ..
      ldmatrix_x4(xf, xs + swz<kShrinkK>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4)));
#pragma unroll
      for (int p = 0; p < NP; ++p) {
        uint32_t bf[4];  // B operand: A's rows 16 p .. 16 p + 15 as two 8-column tiles
        ldmatrix_x4(bf, as + swz<kShrinkK>(p * 16 + (lane >> 4) * 8 + (lane & 7), kk * 2 + ((lane >> 3) & 1)));
        mma16816<T>(acc[2 * p], xf[0], xf[1], xf[2], xf[3], bf[0], bf[1]);
        mma16816<T>(acc[2 * p + 1], xf[0], xf[1], xf[2], xf[3], bf[2], bf[3]);
      }
    }
  }

  // This block's partial [64][16 NP] (fp32) into its shared memory, then each rank sums a share
  // of the rows over the cluster's blocks in rank order and stores them.
  constexpr int RP = 16 * NP;
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with the stages
  float* const part = reinterpret_cast<float*>(smem_raw);
#pragma unroll
  for (int n = 0; n < 2 * NP; ++n) {
    const int col = n * 8 + tq * 2, row = warp * 16 + g;
    *reinterpret_cast<float2*>(part + row * RP + col) = make_float2(acc[n][0], acc[n][1]);
    *reinterpret_cast<float2*>(part + (row + 8) * RP + col) = make_float2(acc[n][2], acc[n][3]);
  }
  cluster.sync();  // every block's partial is written and visible to the cluster
  const int share = kShrinkRows / ranks;
  T* const out = static_cast<T*>(a.out);
  T* const out2 = static_cast<T*>(a.out_unscaled);
  for (int i = threadIdx.x; i < share * RP; i += kShrinkThreads) {
    const int row = rank * share + i / RP, col = i % RP, grow = row0 + row;
    if (col >= a.r || grow >= a.m) continue;
    float sum = 0.f;
    for (int q = 0; q < ranks; ++q) sum += cluster.map_shared_rank(part, q)[row * RP + col];
    const int64_t at = int64_t(grow) * a.r + col;
    out[at] = from_float<T>(a.scale * sum);
    if (out2) out2[at] = from_float<T>(sum);
  }
  cluster.sync();  // no block leaves while the others still read its partial
}

template <class T, int NP>
void launch(const ShrinkParams& base, int device, cudaStream_t stream) {
  ShrinkParams a = base;
  const int row_blocks = (a.m + kShrinkRows - 1) / kShrinkRows;
  const int ktiles = (a.k + kShrinkK - 1) / kShrinkK;
  constexpr size_t smem = shrink_smem_bytes<T, NP>();
  const void* kernel = reinterpret_cast<const void*>(&fold_shrink_mma<T, NP>);
  attn::allow_dynamic_smem(kernel, smem);
  // Clusters as large as two blocks per SM allow (at most 16 where the device runs 16, else 8,
  // and no rank without a k tile).
  const int target = 2 * sm_count(device);
  auto grows = [&](int ranks) {
    return int64_t(row_blocks) * ranks * 2 <= target && ranks * 2 <= ktiles &&
           (ranks * 2 <= 8 ||
            (ranks * 2 <= kShrinkMaxCluster && resident_clusters(kernel, kShrinkThreads, ranks * 2, device, smem) > 0));
  };
  int ranks = 1;
  while (grows(ranks)) ranks *= 2;
  a.tiles_per_rank = (ktiles + ranks - 1) / ranks;
  // a programmatic dependent, as the copies and the fold GEMM around it (NOTES.md, session 16: a
  // training step at m = 8192 took 1.142x the base GEMMs with this launch plain, 1.092x so)
  launch_kernel(fold_shrink_mma<T, NP>, dim3(unsigned(row_blocks * ranks)), kShrinkThreads, smem, stream,
                LaunchAttrs{true, unsigned(ranks)}, a);
}

template <class T>
void shrink(const ShrinkParams& a, int device, cudaStream_t stream) {
  switch ((a.r + 15) / 16) {
    case 1: return launch<T, 1>(a, device, stream);
    case 2: return launch<T, 2>(a, device, stream);
    case 3: return launch<T, 3>(a, device, stream);
    default: return launch<T, 4>(a, device, stream);
  }
}

}  // namespace

bool fold_shrink_supported(DType t, const void* x, int64_t x_rs, int64_t k, const void* a, int64_t a_rs, int64_t r) {
  if (t != DType::BFloat16 && t != DType::Float16) return false;
  return r >= 1 && r <= kFoldShrinkMaxR && k % 8 == 0 && rows16(x, x_rs, 2) && rows16(a, a_rs, 2);
}

void fold_shrink_product(DType t, const FoldShrinkArgs& s, void* stream_ptr) {
  if (s.m == 0 || s.r == 0) return;
  if (s.r < 0 || s.r > kFoldShrinkMaxR)
    throw Error(ErrorKind::Value, "lora", "shrink", "r in [1, 64]", std::to_string(s.r));
  if (s.m > INT32_MAX - kShrinkRows || s.k > INT32_MAX - kShrinkK)
    throw Error(ErrorKind::Value, "lora", "shrink", "rows and k at most 2^31 - 65",
                std::to_string(s.m) + "x" + std::to_string(s.k));
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  int device = 0;
  LORAOPS_CUDA_CHECK(cudaGetDevice(&device));
  ShrinkParams a{s.x, s.x_rs, s.a, s.a_rs, s.out, s.out_unscaled, s.scale, int(s.m), int(s.k), int(s.r), 0};
  if (t == DType::BFloat16) shrink<__nv_bfloat16>(a, device, stream);
  else shrink<__half>(a, device, stream);
  LORAOPS_CUDA_CHECK_LAUNCH("lora (fold shrink)");
}

}  // namespace loraops::cuda
