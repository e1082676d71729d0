// A batched strided matrix copied into another layout: dst[b][i][j] = src[b][i][j]. The vendor
// paths use it to pack a view the vendor library cannot take into contiguous scratch (and to copy
// a result back out of scratch).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/params.hpp"

namespace loraops::cuda {

// Element (b, i, j) is at base + b*bs + i*rs + j*cs (elements of elem_bytes = 2 or 4; any
// strides). Enqueued on `stream`; the current device must be `device`.
struct StridedMat {
  const void* p = nullptr;
  int64_t bs = 0, rs = 0, cs = 0;
};

void strided_copy(int64_t elem_bytes, int64_t batch, int64_t rows, int64_t cols, StridedMat src,
                  void* dst, int64_t d_bs, int64_t d_rs, int64_t d_cs, cudaStream_t stream,
                  int device);

// The rows of `v` (any leading layout) copied into contiguous dst[rows][cols].
void pack_rows(const detail::RowsView& v, int64_t elem_bytes, void* dst, cudaStream_t stream,
               int device);

}  // namespace loraops::cuda
