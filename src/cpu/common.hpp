// Helpers shared by the CPU kernels: element access for any dtype, rows to/from float buffers,
// and an OpenMP parallel-for that stays serial for small work.
#pragma once

#include <cstdint>
#include <vector>

#include "core/params.hpp"
#include "loraops/dtype.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace loraops::cpu {

using detail::MatView;
using detail::RowsView;

// Element i of a typed array, as float.
inline float ld(const void* p, DType t, int64_t i) { return load_as_float(p, t, i); }
inline void st(void* p, DType t, int64_t i, float v) { store_from_float(p, t, i, v); }
inline double ldd(const void* p, DType t, int64_t i) { return double(load_as_float(p, t, i)); }

inline const char* byte_ptr(const void* p) { return static_cast<const char*>(p); }

// Pointer to element `off` (in elements) of an array of dtype t.
inline const void* at(const void* p, DType t, int64_t off) {
  return byte_ptr(p) + off * dtype_size(t);
}
inline void* at(void* p, DType t, int64_t off) {
  return static_cast<char*>(p) + off * dtype_size(t);
}

// Row `i` of a RowsView copied into buf[0..cols) as float.
inline void load_row(const RowsView& v, DType t, int64_t i, float* buf) {
  const void* row = at(v.p, t, v.row_offset(i));
  if (t == DType::Float32 && v.col_stride == 1) {
    const float* f = static_cast<const float*>(row);
    for (int64_t j = 0; j < v.cols; ++j) buf[j] = f[j];
    return;
  }
  for (int64_t j = 0; j < v.cols; ++j) buf[j] = ld(row, t, j * v.col_stride);
}

inline void store_row(const RowsView& v, DType t, int64_t i, const float* buf) {
  void* row = at(v.p, t, v.row_offset(i));
  if (t == DType::Float32 && v.col_stride == 1) {
    float* f = static_cast<float*>(row);
    for (int64_t j = 0; j < v.cols; ++j) f[j] = buf[j];
    return;
  }
  for (int64_t j = 0; j < v.cols; ++j) st(row, t, j * v.col_stride, buf[j]);
}

// A strided matrix copied into a dense row-major float buffer [rows, cols].
inline void load_mat(const MatView& m, DType t, int64_t rows, int64_t cols, float* dst) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[i * cols + j] = ld(m.p, t, i * m.rs + j * m.cs);
}

// Run body(begin, end) over [0, n) in chunks on the OpenMP threads; serially when the work
// (n * cost_per_item, in rough flops) is too small to pay for waking the threads.
template <class F>
void parallel_for(int64_t n, int64_t cost_per_item, F&& body) {
#if defined(_OPENMP)
  const int threads = omp_get_max_threads();
  if (threads > 1 && n > 1 && n * cost_per_item >= (int64_t(1) << 15)) {
    const int64_t chunks = n < threads ? n : threads;
#pragma omp parallel for schedule(static) num_threads(int(chunks))
    for (int64_t c = 0; c < chunks; ++c) body(n * c / chunks, n * (c + 1) / chunks);
    return;
  }
#endif
  body(int64_t(0), n);
}

}  // namespace loraops::cpu
