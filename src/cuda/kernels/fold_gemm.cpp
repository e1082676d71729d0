// The folded GEMM's dtype dispatch and tile choice (fold_gemm.hpp); the kernels are in
// fold_gemm_{bf16,fp16}.cu (cooperative) and fold_gemm_{bf16,fp16}_pingpong.cu.
#include "cuda/kernels/fold_gemm.hpp"

#include <atomic>

#include "cuda/common.cuh"

namespace loraops::cuda {

namespace {

std::atomic<FoldTile> forced_tile{FoldTile::Auto};
std::atomic<bool> dependent_launch{true};

// The 128x256 tile (a cluster of 2 along m) keeps W's tiles shared by two blocks and halves the
// A-operand reloads; it loses where it leaves most multiprocessors idle: m = 512, n = 4096 makes
// 64 tiles for 132 SMs, the 128x128 tile 128. Above that, the pingpong kernel (128x128 tiles a
// warpgroup) measured faster than the 128x256 cooperative tile (H200, bf16 K = N = 4096 r = 16,
// the fold GEMM alone 0.978x cuBLAS's base GEMM at m = 8192 against 1.046x, 1.021x at m = 2048
// against 1.055x; NOTES.md, session 15).
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
  a.pdl = dependent_launch.load(std::memory_order_relaxed);
  return a;
}

}  // namespace

void set_fold_tile(FoldTile t) { forced_tile.store(t, std::memory_order_relaxed); }
void set_fold_pdl(bool on) { dependent_launch.store(on, std::memory_order_relaxed); }

#if LORAOPS_WITH_CUTLASS
size_t fold_gemm_workspace(DType t, const FoldGemmArgs& args) {
  const FoldGemmArgs a = on_device(args);
  const FoldTile tile = pick(a);
  if (tile == FoldTile::Pingpong)
    return t == DType::BFloat16 ? fold_gemm_workspace_bf16_pingpong(a) : fold_gemm_workspace_fp16_pingpong(a);
  return t == DType::BFloat16 ? fold_gemm_workspace_bf16(a, tile) : fold_gemm_workspace_fp16(a, tile);
}

void fold_gemm(DType t, const FoldGemmArgs& args, void* workspace, cudaStream_t stream) {
  const FoldGemmArgs a = on_device(args);
  const FoldTile tile = pick(a);
  if (tile == FoldTile::Pingpong) {
    if (t == DType::BFloat16) fold_gemm_bf16_pingpong(a, workspace, stream);
    else fold_gemm_fp16_pingpong(a, workspace, stream);
  } else if (t == DType::BFloat16) fold_gemm_bf16(a, tile, workspace, stream);
  else fold_gemm_fp16(a, tile, workspace, stream);
}
#else
size_t fold_gemm_workspace(DType, const FoldGemmArgs&) { return 0; }
void fold_gemm(DType, const FoldGemmArgs&, void*, cudaStream_t) {
  throw Error(ErrorKind::Runtime, "lora", "x", "the folded GEMM", "this build has no CUTLASS headers");
}
#endif

}  // namespace loraops::cuda
