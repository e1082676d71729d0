// matmul on CUDA, vendor: the params (transposes already folded into the strides, out contiguous
// [batch, m, n]) handed to the cuBLASLt wrapper.
#include "cuda/kernels.hpp"
#include "cuda/vendor/cublaslt.hpp"

namespace loraops::cuda {

void matmul_vendor(const detail::MatmulParams& p, void* stream) {
  lt::GemmDesc g;
  g.op = "matmul";
  g.dtype = p.dtype;
  g.batch = p.batch, g.m = p.m, g.n = p.n, g.k = p.k;
  g.a = p.a.p, g.a_rs = p.a.rs, g.a_cs = p.a.cs, g.a_bs = p.a_bs;
  g.b = p.b.p, g.b_rs = p.b.rs, g.b_cs = p.b.cs, g.b_bs = p.b_bs;
  if (p.beta != 0.f) g.c = p.c.p, g.c_rs = p.c.rs, g.c_cs = p.c.cs, g.c_bs = p.c_bs;
  g.d = p.out, g.ldd = p.n, g.d_bs = p.m * p.n;
  g.alpha = p.alpha, g.beta = p.beta;
  g.allow_tf32 = p.allow_tf32;
  lt::gemm(g, static_cast<cudaStream_t>(stream), p.device_index);
}

}  // namespace loraops::cuda
