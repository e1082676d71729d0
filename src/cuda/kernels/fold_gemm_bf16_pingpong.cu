// The folded GEMM's bfloat16 forward on the pingpong schedule (fold_gemm.cuh's PingK), in a
// translation unit of its own so that it compiles in parallel with the other kernels.
#include "cuda/kernels/fold_gemm.hpp"

#if LORAOPS_WITH_CUTLASS
#include "cuda/kernels/fold_gemm.cuh"

namespace loraops::cuda {

size_t fold_gemm_workspace_bf16_pingpong(const FoldGemmArgs& a) {
  return fold::PingK<cutlass::bfloat16_t>::workspace(a);
}

void fold_gemm_bf16_pingpong(const FoldGemmArgs& a, void* workspace, cudaStream_t stream) {
  fold::PingK<cutlass::bfloat16_t>::run(a, workspace, stream);
}

}  // namespace loraops::cuda
#endif
