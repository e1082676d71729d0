// The LoRA backward's one pass over g (r <= 16): gB = g @ B and grad_b = scale * g.T @ t from the
// same tiles of g, where the composition read g twice (our shrink for gB, then cuBLASLt for
// grad_b: 22 + ~20 µs at m = 8192, n = 4096, bf16 on the H200, each pass 64 MiB).
//
// g [m, n] is cut into slices of kSliceCols columns (S of them) and chunks of whole 64-row groups
// (C of them); block (slice, chunk) streams its g tiles (64 rows x 64 columns) through a cp.async
// pipeline and multiplies each twice on tensor cores (mma.m16n8k16, fp32 accumulation):
//   - gB's partial over the slice: the tile (rows as M, columns as K) by B's rows of the slice,
//     which stay in shared memory for the whole block (B [n, r] is small; read in place, no B.T);
//   - grad_b's partial over the chunk: the tile transposed (columns as M, rows as K, ldmatrix
//     .trans) by t's 64 rows (x @ A.T, staged once per row group), accumulated in registers for
//     the whole chunk (each warp 16 of every 64 columns, 64 floats a thread at NT = 8).
// The partials (fp32) go to scratch: gB's [S][m][16] after each row group, grad_b's [C][n][16]
// at the end. A second kernel (a programmatic dependent) adds gB's in slice order and rounds: gB
// (unscaled, for grad_a) and scale * gB (for the folded grad_x GEMM); the same kernel adds
// grad_b's in chunk order when the caller asks (fold_g_pass_grad_b: later, on another stream if
// it likes, since grad_x's GEMM does not need grad_b). Fixed partitions and orders: the same bits
// on every call of a shape on a device.
#include <algorithm>
#include <cstdint>
#include <string>

#include "cuda/kernels.hpp"
#include "cuda/kernels/attention_tiles.cuh"

namespace loraops::cuda {

namespace {

using attn::swz;

constexpr int kThreads = 128;  // 4 warps: 16 rows (gB) and 16 of every 64 columns (grad_b) each
constexpr int kRows = 64;      // rows of g per row group
constexpr int kCols = 64;      // columns of g per tile
constexpr int kNT = 8;         // tiles per slice
constexpr int kSliceCols = kNT * kCols;
// 4 stages: 6 measured slower at m = 8192 n = 4096 (H200, bf16 r = 16, the backward in graph
// replay: 476.1 against 465.5 µs), faster at m = 2048 (127.9 against 131.0) and 512 (41.2 / 43.1).
constexpr int kStages = 4;
constexpr int kRP = 16;  // r padded: the partials' row length

struct PassParams {
  const void* g;
  int64_t g_rs;
  const void* b;  // [n, r], rows of b_rs
  int64_t b_rs;
  const void* t;
  int64_t t_rs;
  float* part_gb;  // [slices][m][kRP]
  float* part_b;   // [chunks][n][kRP]
  int m, n, r;
  int groups;  // row groups per chunk
};

// Shared memory: the stages' g tiles, B's rows of the slice ([kSliceCols][kRP]), t's rows twice.
constexpr size_t kTileElems = size_t(kRows) * kCols;
constexpr size_t kBElems = size_t(kSliceCols) * kRP;
constexpr size_t kTElems = size_t(kRows) * kRP;
template <class T>
constexpr size_t smem_bytes() {
  return (kStages * kTileElems + kBElems + 2 * kTElems) * sizeof(T);
}

// Element (row, column) of B's rows in shared memory: rows of kRP (two 16-byte chunks), the
// chunk swapped on every other 4 rows, so that ldmatrix's 8 rows of a chunk hit 8 distinct
// bank groups (unswizzled, rows 4 apart would share them).
__device__ __forceinline__ int b_at(int row, int chunk) { return row * kRP + ((chunk ^ ((row >> 2) & 1)) << 3); }

// Block x = chunk * slices + slice.
template <class T>
__global__ void __launch_bounds__(kThreads) fold_g_pass_kernel(PassParams a) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* const tiles = reinterpret_cast<T*>(smem_raw);
  T* const bs = tiles + kStages * kTileElems;
  T* const ts = bs + kBElems;
  const int slices = (a.n + kSliceCols - 1) / kSliceCols;
  const int slice = int(blockIdx.x) % slices, chunk = int(blockIdx.x) / slices;
  const int col0 = slice * kSliceCols;
  const int rg0 = chunk * a.groups;
  const int row_groups = (a.m + kRows - 1) / kRows;
  const int ng = max(0, min(a.groups, row_groups - rg0));  // row groups of this block
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int gq = lane >> 2, tq = lane & 3;
  const T* const g = static_cast<const T*>(a.g);
  const T* const t = static_cast<const T*>(a.t);

  grid_dependency_wait();  // B (or its packed copy) may come from the kernel before this one
  allow_dependents();

  // B's rows of the slice, in the first commit group (zero past r and n)
  const T* const b = static_cast<const T*>(a.b);
  for (int i = threadIdx.x; i < kSliceCols * 2; i += kThreads) {
    const int row = i >> 1, c = i & 1;
    const bool ok = col0 + row < a.n && c * 8 < a.r;
    cp_async16(bs + b_at(row, c), ok ? b + int64_t(col0 + row) * a.b_rs + c * 8 : b, ok);
  }
  // Tile u: row group u / kNT, tile u % kNT of the slice; with its row group's t at u % kNT == 0.
  auto load = [&](int u) {
    const int row0 = (rg0 + u / kNT) * kRows, c0 = col0 + (u % kNT) * kCols;
    attn::load_tile<T, kCols, kRows, kThreads>(tiles + (u % kStages) * kTileElems, g + int64_t(row0) * a.g_rs + c0,
                                               a.g_rs, a.m - row0, a.n - c0);
    if (u % kNT == 0) {  // t's 64 rows x 16 (two 16-byte chunks a row, unswizzled; zero past m, r)
      const int row = threadIdx.x >> 1, c = threadIdx.x & 1;
      const bool ok = row0 + row < a.m && c * 8 < a.r;
      cp_async16(ts + ((u / kNT) & 1) * kTElems + row * kRP + c * 8, ok ? t + int64_t(row0 + row) * a.t_rs + c * 8 : t,
                 ok);
    }
  };
  const int nu = ng * kNT;
#pragma unroll
  for (int u = 0; u < kStages - 1; ++u) {
    if (u < nu) load(u);
    cp_async_commit();
  }

  float acc_b[kNT][2][4] = {};  // grad_b: columns col0 + kt*64 + warp*16 + (gq, gq+8) by r
  for (int rgl = 0; rgl < ng; ++rgl) {
    float acc_g[2][4] = {};  // gB: rows warp*16 + (gq, gq+8) by r
    uint32_t tf[4][4];       // t's rows of this group as the B operand, per 16 rows
#pragma unroll
    for (int kt = 0; kt < kNT; ++kt) {
      const int u = rgl * kNT + kt;
      cp_async_wait<kStages - 2>();  // tile u (and t with it) landed
      __syncthreads();               // ... for every thread; every warp done with tile u - 1
      if (u + kStages - 1 < nu) load(u + kStages - 1);
      cp_async_commit();
      const T* const gs = tiles + (u % kStages) * kTileElems;
      if (kt == 0) {
        const T* const tsg = ts + (rgl & 1) * kTElems;
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          ldmatrix_x4_trans(tf[kk], tsg + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kRP + (lane >> 4) * 8);
      }
#pragma unroll
      for (int kk = 0; kk < kCols / 16; ++kk) {  // gB: k is the tile's columns, B's rows
        uint32_t xf[4], bf[4];
        ldmatrix_x4(xf, gs + swz<kCols>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4)));
        ldmatrix_x4_trans(bf, bs + b_at(kt * kCols + kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, lane >> 4));
        mma16816<T>(acc_g[0], xf[0], xf[1], xf[2], xf[3], bf[0], bf[1]);
        mma16816<T>(acc_g[1], xf[0], xf[1], xf[2], xf[3], bf[2], bf[3]);
      }
#pragma unroll
      for (int kk = 0; kk < kRows / 16; ++kk) {  // grad_b: k is the tile's rows
        uint32_t af[4];
        ldmatrix_x4_trans(af, gs + swz<kCols>(kk * 16 + (lane & 7) + ((lane >> 4) & 1) * 8, warp * 2 + ((lane >> 3) & 1)));
        mma16816<T>(acc_b[kt][0], af[0], af[1], af[2], af[3], tf[kk][0], tf[kk][1]);
        mma16816<T>(acc_b[kt][1], af[0], af[1], af[2], af[3], tf[kk][2], tf[kk][3]);
      }
    }
    // this row group's gB partial over the slice
    const int row = (rg0 + rgl) * kRows + warp * 16 + gq;
    float* const pg = a.part_gb + int64_t(slice) * a.m * kRP;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      const int col = nt * 8 + tq * 2;
      if (row < a.m) *reinterpret_cast<float2*>(pg + int64_t(row) * kRP + col) = make_float2(acc_g[nt][0], acc_g[nt][1]);
      if (row + 8 < a.m)
        *reinterpret_cast<float2*>(pg + int64_t(row + 8) * kRP + col) = make_float2(acc_g[nt][2], acc_g[nt][3]);
    }
  }
  cp_async_wait<0>();
  // grad_b's partial over the chunk (zeros where the block had no row group)
  float* const pb = a.part_b + int64_t(chunk) * a.n * kRP;
#pragma unroll
  for (int kt = 0; kt < kNT; ++kt) {
    const int c = col0 + kt * kCols + warp * 16 + gq;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      const int col = nt * 8 + tq * 2;
      if (c < a.n) *reinterpret_cast<float2*>(pb + int64_t(c) * kRP + col) = make_float2(acc_b[kt][nt][0], acc_b[kt][nt][1]);
      if (c + 8 < a.n)
        *reinterpret_cast<float2*>(pb + int64_t(c + 8) * kRP + col) = make_float2(acc_b[kt][nt][2], acc_b[kt][nt][3]);
    }
  }
}

struct SumParams {
  const float* part_gb;
  const float* part_b;
  int64_t first, count;  // the outputs this launch adds (gB's: [0, m*r), grad_b's: [m*r, (m+n)*r))
  int m, n, r, slices, chunks;
  float scale;
  void* gb;
  int64_t ld_gb;
  void* sgb;
  void* grad_b;
};

// One thread per output: gB[i, j] and scale * gB[i, j] (i < m), then grad_b[i, j] (i < n).
template <class T>
__global__ void fold_g_pass_sum(SumParams a) {
  wait_then_allow_dependents();
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= a.count) return;
  const int64_t e = a.first + idx;
  const int64_t gb_count = int64_t(a.m) * a.r;
  if (e < gb_count) {
    const int64_t i = e / a.r, j = e - i * a.r;
    float s = 0.f;
    for (int q = 0; q < a.slices; ++q) s += a.part_gb[(int64_t(q) * a.m + i) * kRP + j];
    static_cast<T*>(a.gb)[i * a.ld_gb + j] = from_float<T>(s);
    static_cast<T*>(a.sgb)[e] = from_float<T>(a.scale * s);
  } else if (e < gb_count + int64_t(a.n) * a.r) {
    const int64_t f = e - gb_count, i = f / a.r, j = f - i * a.r;
    float s = 0.f;
    for (int q = 0; q < a.chunks; ++q) s += a.part_b[(int64_t(q) * a.n + i) * kRP + j];
    static_cast<T*>(a.grad_b)[f] = from_float<T>(a.scale * s);
  }
}

// The partition: slices of kSliceCols columns; chunks of whole row groups, as many as keep about
// two blocks an SM busy (every chunk but maybe the last with the same count).
struct Plan {
  int slices, chunks, groups;
};
Plan plan(int64_t m, int64_t n, int device) {
  Plan p;
  p.slices = int((n + kSliceCols - 1) / kSliceCols);
  const int row_groups = int((m + kRows - 1) / kRows);
  const int want = std::max(1, 2 * sm_count(device) / p.slices);
  p.groups = (row_groups + want - 1) / want;
  p.chunks = (row_groups + p.groups - 1) / p.groups;
  return p;
}

struct Partials {
  float *gb, *b;
};
Partials partials(const FoldGPassArgs& s, const Plan& pl) {
  float* const gb = static_cast<float*>(s.scratch);
  return {gb, gb + round_up(int64_t(pl.slices) * s.m * kRP, 64)};
}

// The sum kernel over outputs [first, first + count); pdl: as a programmatic dependent of the
// kernel before it on `stream` (gB's, after the pass; not grad_b's, which may come after an event
// wait on another stream, where a programmatic edge would gain nothing).
template <class T>
void sum(const FoldGPassArgs& s, const Plan& pl, int64_t first, int64_t count, bool pdl, cudaStream_t stream) {
  const Partials part = partials(s, pl);
  SumParams b{part.gb, part.b, first, count, int(s.m), int(s.n), int(s.r), pl.slices, pl.chunks, s.scale, s.gb, s.ld_gb,
              s.sgb, s.grad_b};
  launch_kernel(fold_g_pass_sum<T>, dim3(unsigned((count + 255) / 256)), 256, 0, stream, pdl, b);
}

template <class T>
void run(const FoldGPassArgs& s, const Plan& pl, cudaStream_t stream) {
  const Partials part = partials(s, pl);
  PassParams a{s.g, s.g_rs, s.b, s.b_rs, s.t, s.t_rs, part.gb, part.b, int(s.m), int(s.n), int(s.r), pl.groups};
  constexpr size_t smem = smem_bytes<T>();
  attn::allow_dynamic_smem(reinterpret_cast<const void*>(&fold_g_pass_kernel<T>), smem);
  launch_kernel(fold_g_pass_kernel<T>, dim3(unsigned(pl.slices * pl.chunks)), kThreads, smem, stream, true, a);
  sum<T>(s, pl, 0, s.m * s.r, true, stream);
}

Plan checked_plan(const FoldGPassArgs& s) {
  if (s.m <= 0 || s.n <= 0 || s.r <= 0 || s.r > kFoldGPassMaxR)
    throw Error(ErrorKind::Value, "lora_backward", "grad_y", "m, n > 0 and r in [1, 16] for the pass over g",
                std::to_string(s.m) + "x" + std::to_string(s.n) + " r=" + std::to_string(s.r));
  int device = 0;
  LORAOPS_CUDA_CHECK(cudaGetDevice(&device));
  return plan(s.m, s.n, device);
}

}  // namespace

bool fold_g_pass_supported(DType t, const void* g, int64_t g_rs, int64_t m, int64_t n, const void* tp, int64_t t_rs,
                           int64_t r) {
  if (t != DType::BFloat16 && t != DType::Float16) return false;
  return m > 0 && n > 0 && r >= 1 && r <= kFoldGPassMaxR && r % 8 == 0 && n % 8 == 0 && m < INT32_MAX - kRows &&
         n < INT32_MAX - kSliceCols && rows16(g, g_rs, 2) && g_rs >= n && fold_g_pass_reads(tp, t_rs, r);
}

// t, and B, as the pass reads them: 16-byte-aligned rows of at least r
bool fold_g_pass_reads(const void* p, int64_t rs, int64_t r) { return rows16(p, rs, 2) && rs >= r; }

size_t fold_g_pass_scratch(int64_t m, int64_t n) {
  int device = 0;
  LORAOPS_CUDA_CHECK(cudaGetDevice(&device));
  const Plan pl = plan(m, n, device);
  return size_t(round_up(int64_t(pl.slices) * m * kRP, 64) + int64_t(pl.chunks) * n * kRP) * sizeof(float);
}

void fold_g_pass(DType t, const FoldGPassArgs& s, void* stream_ptr) {
  if (!fold_g_pass_reads(s.b, s.b_rs, s.r))
    throw Error(ErrorKind::Value, "lora_backward", "lora_b", "16-byte-aligned rows of at least r for the pass over g",
                "rows of " + std::to_string(s.b_rs));
  const Plan pl = checked_plan(s);
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  if (t == DType::BFloat16) run<__nv_bfloat16>(s, pl, stream);
  else run<__half>(s, pl, stream);
  LORAOPS_CUDA_CHECK_LAUNCH("lora_backward (pass over g)");
}

void fold_g_pass_grad_b(DType t, const FoldGPassArgs& s, void* stream_ptr) {
  const Plan pl = checked_plan(s);
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  if (t == DType::BFloat16) sum<__nv_bfloat16>(s, pl, s.m * s.r, s.n * s.r, false, stream);
  else sum<__half>(s, pl, s.m * s.r, s.n * s.r, false, stream);
  LORAOPS_CUDA_CHECK_LAUNCH("lora_backward (grad_b of the pass over g)");
}

}  // namespace loraops::cuda
