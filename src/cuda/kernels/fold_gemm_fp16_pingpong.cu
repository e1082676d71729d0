// The folded GEMM's float16 kernels on the pingpong schedule (fold_gemm.cuh's Ping, forward and
// backward), in a translation unit of their own so that they compile in parallel with the others.
#include "cuda/kernels/fold_gemm.hpp"

#if LORAOPS_WITH_CUTLASS
#include "cuda/kernels/fold_gemm.cuh"

namespace loraops::cuda {

size_t fold_gemm_workspace_fp16_pingpong(const FoldGemmArgs& a) {
  return fold::workspace_pingpong<cutlass::half_t>(a);
}

void fold_gemm_fp16_pingpong(const FoldGemmArgs& a, void* workspace, cudaStream_t stream) {
  fold::run_pingpong<cutlass::half_t>(a, workspace, stream);
}

}  // namespace loraops::cuda
#endif
