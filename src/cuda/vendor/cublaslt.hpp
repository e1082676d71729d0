// The cuBLASLt GEMM behind every vendor matmul-shaped call on CUDA (matmul now, the LoRA paths
// next): row-major D = alpha * op(A) @ op(B) + beta * C (+ bias per column), any strided operand,
// batched, on the caller's stream, safe under CUDA-graph capture once warmed.
//
// Framework-free: raw pointers, element strides, a stream. Everything that is not per-call data
// (the handle per device, a workspace per (device, stream), the plan per call shape) is created
// once and cached; see cublaslt.cpp for the rules.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "loraops/dtype.hpp"

namespace loraops::cuda::lt {

struct GemmDesc {
  const char* op = "matmul";  // names the op in errors
  DType dtype = DType::Float32;  // of A, B, C, D and bias alike
  int64_t batch = 1, m = 0, n = 0, k = 0;  // m, n, k below 2^31

  // op(A)[b][i][l] = a[b*a_bs + i*a_rs + l*a_cs], [m, k]; any strides (negative, zero too).
  const void* a = nullptr;
  int64_t a_rs = 0, a_cs = 1, a_bs = 0;
  // op(B)[b][l][j] = b[b*b_bs + l*b_rs + j*b_cs], [k, n]; a batch stride of 0 broadcasts.
  const void* b = nullptr;
  int64_t b_rs = 0, b_cs = 1, b_bs = 0;
  // C[b][i][j] = c[b*c_bs + i*c_rs + j*c_cs], [m, n]; read only when beta != 0.
  const void* c = nullptr;
  int64_t c_rs = 0, c_cs = 1, c_bs = 0;
  // D[b][i][j] = d[b*d_bs + i*ldd + j]: rows with a unit column stride, ldd >= n (unless m == 1),
  // d_bs > 0 when batch > 1. Written whole; nothing else is touched.
  void* d = nullptr;
  int64_t ldd = 0, d_bs = 0;

  float alpha = 1.f, beta = 0.f;
  bool allow_tf32 = false;  // float32 only: CUBLAS_COMPUTE_32F_FAST_TF32 instead of true fp32

  // Optional [n] vector in D's dtype added to every row of D (cuBLASLt's BIAS epilogue), the same
  // for every batch: D = alpha*op(A)@op(B) + beta*C + bias.
  const void* bias = nullptr;
  int64_t bias_stride = 1;

  // Testing: route every operand (D included) through the aligned scratch, as the fallback does
  // when cuBLASLt offers no algorithm for the caller's layout.
  bool force_pack = false;
};

// How calls were routed since the process started (for tests and benchmarks: packing and the
// fallbacks cost copies, so a shape that takes them is slower than its FLOPs suggest).
struct RouteCounts {
  uint64_t calls = 0;             // gemm() calls that reached cuBLASLt (k > 0, non-empty)
  uint64_t packed_operands = 0;   // operands copied into scratch (D counts when copied back out)
  uint64_t pack_all = 0;          // calls where cuBLASLt refused the caller's layout
  uint64_t bias_fallback = 0;     // calls where no algorithm had the bias epilogue
  uint64_t no_workspace = 0;      // calls run without a workspace (first use inside a capture)
};
RouteCounts route_counts();

// Enqueues the GEMM on `stream` (device `device`); never synchronises. Throws loraops::Error:
// Value for a malformed D, Unsupported for m/n/k/batch beyond int32 and for a call that needs more
// packing scratch than exists while the stream is being captured, Runtime for CUDA/cuBLASLt
// failures (with the status name).
void gemm(const GemmDesc& g, cudaStream_t stream, int device);

}  // namespace loraops::cuda::lt
