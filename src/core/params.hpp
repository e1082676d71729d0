// The kernel-facing view of each op: raw pointers, sizes, strides (in elements) and scalars.
// Built by src/core after validation; every backend's launchers take these and a stream.
// Nothing in here knows a framework type.
#pragma once

#include <array>
#include <cstdint>
#include <optional>

#include "loraops/dtype.hpp"
#include "loraops/ops.hpp"

// Views are read by device code too.
#if defined(__CUDACC__)
#define LORAOPS_HD __host__ __device__
#else
#define LORAOPS_HD
#endif

namespace loraops::detail {

// A strided matrix: element (i, j) is at p[i*rs + j*cs].
struct MatView {
  const void* p = nullptr;
  int64_t rs = 0, cs = 0;
};

// A tensor seen as `rows` rows of `cols` elements. Rows are enumerated over the leading dims
// (row-major); row i starts at p + row_offset(i); element j of a row is at +j*col_stride.
// The core collapses leading dims where it can, so nlead <= 1 in the common cases.
struct RowsView {
  void* p = nullptr;
  int64_t rows = 0, cols = 0, col_stride = 1;
  int nlead = 0;
  std::array<int64_t, kMaxDims> lead_shape{}, lead_stride{};

  LORAOPS_HD int64_t row_offset(int64_t i) const {
    int64_t off = 0;
    for (int d = nlead - 1; d >= 0; --d) {
      const int64_t s = lead_shape[size_t(d)];
      off += (i % s) * lead_stride[size_t(d)];
      i /= s;
    }
    return off;
  }
  // True when rows are evenly spaced; then row i starts at p + i * *row_stride.
  LORAOPS_HD bool uniform(int64_t* row_stride) const {
    if (nlead == 0) { *row_stride = 0; return true; }
    if (nlead == 1) { *row_stride = lead_stride[0]; return true; }
    return false;
  }
};

struct MatmulParams {
  DType dtype{};
  int device_index = 0;  // which GPU, for CUDA tensors
  int64_t batch = 1, m = 0, n = 0, k = 0;
  // op(a)[b][i][l] = a[b*a_bs + i*a.rs + l*a.cs]; op(b)[b][l][j] = b[b*b_bs + l*b.rs + j*b.cs]
  MatView a, b, c;
  int64_t a_bs = 0, b_bs = 0, c_bs = 0;
  void* out = nullptr;  // contiguous [batch, m, n]
  float alpha = 1.f, beta = 0.f;  // beta != 0 implies c.p != nullptr
  bool allow_tf32 = false;
};

// softmax, rms_norm, layer_norm, activation: each works row by row (activation elementwise).
struct RowParams {
  DType dtype{};
  int device_index = 0;  // which GPU, for CUDA tensors
  RowsView x, out;  // same rows and cols
  const void* weight = nullptr;  // [cols] or null
  int64_t weight_stride = 1;
  const void* bias = nullptr;  // [cols] or null
  int64_t bias_stride = 1;
  float eps = 0.f;
  Activation kind = Activation::Relu;
};

struct LoraForwardParams {
  DType dtype{};
  int device_index = 0;  // which GPU, for CUDA tensors
  int64_t m = 0, k = 0, n = 0, r = 0;
  RowsView x;          // m rows of k
  MatView weight;      // [n, k]
  MatView lora_a;      // [r, k]
  MatView lora_b;      // [n, r]
  const void* bias = nullptr;  // [n] or null
  int64_t bias_stride = 1;
  float scale = 0.f;
  void* out = nullptr;  // contiguous [m, n]
  void* xa_out = nullptr;  // contiguous [m, r]: x@A.T (unscaled, x's dtype) when the caller asks
};

struct LoraBackwardParams {
  DType dtype{};
  int device_index = 0;  // which GPU, for CUDA tensors
  int64_t m = 0, k = 0, n = 0, r = 0;
  RowsView grad_y;     // m rows of n
  RowsView x;          // m rows of k
  MatView weight;      // [n, k]
  MatView lora_a;      // [r, k]
  MatView lora_b;      // [n, r]
  float scale = 0.f;
  void* grad_x = nullptr;  // contiguous [m, k]
  void* grad_a = nullptr;  // contiguous [r, k]
  void* grad_b = nullptr;  // contiguous [n, r]
  RowsView xa;             // m rows of r: the forward's x@A.T, used instead of recomputing it
                           // when xa.p is set (null: not given)
};

struct AttentionParams {
  DType dtype{};
  int device_index = 0;  // which GPU, for CUDA tensors
  int64_t batch = 0, hq = 0, hkv = 0, sq = 0, sk = 0, d = 0;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  std::array<int64_t, 4> q_strides{}, k_strides{}, v_strides{};  // [B, H, S, D] strides
  void* out = nullptr;  // contiguous [B, Hq, Sq, D]
  bool causal = false;
  float scale = 1.f;
};

// What attention(q, k, v, causal, scale, out) hands its backend, for tensors it has validated
// (src/core/ops_attention.cpp); the GPU tests and loraops_latency call kernels with it directly.
AttentionParams attention_params(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                                 std::optional<double> scale, const Tensor& out);

}  // namespace loraops::detail
