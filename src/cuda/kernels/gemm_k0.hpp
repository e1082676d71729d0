// The GEMM with an empty inner dimension (k == 0): D = beta*C + bias, or zeros. cuBLASLt may
// reject k == 0, and the answer needs no library anyway.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernels/strided_copy.hpp"
#include "loraops/dtype.hpp"

namespace loraops::cuda {

// D[b][i][j] = d[b*d_bs + i*ldd + j] for b < batch, i < m, j < n. c is read only when
// beta != 0; bias ([n], element j at bias[j*bias_stride]) only when non-null.
void gemm_k0(DType dtype, int64_t batch, int64_t m, int64_t n, float beta, StridedMat c,
             const void* bias, int64_t bias_stride, void* d, int64_t ldd, int64_t d_bs,
             cudaStream_t stream, int device);

}  // namespace loraops::cuda
