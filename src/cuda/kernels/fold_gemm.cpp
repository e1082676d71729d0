// The folded GEMM's dtype dispatch and tile choice (fold_gemm.hpp); the kernels are in
// fold_gemm_bf16.cu and fold_gemm_fp16.cu.
#include "cuda/kernels/fold_gemm.hpp"

#include <atomic>

#include "cuda/common.cuh"

namespace loraops::cuda {

namespace {

std::atomic<FoldTile> forced_tile{FoldTile::Auto};

// The 128x256 tile (a cluster of 2 along m) keeps W's tiles shared by two blocks and halves the
// A-operand reloads; it loses where it leaves most multiprocessors idle: m = 512, n = 4096 makes
// 64 tiles for 132 SMs, the 128x128 tile 128.
FoldTile pick(const FoldGemmArgs& a) {
  const FoldTile forced = forced_tile.load(std::memory_order_relaxed);
  if (forced != FoldTile::Auto) return forced;
  int device = 0;
  LORAOPS_CUDA_CHECK(cudaGetDevice(&device));
  const int64_t wide_tiles = (a.m + 127) / 128 * ((a.n + 255) / 256);
  return 2 * wide_tiles <= sm_count(device) ? FoldTile::Narrow : FoldTile::Wide;
}

}  // namespace

void set_fold_tile(FoldTile t) { forced_tile.store(t, std::memory_order_relaxed); }

#if LORAOPS_WITH_CUTLASS
size_t fold_gemm_workspace(DType t, const FoldGemmArgs& a) {
  return t == DType::BFloat16 ? fold_gemm_workspace_bf16(a, pick(a)) : fold_gemm_workspace_fp16(a, pick(a));
}

void fold_gemm(DType t, const FoldGemmArgs& args, void* workspace, cudaStream_t stream) {
  FoldGemmArgs a = args;
  if (a.sm_count == 0) {
    int device = 0;
    LORAOPS_CUDA_CHECK(cudaGetDevice(&device));
    a.sm_count = sm_count(device);
  }
  if (t == DType::BFloat16) fold_gemm_bf16(a, pick(a), workspace, stream);
  else fold_gemm_fp16(a, pick(a), workspace, stream);
}
#else
size_t fold_gemm_workspace(DType, const FoldGemmArgs&) { return 0; }
void fold_gemm(DType, const FoldGemmArgs&, void*, cudaStream_t) {
  throw Error(ErrorKind::Runtime, "lora", "x", "the folded GEMM", "this build has no CUTLASS headers");
}
#endif

}  // namespace loraops::cuda
