// The folded GEMM's float16 forward kernels (fold_gemm.cuh: the narrow cooperative tile and the
// pingpong kernel, B K-major), in a translation unit of their own so that they compile in
// parallel with the others.
#include "cuda/kernels/fold_gemm.hpp"

#if LORAOPS_WITH_CUTLASS
#include "cuda/kernels/fold_gemm.cuh"

namespace loraops::cuda {

size_t fold_gemm_workspace_fwd_fp16(const FoldGemmArgs& a, FoldTile tile) {
  return fold::forward_workspace<cutlass::half_t>(a, tile);
}

void fold_gemm_fwd_fp16(const FoldGemmArgs& a, FoldTile tile, void* workspace, cudaStream_t stream) {
  fold::forward_run<cutlass::half_t>(a, tile, workspace, stream);
}

}  // namespace loraops::cuda
#endif
