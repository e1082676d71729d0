// The folded GEMM's dtype dispatch and tile choice (fold_gemm.hpp); the kernels are in
// fold_gemm_bf16.cu, fold_gemm_bf16_pingpong.cu and fold_gemm_fp16.cu.
#include "cuda/kernels/fold_gemm.hpp"

#include <atomic>

#include "cuda/common.cuh"

namespace loraops::cuda {

namespace {

std::atomic<FoldTile> forced_tile{FoldTile::Auto};

// The 128x256 tile (a cluster of 2 along m) keeps W's tiles shared by two blocks and halves the
// A-operand reloads; it loses where it leaves most multiprocessors idle: m = 512, n = 4096 makes
// 64 tiles for 132 SMs, the 128x128 tile 128. The bfloat16 pingpong kernel measured faster than
// the wide tile (H200, K = N = 4096 r = 16, the fold GEMM alone 0.978x cuBLAS's base GEMM at
// m = 8192 against 1.046x, 1.021x at m = 2048 against 1.055x; NOTES.md, session 15), but auto
// takes it only once a GPU run has checked it with several tiles a block (the tests of session
// 15 gave each block one tile: CudaLora.FoldPingpongComputesSeveralTilesABlock, not yet run).
FoldTile pick(const FoldGemmArgs& a) {
  const FoldTile forced = forced_tile.load(std::memory_order_relaxed);
  if (forced != FoldTile::Auto) return forced;
  const int64_t wide_tiles = (a.m + 127) / 128 * ((a.n + 255) / 256);
  return 2 * wide_tiles <= a.sm_count ? FoldTile::Narrow : FoldTile::Wide;
}

// Whether the bfloat16 pingpong kernel runs (the forward's K-major B only).
bool pingpong(DType t, FoldTile tile, const FoldGemmArgs& a) {
  return t == DType::BFloat16 && tile == FoldTile::Pingpong && a.b_k_major;
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
  const FoldTile tile = pick(a);
  if (pingpong(t, tile, a)) return fold_gemm_workspace_bf16_pingpong(a);
  return t == DType::BFloat16 ? fold_gemm_workspace_bf16(a, tile) : fold_gemm_workspace_fp16(a, tile);
}

void fold_gemm(DType t, const FoldGemmArgs& args, void* workspace, cudaStream_t stream) {
  const FoldGemmArgs a = on_device(args);
  const FoldTile tile = pick(a);
  if (pingpong(t, tile, a)) return fold_gemm_bf16_pingpong(a, workspace, stream);
  if (t == DType::BFloat16) fold_gemm_bf16(a, tile, workspace, stream);
  else fold_gemm_fp16(a, tile, workspace, stream);
}
#else
size_t fold_gemm_workspace(DType, const FoldGemmArgs&) { return 0; }
void fold_gemm(DType, const FoldGemmArgs&, void*, cudaStream_t) {
  throw Error(ErrorKind::Runtime, "lora", "x", "the folded GEMM", "this build has no CUTLASS headers");
}
#endif

}  // namespace loraops::cuda
