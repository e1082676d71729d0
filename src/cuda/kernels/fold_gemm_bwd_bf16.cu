// The folded GEMM's bfloat16 backward kernel (fold_gemm.cuh's PingN: the pingpong kernel, B
// N-major), in a translation unit of its own so that it compiles in parallel with the others.
#include "cuda/kernels/fold_gemm.hpp"

#if LORAOPS_WITH_CUTLASS
#include "cuda/kernels/fold_gemm.cuh"

namespace loraops::cuda {

size_t fold_gemm_workspace_bwd_bf16(const FoldGemmArgs& a) { return fold::PingN<cutlass::bfloat16_t>::workspace(a); }

void fold_gemm_bwd_bf16(const FoldGemmArgs& a, void* workspace, cudaStream_t stream) {
  fold::PingN<cutlass::bfloat16_t>::run(a, workspace, stream);
}

}  // namespace loraops::cuda
#endif
