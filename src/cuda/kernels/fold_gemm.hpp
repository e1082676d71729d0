// The folded GEMM, d = [a | a2] @ [b | b2]^T (+ bias per column), written once: LoRA's low-rank
// term as extra K columns of the base GEMM (issue 4's forward y = [x | s*t] @ [W | B]^T, issue 5's
// grad_x = [g | s*gB] @ [W ; A]). CUTLASS sm90 kernels (fold_gemm.cuh), one translation unit per
// direction and dtype (fold_gemm_{fwd,bwd}_{bf16,fp16}.cu); this header keeps CUTLASS out of its
// callers.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "loraops/dtype.hpp"

namespace loraops::cuda {

struct FoldGemmArgs {
  int64_t m = 0, n = 0;
  int64_t k1 = 0, k2 = 0;  // the two parts' depths (each a multiple of 8)
  // a: [m, k1] rows of lda elements, a2: [m, k2] rows of lda2 (unit column stride, 16-byte rows)
  const void* a = nullptr;
  const void* a2 = nullptr;
  int64_t lda = 0, lda2 = 0;
  // b_k_major: b is [n, k1] rows of ldb (the forward's W), b2 [n, k2] rows of ldb2;
  // else b is [k1, n] rows of ldb (the backward's W), b2 [k2, n] rows of ldb2.
  const void* b = nullptr;
  const void* b2 = nullptr;
  int64_t ldb = 0, ldb2 = 0;
  bool b_k_major = true;
  const void* bias = nullptr;  // [n], unit stride, 16-byte aligned; null: none
  void* d = nullptr;           // [m, n], contiguous, 16-byte rows
  // fold_gemm fills these in (CUTLASS's hw_info: no SM-count query per call). The persistent
  // scheduler keeps CUTLASS's defaults: swizzle 2/4/8 and raster along m or n measured within
  // noise of them (H200, 2026-11-30, NOTES.md).
  int device = 0, sm_count = 0;
};

// Which kernel the forward's GEMM (K-major B) takes (loraops_latency and the tests force each):
// Auto takes Narrow, the 128x128 cooperative tile, where a 128x256 tile would leave most
// multiprocessors without one (small m), else Pingpong: 128x128 tiles a warpgroup on the pingpong
// schedule (one warpgroup's epilogue runs under the other's mainloop), a cluster of 2 along m.
// The backward's GEMM (N-major B) is always the pingpong kernel.
enum class FoldTile { Auto, Narrow, Pingpong };
void set_fold_tile(FoldTile t);

// Bytes of device workspace fold_gemm needs for these arguments (often 0).
size_t fold_gemm_workspace(DType t, const FoldGemmArgs& a);
// Enqueues the GEMM on `stream` (float16 or bfloat16) as a programmatic dependent of the work
// before it (NOTES.md, session 16: a training step at m = 8192 took 1.153x the base GEMMs without
// that, 1.111x with it); throws Error(Runtime) if CUTLASS refuses.
void fold_gemm(DType t, const FoldGemmArgs& a, void* workspace, cudaStream_t stream);

// The translation units (fold_gemm.cpp dispatches to them): the forward's kernels per dtype
// (tile Narrow or Pingpong), the backward's.
size_t fold_gemm_workspace_fwd_bf16(const FoldGemmArgs& a, FoldTile tile);
void fold_gemm_fwd_bf16(const FoldGemmArgs& a, FoldTile tile, void* workspace, cudaStream_t stream);
size_t fold_gemm_workspace_fwd_fp16(const FoldGemmArgs& a, FoldTile tile);
void fold_gemm_fwd_fp16(const FoldGemmArgs& a, FoldTile tile, void* workspace, cudaStream_t stream);
size_t fold_gemm_workspace_bwd_bf16(const FoldGemmArgs& a);
void fold_gemm_bwd_bf16(const FoldGemmArgs& a, void* workspace, cudaStream_t stream);
size_t fold_gemm_workspace_bwd_fp16(const FoldGemmArgs& a);
void fold_gemm_bwd_fp16(const FoldGemmArgs& a, void* workspace, cudaStream_t stream);

}  // namespace loraops::cuda
