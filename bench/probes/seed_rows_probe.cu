// Where the seed shape's time goes: [64 rows, 1024] fp32 row kernels in CUDA-graph replay with
// programmatic dependent launch, built up step by step (empty, copy, + one reduction, softmax
// with two reductions, softmax with one online reduction), at several threads per row, plus
// clock64 phase stamps of block 0 inside softmax.
#include <cuda_runtime.h>
#include "cuda/kernels/softmax.cu"
#include <functional>
#include <cstdio>
#include <cstdlib>

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); exit(1); } } while (0)

constexpr int kRows = 64, kCols = 1024, kNv = kCols / 4;

__device__ unsigned long long g_ph[8];
__device__ unsigned long long g_cnt;

__device__ __forceinline__ float nanmax(float a, float b) { float r; asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }
__device__ __forceinline__ float ex(float x, float m) {
  float r; asm("{\n\t.reg .f32 t;\n\tsub.f32 t, %1, %2;\n\tmul.f32 t, t, 0f3FB8AA3B;\n\tex2.approx.ftz.f32 %0, t;\n\t}" : "=f"(r) : "f"(x), "f"(m)); return r;
}
__device__ __forceinline__ unsigned long long clk() { unsigned long long c; asm volatile("mov.u64 %0, %%clock64;" : "=l"(c) :: "memory"); return c; }

struct Sum { float v; __device__ static Sum id() { return {0.f}; } __device__ static Sum mg(Sum a, Sum b) { return {a.v + b.v}; }
  __device__ static Sum sx(Sum a, int o) { return {__shfl_xor_sync(~0u, a.v, o)}; } };
struct Max { float v; __device__ static Max id() { return {-INFINITY}; } __device__ static Max mg(Max a, Max b) { return {nanmax(a.v, b.v)}; }
  __device__ static Max sx(Max a, int o) { return {__shfl_xor_sync(~0u, a.v, o)}; } };
struct On { float m, s; __device__ static On id() { return {-INFINITY, 0.f}; }
  __device__ static On mg(On a, On b) { const float m = nanmax(a.m, b.m); if (m == -INFINITY) return {m, 0.f}; return {m, a.s * ex(a.m, m) + b.s * ex(b.m, m)}; }
  __device__ static On sx(On a, int o) { return {__shfl_xor_sync(~0u, a.m, o), __shfl_xor_sync(~0u, a.s, o)}; } };

// reduce over TPR threads (TPR <= 32: a sub-warp; else the block of TPR threads)

namespace loraops::cuda { namespace {
using namespace rows;
// softmax_reg<float,4,4> as in softmax.cu, with clock64 stamps in block 0 thread 0; HOIST: the
// first row's addresses and sizes read from the parameters before the dependency wait
template <int HOIST>
__global__ void __launch_bounds__(256) lib_stamped(RowParams p, int tpr) {
  using T = float; constexpr int V = 4, NVEC = 4;
  const bool st = blockIdx.x == 0 && threadIdx.x == 0;
  unsigned long long c0 = st ? clk() : 0, c1 = 0, c2 = 0, c3 = 0, c4 = 0, c5 = 0;
  const T* hx = nullptr; T* hy = nullptr; int64_t hrows = 0; int hnv = 0;
  if constexpr (HOIST) {
    hx = static_cast<const T*>(p.x.p) + int64_t(blockIdx.x) * p.x.lead_stride[0];
    hy = static_cast<T*>(p.out.p) + int64_t(blockIdx.x) * p.out.lead_stride[0];
    hrows = p.x.rows; hnv = int(p.x.cols / V);
    asm volatile("mov.b64 %0, %0;" : "+l"(hx)); asm volatile("mov.b64 %0, %0;" : "+l"(hy));
    asm volatile("mov.b64 %0, %0;" : "+l"(hrows)); asm volatile("mov.b32 %0, %0;" : "+r"(hnv));
  }
  wait_then_allow_dependents();
  if (st) c1 = clk();
  __shared__ float red[kReduceFloats];
  const Group g(tpr);
  const int nv = HOIST ? hnv : int(p.x.cols / V);
  const int64_t rows_ = HOIST ? hrows : p.x.rows;
  int parity = 0;
  for (int64_t r0 = int64_t(blockIdx.x) * g.rpb; r0 < rows_; r0 += int64_t(gridDim.x) * g.rpb) {
    const int64_t row = r0 + g.slot;
    const bool active = row < rows_;
    const T* xr = HOIST ? hx : row_ptr<const T>(p.x, active ? row : 0);
    T* yr = HOIST ? hy : row_ptr<T>(p.out, active ? row : 0);
    Vec<T, V> v[NVEC];
#pragma unroll
    for (int k = 0; k < NVEC; ++k) {
      const int c = k * tpr + g.t;
      v[k] = active && c < nv ? load_last<T, V>(vec_ptr<V>(xr, c, 1)) : splat<T, V>(-INFINITY);
    }
    float m = -INFINITY;
#pragma unroll
    for (int k = 0; k < NVEC; ++k)
#pragma unroll
      for (int j = 0; j < V; ++j) m = nanmax(m, v[k][j]);
    if (st) c2 = clk();
    m = group_reduce(MaxOp{m}, g, red, parity).v;
    if (st) c3 = clk();
    const bool none = m == -INFINITY;
    const float mm = none ? 0.f : m;
    float e[NVEC][V];
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < NVEC; ++k)
#pragma unroll
      for (int j = 0; j < V; ++j) { const float ej = exp_diff(v[k][j], mm); e[k][j] = ej; s += ej; }
    s = group_reduce(SumOp{s}, g, red, parity).v;
    if (st) c4 = clk();
    const float inv = none ? 0.f : 1.f / s;
#pragma unroll
    for (int k = 0; k < NVEC; ++k) {
      const int c = k * tpr + g.t;
      if (!active || c >= nv) continue;
      float y[V];
#pragma unroll
      for (int j = 0; j < V; ++j) y[j] = e[k][j] * inv;
      store<T, V>(vec_ptr<V>(yr, c, 1), pack<T, V>(y));
    }
    if (HOIST) break;
  }
  if (st) {
    c5 = clk();
    atomicAdd(&g_ph[0], c1 - c0); atomicAdd(&g_ph[1], c2 - c1); atomicAdd(&g_ph[2], c3 - c2);
    atomicAdd(&g_ph[3], c4 - c3); atomicAdd(&g_ph[4], c5 - c4); atomicAdd(&g_cnt, 1ull);
  }
}
}}

template <int TPR, class S>
__device__ __forceinline__ S reduce(S s, float* sm, int& par) {
  constexpr int W = TPR < 32 ? TPR : 32;
#pragma unroll
  for (int o = W / 2; o > 0; o >>= 1) s = S::mg(s, S::sx(s, o));
  if constexpr (TPR <= 32) {
    return s;  // xor butterfly: every lane has the total
  } else {
    S* buf = reinterpret_cast<S*>(sm + 64 * par);
    par ^= 1;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) buf[warp] = s;
    __syncthreads();
    constexpr int warps = TPR / 32;
    s = lane < warps ? buf[lane] : S::id();
#pragma unroll
    for (int o = warps / 2; o > 0; o >>= 1) s = S::mg(s, S::sx(s, o));
    return s;
  }
}

// MODE 0 empty, 1 copy, 2 one sum reduction, 3 softmax two reductions, 4 softmax online, 5 = 3 with stamps
// (MODE 3 is the library's softmax math written again on purpose, with TPR known at compile time:
// the baseline the library kernel is measured against.)
template <int TPR, int MODE, bool CS>
__global__ void k(const float4* __restrict__ x, float4* __restrict__ y) {
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  if constexpr (MODE == 0) return;
  constexpr int NVEC = (kNv + TPR - 1) / TPR;
  __shared__ float sm[128];
  int par = 0;
  const int rpb = TPR >= 32 ? 1 : blockDim.x / TPR;
  const int t = TPR >= 32 ? threadIdx.x : threadIdx.x % TPR;
  const int row = blockIdx.x * rpb + (TPR >= 32 ? 0 : threadIdx.x / TPR);
  const float4* xr = x + row * kNv;
  float4* yr = y + row * kNv;
  const bool st = MODE == 5 && blockIdx.x == 0 && threadIdx.x == 0;
  unsigned long long c0 = st ? clk() : 0, c1 = 0, c2 = 0, c3 = 0;
  float v[NVEC][4];
#pragma unroll
  for (int q = 0; q < NVEC; ++q) {
    const float4 a = CS ? __ldcs(xr + q * TPR + t) : xr[q * TPR + t];
    v[q][0] = a.x, v[q][1] = a.y, v[q][2] = a.z, v[q][3] = a.w;
  }
  float scale = 1.f;
  if constexpr (MODE == 2) {
    float s = 0.f;
#pragma unroll
    for (int q = 0; q < NVEC; ++q)
#pragma unroll
      for (int j = 0; j < 4; ++j) s = fmaf(v[q][j], v[q][j], s);
    s = reduce<TPR>(Sum{s}, sm, par).v;
    scale = rsqrtf(s * (1.f / kCols) + 1e-6f);
  }
  if constexpr (MODE == 3 || MODE == 5) {
    float m = -INFINITY;
#pragma unroll
    for (int q = 0; q < NVEC; ++q)
#pragma unroll
      for (int j = 0; j < 4; ++j) m = nanmax(m, v[q][j]);
    if (st) c1 = clk();
    m = reduce<TPR>(Max{m}, sm, par).v;
    if (st) c2 = clk();
    float s = 0.f;
#pragma unroll
    for (int q = 0; q < NVEC; ++q)
#pragma unroll
      for (int j = 0; j < 4; ++j) { v[q][j] = ex(v[q][j], m); s += v[q][j]; }
    s = reduce<TPR>(Sum{s}, sm, par).v;
    if (st) c3 = clk();
    scale = 1.f / s;
  }
  if constexpr (MODE == 4) {
    float m = -INFINITY;
#pragma unroll
    for (int q = 0; q < NVEC; ++q)
#pragma unroll
      for (int j = 0; j < 4; ++j) m = nanmax(m, v[q][j]);
    float s = 0.f;
#pragma unroll
    for (int q = 0; q < NVEC; ++q)
#pragma unroll
      for (int j = 0; j < 4; ++j) { v[q][j] = ex(v[q][j], m); s += v[q][j]; }
    const On o = reduce<TPR>(On{m, s}, sm, par);
    scale = ex(m, o.m) / o.s;
  }
#pragma unroll
  for (int q = 0; q < NVEC; ++q) {
    const float4 a = make_float4(v[q][0] * scale, v[q][1] * scale, v[q][2] * scale, v[q][3] * scale);
    if (CS) __stcs(yr + q * TPR + t, a); else yr[q * TPR + t] = a;
  }
  if (st) {
    const unsigned long long c4 = clk();
    atomicAdd(&g_ph[0], c1 - c0); atomicAdd(&g_ph[1], c2 - c1); atomicAdd(&g_ph[2], c3 - c2); atomicAdd(&g_ph[3], c4 - c3);
    atomicAdd(&g_cnt, 1ull);
  }
}

// Launches kernel<<<grid, block>>>(args...) on s as a programmatic dependent, as the library does.
template <class... P, class... A>
void launch_pdl(void (*kernel)(P...), int grid, int block, cudaStream_t s, A... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(grid); cfg.blockDim = dim3(block); cfg.stream = s;
  cudaLaunchAttribute at[1]; at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization; at[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = at; cfg.numAttrs = 1;
  CK(cudaLaunchKernelEx(&cfg, kernel, args...));
}

void reset_stamps() {
  unsigned long long z[8] = {}, zc = 0;
  CK(cudaMemcpyToSymbol(g_ph, z, sizeof z)); CK(cudaMemcpyToSymbol(g_cnt, &zc, sizeof zc));
}
// The stamps summed since reset_stamps, per stamped call: n phases into ph.
void read_stamps(double* ph, int n) {
  unsigned long long sum[8], c; CK(cudaMemcpyFromSymbol(sum, g_ph, sizeof sum)); CK(cudaMemcpyFromSymbol(&c, g_cnt, sizeof c));
  for (int i = 0; i < n; ++i) ph[i] = double(sum[i]) / c;
}

// µs per call of fn: 100 calls captured in a graph, 5 warm-up replays (then the stamps are reset),
// the best of 5 timings of 50 replays.
float graph_us(cudaStream_t s, const std::function<void()>& fn) {
  constexpr int kNodes = 100, kReps = 50;
  cudaGraph_t g; cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  for (int i = 0; i < kNodes; ++i) fn();
  CK(cudaStreamEndCapture(s, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  for (int i = 0; i < 5; ++i) CK(cudaGraphLaunch(ge, s));
  reset_stamps();
  cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
  float best = 1e9;
  for (int trial = 0; trial < 5; ++trial) {
    CK(cudaEventRecord(a, s));
    for (int i = 0; i < kReps; ++i) CK(cudaGraphLaunch(ge, s));
    CK(cudaEventRecord(b, s)); CK(cudaEventSynchronize(b));
    float ms; cudaEventElapsedTime(&ms, a, b);
    const float us = ms * 1000.f / (kNodes * kReps);
    if (us < best) best = us;
  }
  cudaEventDestroy(a); cudaEventDestroy(b);
  cudaGraphExecDestroy(ge); cudaGraphDestroy(g);
  return best;
}

template <int TPR, int MODE, bool CS>
void time_graph(cudaStream_t s, const float4* x, float4* y, int block, const char* name) {
  const int rpb = TPR >= 32 ? 1 : block / TPR;
  const int threads = TPR >= 32 ? TPR : block;
  const float us = graph_us(s, [&] { launch_pdl(k<TPR, MODE, CS>, kRows / rpb, threads, s, x, y); });
  printf("%-44s tpr %3d block %3d: %.3f us/op", name, TPR, threads, us);
  if (MODE == 5) {
    double ph[4];
    read_stamps(ph, 4);
    printf("   cycles: loads %.0f, max-reduce %.0f, exp+sum-reduce %.0f, write %.0f", ph[0], ph[1], ph[2], ph[3]);
  }
  printf("\n");
}

void time_fn(cudaStream_t s, const std::function<void()>& fn, const char* name) {
  printf("%-60s: %.3f us/op\n", name, graph_us(s, fn));
}

int main() {
  float4 *x, *y;
  CK(cudaMalloc(&x, kRows * kCols * 4)); CK(cudaMalloc(&y, kRows * kCols * 4));
  float* h = (float*)malloc(kRows * kCols * 4);
  for (int i = 0; i < kRows * kCols; ++i) h[i] = float((i * 7919) % 1000) / 500.f - 1.f;
  CK(cudaMemcpy(x, h, kRows * kCols * 4, cudaMemcpyHostToDevice));
  cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  int clk_khz; cudaDeviceGetAttribute(&clk_khz, cudaDevAttrClockRate, 0);
  printf("SM clock attr %d MHz\n", clk_khz / 1000);
  loraops::detail::RowParams p;
  p.dtype = loraops::DType::Float32;
  p.x.p = x; p.x.rows = kRows; p.x.cols = kCols; p.x.nlead = 1; p.x.lead_shape[0] = kRows; p.x.lead_stride[0] = kCols;
  p.out = p.x; p.out.p = y;
  auto lib = [&] { loraops::cuda::softmax_custom(p, s); };
  auto direct = [&] { launch_pdl(loraops::cuda::softmax_reg<float, 4, 4>, kRows, 64, s, p, 64); };
  auto stamped = [&](auto kern, const char* name) {
    time_fn(s, [&] { launch_pdl(kern, kRows, 64, s, p, 64); }, name);
    double ph[5];
    read_stamps(ph, 5);
    printf("   cycles: before-wait..after %.0f, loads+max %.0f, max-reduce %.0f, exp+sum-reduce %.0f, write %.0f\n",
           ph[0], ph[1], ph[2], ph[3], ph[4]);
  };
  for (int rep = 0; rep < 2; ++rep) {
    stamped(loraops::cuda::lib_stamped<0>, "library copy, stamped");
    stamped(loraops::cuda::lib_stamped<1>, "library copy, stamped, params hoisted");
    time_fn(s, lib, "library softmax_custom");
    time_fn(s, direct, "library softmax_reg<float,4,4> direct");
    time_graph<64, 0, true>(s, x, y, 64, "empty (wait only)");
    time_graph<64, 1, true>(s, x, y, 64, "copy .cs");
    time_graph<64, 1, false>(s, x, y, 64, "copy plain");
    time_graph<64, 2, true>(s, x, y, 64, "one sum reduction");
    time_graph<64, 3, true>(s, x, y, 64, "softmax 2 reductions");
    time_graph<64, 4, true>(s, x, y, 64, "softmax online 1 reduction");
    time_graph<64, 5, true>(s, x, y, 64, "softmax 2 red, stamped");
    time_graph<32, 1, true>(s, x, y, 32, "copy .cs");
    time_graph<32, 3, true>(s, x, y, 32, "softmax 2 reductions");
    time_graph<32, 3, true>(s, x, y, 128, "softmax 2 reductions");
    time_graph<32, 4, true>(s, x, y, 32, "softmax online");
    time_graph<128, 1, true>(s, x, y, 128, "copy .cs");
    time_graph<128, 3, true>(s, x, y, 128, "softmax 2 reductions");
    time_graph<128, 4, true>(s, x, y, 128, "softmax online");
    time_graph<128, 5, true>(s, x, y, 128, "softmax 2 red, stamped");
    time_graph<256, 1, true>(s, x, y, 256, "copy .cs");
    time_graph<256, 3, true>(s, x, y, 256, "softmax 2 reductions");
    time_graph<256, 4, true>(s, x, y, 256, "softmax online");
    time_graph<256, 5, true>(s, x, y, 256, "softmax 2 red, stamped");
    printf("\n");
  }
  return 0;
}
