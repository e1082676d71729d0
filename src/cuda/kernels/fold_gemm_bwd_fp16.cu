// The folded GEMM's float16 backward kernel (fold_gemm.cuh's PingN: the pingpong kernel, B
// N-major), in a translation unit of its own so that it compiles in parallel with the others.
#include "cuda/kernels/fold_gemm.hpp"

#if LORAOPS_WITH_CUTLASS
#include "cuda/kernels/fold_gemm.cuh"

namespace loraops::cuda {

size_t fold_gemm_workspace_bwd_fp16(const FoldGemmArgs& a) { return fold::PingN<cutlass::half_t>::workspace(a); }

void fold_gemm_bwd_fp16(const FoldGemmArgs& a, void* workspace, cudaStream_t stream) {
  fold::PingN<cutlass::half_t>::run(a, workspace, stream);
}

}  // namespace loraops::cuda
#endif
