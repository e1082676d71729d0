// Activations (relu, sigmoid, tanh, gelu, gelu_tanh, silu) for float32/float16/bfloat16.
// Memory-bound: the contiguous path moves 16 bytes per thread per access and computes in fp32;
// any other layout takes the strided path (one element per thread, offsets from the RowsView).
#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/kernels.hpp"
#include "cuda/kernels/row_common.cuh"

namespace loraops::cuda {

namespace {

using detail::RowParams;
using detail::RowsView;

// Matches the CPU reference: sigmoid never overflows, erfc keeps gelu accurate in the left tail,
// gelu_tanh is x*sigmoid(2u) (the tanh form without its cancellation), and the smooth
// activations give their limit 0 at -inf instead of -inf*0 = NaN. The division is
// __fdividef's (2 ulp; an IEEE division is a dozen instructions with a slow path: silu bf16
// 16384x4096 3839 -> 3862 GB/s in a diagnostic kernel, H200 2026-11-29); its 0 for a
// denominator past 2^126 is sigmoid's value there (below 2^-126) and at exp's overflow (inf).
__device__ __forceinline__ float sigmoid(float x) { return __fdividef(1.f, 1.f + __expf(-x)); }

template <Activation K>
__device__ __forceinline__ float act(float x) {
  if constexpr (K == Activation::Relu) return x > 0.f ? x : (x != x ? x : 0.f);  // NaN stays NaN
  if constexpr (K == Activation::Sigmoid) return sigmoid(x);
  if constexpr (K == Activation::Tanh) return tanhf(x);
  if constexpr (K == Activation::Gelu)
    return x == -INFINITY ? 0.f : 0.5f * x * erfcf(x * -0.70710678118654752f);
  if constexpr (K == Activation::GeluTanh) {
    const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    return x == -INFINITY ? 0.f : x * sigmoid(2.f * u);
  }
  if constexpr (K == Activation::Silu) return x == -INFINITY ? 0.f : x * sigmoid(x);
  return x;
}

// n elements, contiguous, both pointers 16-byte aligned; V elements per 16-byte vector. One
// tile of U vectors per thread per block, no grid-stride loop: each thread issues its U
// independent, coalesced 16-byte loads before the first use, and the many short blocks keep every
// SM busy to the end (a capped grid looping over tiles measured 5% slower: NOTES.md). The halves
// are converted two per instruction (rows::pack; element by element, the same kernel ran at 3498
// GB/s against 3839, silu bf16 16384x4096), loads and stores are evict-first (each byte is
// touched once: 3839 -> 3893). x may be y (each thread reads its elements before it writes them).
constexpr int kVecThreads = 256;

template <class T, Activation K, int U>
__global__ void __launch_bounds__(kVecThreads) activation_vec(const T* x, T* y, int64_t n) {
  wait_then_allow_dependents();  // launched as a programmatic dependent: before any memory access
  constexpr int V = 16 / sizeof(T);
  const int64_t nvec = n / V;
  const int64_t base = int64_t(blockIdx.x) * kVecThreads * U + threadIdx.x;
  rows::Vec<T, V> a[U];
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t i = base + int64_t(u) * kVecThreads;
    if (i < nvec) a[u] = rows::load_last<T, V>(x + i * V);
  }
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t i = base + int64_t(u) * kVecThreads;
    if (i < nvec) {
      float o[V];
#pragma unroll
      for (int j = 0; j < V; ++j) o[j] = act<K>(a[u][j]);
      rows::store<T, V>(y + i * V, rows::pack<T, V>(o));
    }
  }
  // The tail (< V elements) goes to the first threads of the grid.
  const int64_t t = nvec * V + int64_t(blockIdx.x) * kVecThreads + threadIdx.x;
  if (t < n) y[t] = from_float<T>(act<K>(to_float(x[t])));
}

template <class T, Activation K>
__global__ void activation_strided(RowsView xv, RowsView yv, int64_t n) {
  wait_then_allow_dependents();  // launched as a programmatic dependent: before any memory access
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride) {
    const int64_t row = e / xv.cols, col = e - row * xv.cols;
    const T* xp = static_cast<const T*>(xv.p) + xv.row_offset(row) + col * xv.col_stride;
    T* yp = static_cast<T*>(yv.p) + yv.row_offset(row) + col * yv.col_stride;
    *yp = from_float<T>(act<K>(to_float(*xp)));
  }
}

bool flat(const RowsView& v) {
  int64_t rs;
  return v.col_stride == 1 && v.uniform(&rs) && (v.nlead == 0 || rs == v.cols);
}

// Blocks for `work` items of `per_block` each, capped at 8 resident 256-thread blocks per SM
// (a full SM); the kernels loop past that.
int grid_for(int64_t work, int64_t per_block, int device) {
  const int64_t blocks = (work + per_block - 1) / per_block;
  const int64_t cap = int64_t(sm_count(device)) * 8;
  return int(blocks < cap ? (blocks > 0 ? blocks : 1) : cap);
}

template <class T, Activation K>
void launch(const RowParams& p, cudaStream_t stream) {
  const int64_t n = p.x.rows * p.x.cols;
  constexpr int kThreads = kVecThreads;
  const bool aligned = (reinterpret_cast<uintptr_t>(p.x.p) | reinterpret_cast<uintptr_t>(p.out.p)) % 16 == 0;
  // 2 vectors per thread (H200, 2026-11-29, loraops_latency): silu bf16 16384x4096 3794 GB/s,
  // against 3742 with 4 (a diagnostic kernel had put 4 ahead, 3917-3933); the seed shape
  // ([4,16,1024] fp32, 16K vectors: 32 blocks or 16) 1.66 µs in graph replay against 2.17.
  constexpr int kUnroll = 2;
  const bool pdl = row_ops_pdl().load(std::memory_order_relaxed);
  if (flat(p.x) && flat(p.out) && aligned) {
    const int64_t vecs = n / (16 / int64_t(sizeof(T)));
    const int64_t tiles = (vecs + kThreads * kUnroll - 1) / (kThreads * kUnroll);
    if (tiles > INT32_MAX) throw Error(ErrorKind::Unsupported, "activation", "x",
                                       "fewer than 2^31 tiles of 512 vectors", "more");
    launch_kernel(activation_vec<T, K, kUnroll>, dim3(unsigned(tiles > 0 ? tiles : 1)), kThreads, 0, stream, pdl,
                  static_cast<const T*>(p.x.p), static_cast<T*>(p.out.p), n);
  } else {
    launch_kernel(activation_strided<T, K>, dim3(unsigned(grid_for(n, kThreads, p.device_index))), kThreads, 0, stream,
                  pdl, p.x, p.out, n);
  }
  LORAOPS_CUDA_CHECK_LAUNCH("activation");
}

}  // namespace

void activation_custom(const RowParams& p, void* stream) {
  DeviceGuard guard(p.device_index);
  auto s = static_cast<cudaStream_t>(stream);
  dispatch_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    switch (p.kind) {
      case Activation::Relu: return launch<T, Activation::Relu>(p, s);
      case Activation::Sigmoid: return launch<T, Activation::Sigmoid>(p, s);
      case Activation::Tanh: return launch<T, Activation::Tanh>(p, s);
      case Activation::Gelu: return launch<T, Activation::Gelu>(p, s);
      case Activation::GeluTanh: return launch<T, Activation::GeluTanh>(p, s);
      case Activation::Silu: return launch<T, Activation::Silu>(p, s);
    }
  });
}

}  // namespace loraops::cuda
