// The folded GEMM's dispatch and tile choice (fold_gemm.hpp); the kernels are in
// fold_gemm_{fwd,bwd}_{bf16,fp16}.cu.
#include "cuda/kernels/fold_gemm.hpp"

#include <atomic>

#include "cuda/common.cuh"

namespace loraops::cuda {

namespace {

std::atomic<FoldTile> forced_tile{FoldTile::Auto};

// The forward's tile. Pingpong measured faster than CUTLASS's cooperative 128x256 tile (a
// cluster of 2 along m; gone since) wherever that one kept the SMs busy (H200, bf16 K = N = 4096,
// the fold GEMM alone against cuBLAS's base GEMM: 1.005x against 1.040x at m = 2048 r = 16,
// 0.971x against 1.030x at m = 8192, 0.994x against 1.066x at m = 8192 r = 64; NOTES.md, session
// 16); below that (m = 512 n = 4096: 64 tiles of 128x256 for 132 SMs), the narrow cooperative
// tile (lora custom 30.9 µs against pingpong's 32.5).
FoldTile pick(const FoldGemmArgs& a) {
  const FoldTile forced = forced_tile.load(std::memory_order_relaxed);
  if (forced != FoldTile::Auto) return forced;
  const int64_t wide_tiles = (a.m + 127) / 128 * ((a.n + 255) / 256);
  return 2 * wide_tiles <= a.sm_count ? FoldTile::Narrow : FoldTile::Pingpong;
}

// The arguments with the current device and its SM count filled in (one runtime call, the count
// cached per device), for the tile choice and for CUTLASS, which would query it every call.
FoldGemmArgs on_device(const FoldGemmArgs& args) {
  FoldGemmArgs a = args;
  LORAOPS_CUDA_CHECK(cudaGetDevice(&a.device));
  if (a.sm_count == 0) a.sm_count = sm_count(a.device);
  return a;
}

}  // namespace

void set_fold_tile(FoldTile t) { forced_tile.store(t, std::memory_order_relaxed); }

#if LORAOPS_WITH_CUTLASS
size_t fold_gemm_workspace(DType t, const FoldGemmArgs& args) {
  const FoldGemmArgs a = on_device(args);
  const bool bf16 = t == DType::BFloat16;
  if (!a.b_k_major) return bf16 ? fold_gemm_workspace_bwd_bf16(a) : fold_gemm_workspace_bwd_fp16(a);
  return bf16 ? fold_gemm_workspace_fwd_bf16(a, pick(a)) : fold_gemm_workspace_fwd_fp16(a, pick(a));
}

void fold_gemm(DType t, const FoldGemmArgs& args, void* workspace, cudaStream_t stream) {
  const FoldGemmArgs a = on_device(args);
  const bool bf16 = t == DType::BFloat16;
  if (!a.b_k_major) return bf16 ? fold_gemm_bwd_bf16(a, workspace, stream) : fold_gemm_bwd_fp16(a, workspace, stream);
  if (bf16) fold_gemm_fwd_bf16(a, pick(a), workspace, stream);
  else fold_gemm_fwd_fp16(a, pick(a), workspace, stream);
}
#else
size_t fold_gemm_workspace(DType, const FoldGemmArgs&) { return 0; }
void fold_gemm(DType, const FoldGemmArgs&, void*, cudaStream_t) {
  throw Error(ErrorKind::Runtime, "lora", "x", "the folded GEMM", "this build has no CUTLASS headers");
}
#endif

}  // namespace loraops::cuda
