// lora_forward on CUDA, vendor: the best a cuBLASLt-only design does, three GEMMs and no other
// pass over y:
//   1. t = x @ A.T                  [m, r] in the input dtype (as PyTorch keeps lora_A(x)), in
//                                   scratch with a 16-byte row pitch
//   2. y = scale * t @ B.T + bias   the bias epilogue (cuBLASLt adds it after alpha); y written
//                                   once
//   3. y = x @ W.T + 1 * y          the base GEMM reads y as C in its epilogue
// The expand goes first so that the base GEMM, the expensive one, absorbs the low-rank term as its
// C operand: at large m the GEMM is compute-bound and that read comes nearly free, where an expand
// after it would read and write all of y again. A scale of 0 (or r = 0) skips 1 and 2: the term
// is exactly zero then (inf/NaN in lora_a/lora_b do not reach y, unlike 0 * inf in the math).
// When the caller keeps xa (xa_out), t is copied there (m x r, a small copy): y is the same bits
// with or without it, and the expand keeps its aligned operand.
// x with rows that are not evenly spaced is packed into scratch first (one copy of x).
#include "cuda/common.cuh"
#include "cuda/kernels.hpp"
#include "cuda/kernels/strided_copy.hpp"
#include "cuda/stream_scratch.hpp"
#include "cuda/vendor/cublaslt.hpp"

namespace loraops::cuda {

void lora_forward_vendor(const detail::LoraForwardParams& p, void* stream_ptr) {
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  DeviceGuard guard(p.device_index);
  const int64_t es = dtype_size(p.dtype);
  const bool low_rank = p.r > 0 && p.scale != 0.f;
  const bool keep_xa = p.xa_out != nullptr && p.m > 0 && p.r > 0;
  const bool shrink = low_rank || keep_xa;

  // Scratch: [packed x][t], each 256-byte aligned; t's rows 16-byte aligned (cuBLASLt's
  // preferred layout: a narrower pitch can leave it no algorithm but the pack-everything one).
  int64_t x_rs = 0;
  const bool pack_x = !p.x.uniform(&x_rs) && p.k > 0;
  const int64_t ld_t = round_up(p.r, 16 / es);
  const int64_t x_bytes = pack_x ? round_up(p.m * p.k * es, 256) : 0;
  const int64_t t_bytes = shrink ? round_up(p.m * ld_t * es, 256) : 0;
  const Scratch lease = stream_scratch(p.device_index, stream, size_t(x_bytes + t_bytes),
                                       "lora_forward", "x");  // held until the last GEMM is enqueued
  char* scratch = lease.get();
  const void* x = p.x.p;
  int64_t x_cs = p.x.col_stride;
  if (pack_x) {
    pack_rows(p.x, es, scratch, stream, p.device_index);
    x = scratch, x_rs = p.k, x_cs = 1;
  }

  lt::GemmDesc base;
  base.op = "lora_forward";
  base.dtype = p.dtype;
  base.m = p.m, base.n = p.n, base.k = p.k;
  base.a = x, base.a_rs = x_rs, base.a_cs = x_cs;
  base.b = p.weight.p, base.b_rs = p.weight.cs, base.b_cs = p.weight.rs;  // W.T
  base.d = p.out, base.ldd = p.n;

  void* t = scratch + x_bytes;
  if (shrink) {
    lt::GemmDesc e = base;  // t = x @ A.T
    e.n = p.r;
    e.b = p.lora_a.p, e.b_rs = p.lora_a.cs, e.b_cs = p.lora_a.rs;  // A.T
    e.d = t, e.ldd = ld_t;
    lt::gemm(e, stream, p.device_index);
  }
  if (keep_xa)
    LORAOPS_CUDA_CHECK(cudaMemcpy2DAsync(p.xa_out, size_t(p.r * es), t, size_t(ld_t * es),
                                         size_t(p.r * es), size_t(p.m), cudaMemcpyDeviceToDevice,
                                         stream));
  if (low_rank) {
    lt::GemmDesc expand = base;
    expand.k = p.r;
    expand.alpha = p.scale;
    expand.a = t, expand.a_rs = ld_t, expand.a_cs = 1;
    expand.b = p.lora_b.p, expand.b_rs = p.lora_b.cs, expand.b_cs = p.lora_b.rs;  // B.T
    expand.bias = p.bias, expand.bias_stride = p.bias_stride;
    lt::gemm(expand, stream, p.device_index);

    base.c = p.out, base.c_rs = p.n, base.c_cs = 1;
    base.beta = 1.f;
  } else {
    base.bias = p.bias, base.bias_stride = p.bias_stride;
  }
  lt::gemm(base, stream, p.device_index);
}

}  // namespace loraops::cuda
