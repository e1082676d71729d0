// D = beta*C + bias for a GEMM with k == 0, in fp32 with one rounding to the dtype (an fma when
// both terms are present), as cuBLASLt's epilogue would.
#include "cuda/kernels/gemm_k0.hpp"

#include "cuda/common.cuh"

namespace loraops::cuda {

namespace {

struct K0Args {
  int64_t m, n, total;
  float beta;
  int64_t c_bs, c_rs, c_cs, bias_stride, ldd, d_bs;
};

template <class T>
__global__ void gemm_k0_kernel(const T* c, const T* bias, T* d, K0Args a) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < a.total; e += step) {
    const int64_t r = e / a.n, j = e - r * a.n;
    const int64_t b = r / a.m, i = r - b * a.m;
    const float add = bias ? to_float(bias[j * a.bias_stride]) : 0.f;
    const float v =
        a.beta != 0.f ? fmaf(a.beta, to_float(c[b * a.c_bs + i * a.c_rs + j * a.c_cs]), add) : add;
    d[b * a.d_bs + i * a.ldd + j] = from_float<T>(v);
  }
}

}  // namespace

void gemm_k0(DType dtype, int64_t batch, int64_t m, int64_t n, float beta, StridedMat c,
             const void* bias, int64_t bias_stride, void* d, int64_t ldd, int64_t d_bs,
             cudaStream_t stream, int device) {
  const int64_t total = batch * m * n;
  if (total == 0) return;
  const K0Args a{m, n, total, beta, c.bs, c.rs, c.cs, bias_stride, ldd, d_bs};
  constexpr int kThreads = 256;
  const int64_t cap = int64_t(sm_count(device)) * 8;
  const int64_t want = (total + kThreads - 1) / kThreads;
  const int blocks = int(want < cap ? want : cap);
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    gemm_k0_kernel<T><<<blocks, kThreads, 0, stream>>>(
        static_cast<const T*>(c.p), static_cast<const T*>(bias), static_cast<T*>(d), a);
  });
  LORAOPS_CUDA_CHECK_LAUNCH("gemm_k0");
}

}  // namespace loraops::cuda
