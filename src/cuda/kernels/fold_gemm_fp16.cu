// The folded GEMM's kernels for float16 (fold_gemm.cuh), in a translation unit of their own so
// that the dtypes compile in parallel.
#include "cuda/kernels/fold_gemm.hpp"

#if LORAOPS_WITH_CUTLASS
#include "cuda/kernels/fold_gemm.cuh"

namespace loraops::cuda {

size_t fold_gemm_workspace_fp16(const FoldGemmArgs& a, FoldTile tile) {
  return fold::workspace_typed<cutlass::half_t>(a, tile);
}

void fold_gemm_fp16(const FoldGemmArgs& a, FoldTile tile, void* workspace, cudaStream_t stream) {
  fold::run_typed<cutlass::half_t>(a, tile, workspace, stream);
}

}  // namespace loraops::cuda
#endif
