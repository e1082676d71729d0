// Batched strided copy. Bits are moved, not values (no conversion), so one kernel per element
// size serves every dtype. Consecutive threads take consecutive j: the writes are coalesced
// whenever the destination has a unit column stride, which is how the packing callers lay it out.
#include "cuda/kernels/strided_copy.hpp"

#include "cuda/common.cuh"

namespace loraops::cuda {

namespace {

struct CopyArgs {
  int64_t rows, cols, total;
  int64_t s_bs, s_rs, s_cs, d_bs, d_rs, d_cs;
};

// Both kernels launch as programmatic dependents of the work before them (their setup overlaps
// its tail) and wait for it before touching memory.
template <class T>
__global__ void strided_copy_kernel(const T* __restrict__ src, T* __restrict__ dst, CopyArgs a) {
  wait_then_allow_dependents();
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < a.total; e += step) {
    const int64_t r = e / a.cols, j = e - r * a.cols;
    const int64_t b = r / a.rows, i = r - b * a.rows;
    dst[b * a.d_bs + i * a.d_rs + j * a.d_cs] = src[b * a.s_bs + i * a.s_rs + j * a.s_cs];
  }
}

template <class T>
__global__ void pack_rows_kernel(const T* __restrict__ src, T* __restrict__ dst,
                                 detail::RowsView v, int64_t total) {
  wait_then_allow_dependents();
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += step) {
    const int64_t i = e / v.cols, j = e - i * v.cols;
    dst[e] = src[v.row_offset(i) + j * v.col_stride];
  }
}

int copy_blocks(int64_t total, int device) {
  const int64_t cap = int64_t(sm_count(device)) * 8;  // a full GPU; the kernels loop past it
  const int64_t want = (total + 255) / 256;
  return int(want < cap ? want : cap);
}

}  // namespace

void pack_rows(const detail::RowsView& v, int64_t elem_bytes, void* dst, cudaStream_t stream,
               int device) {
  const int64_t total = v.rows * v.cols;
  if (total == 0) return;
  const int blocks = copy_blocks(total, device);
  if (elem_bytes == 4)
    launch_kernel(pack_rows_kernel<uint32_t>, dim3(unsigned(blocks)), 256, 0, stream, true,
                  static_cast<const uint32_t*>(v.p), static_cast<uint32_t*>(dst), v, total);
  else
    launch_kernel(pack_rows_kernel<uint16_t>, dim3(unsigned(blocks)), 256, 0, stream, true,
                  static_cast<const uint16_t*>(v.p), static_cast<uint16_t*>(dst), v, total);
  LORAOPS_CUDA_CHECK_LAUNCH("pack_rows");
}

void strided_copy(int64_t elem_bytes, int64_t batch, int64_t rows, int64_t cols, StridedMat src,
                  void* dst, int64_t d_bs, int64_t d_rs, int64_t d_cs, cudaStream_t stream,
                  int device) {
  const int64_t total = batch * rows * cols;
  if (total == 0) return;
  const CopyArgs a{rows, cols, total, src.bs, src.rs, src.cs, d_bs, d_rs, d_cs};
  constexpr int kThreads = 256;
  const int blocks = copy_blocks(total, device);
  if (elem_bytes == 4)
    launch_kernel(strided_copy_kernel<uint32_t>, dim3(unsigned(blocks)), kThreads, 0, stream, true,
                  static_cast<const uint32_t*>(src.p), static_cast<uint32_t*>(dst), a);
  else
    launch_kernel(strided_copy_kernel<uint16_t>, dim3(unsigned(blocks)), kThreads, 0, stream, true,
                  static_cast<const uint16_t*>(src.p), static_cast<uint16_t*>(dst), a);
  LORAOPS_CUDA_CHECK_LAUNCH("strided_copy");
}

}  // namespace loraops::cuda
