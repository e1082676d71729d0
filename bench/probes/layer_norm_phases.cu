// Phases of layer_norm's register kernel on the seed shape (64 rows of 1024 fp32, weight and bias,
// graph replay with programmatic dependent launch): clock64 stamps of block 0, thread 0, in a
// copy of the kernel that stamp_layer_norm.py writes. On the device (see README.md here):
//   python3 bench/probes/stamp_layer_norm.py /tmp/probe && nvcc -O3 -std=c++20 \
//     --expt-relaxed-constexpr -arch=sm_90a -Isrc -Iinclude -I/tmp/probe -o /tmp/ln \
//     bench/probes/layer_norm_phases.cu src/core/error.cpp && /tmp/ln
#include <cuda_runtime.h>
#include <cstdio>
#include <functional>

__device__ unsigned long long g_ph[8];
__device__ unsigned long long g_cnt;
__device__ __forceinline__ unsigned long long clk() { unsigned long long c; asm volatile("mov.u64 %0, %%clock64;" : "=l"(c) :: "memory"); return c; }
#include "layer_norm_stamped.cu"  // written by stamp_layer_norm.py from src/cuda/kernels/layer_norm.cu
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); exit(1); } } while (0)
int main() {
  const int rows = 64, cols = 1024;
  float *x, *y, *w, *b;
  CK(cudaMalloc(&x, rows * cols * 4)); CK(cudaMalloc(&y, rows * cols * 4)); CK(cudaMalloc(&w, cols * 4)); CK(cudaMalloc(&b, cols * 4));
  float* h = (float*)malloc(rows * cols * 4);
  for (int i = 0; i < rows * cols; ++i) h[i] = 1.f + float((i * 7919) % 1000) / 500.f;
  CK(cudaMemcpy(x, h, rows * cols * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(w, h, cols * 4, cudaMemcpyHostToDevice)); CK(cudaMemcpy(b, h + cols, cols * 4, cudaMemcpyHostToDevice));
  cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  loraops::detail::RowParams p;
  p.dtype = loraops::DType::Float32; p.eps = 1e-5f;
  p.x.p = x; p.x.rows = rows; p.x.cols = cols; p.x.nlead = 1; p.x.lead_shape[0] = rows; p.x.lead_stride[0] = cols;
  p.out = p.x; p.out.p = y; p.weight = w; p.bias = b;
  for (int rep = 0; rep < 2; ++rep) {
    unsigned long long z[8] = {}, zc = 0;
    CK(cudaMemcpyToSymbol(g_ph, z, sizeof z)); CK(cudaMemcpyToSymbol(g_cnt, &zc, sizeof zc));
    const int kNodes = 100, kReps = 50;
    cudaGraph_t g; cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < kNodes; ++i) loraops::cuda::layer_norm_custom(p, s);
    CK(cudaStreamEndCapture(s, &g)); CK(cudaGraphInstantiate(&ge, g, 0));
    for (int i = 0; i < 5; ++i) CK(cudaGraphLaunch(ge, s));
    cudaEvent_t a, ev; cudaEventCreate(&a); cudaEventCreate(&ev);
    float best = 1e9;
    for (int t = 0; t < 5; ++t) {
      CK(cudaEventRecord(a, s)); for (int i = 0; i < kReps; ++i) CK(cudaGraphLaunch(ge, s));
      CK(cudaEventRecord(ev, s)); CK(cudaEventSynchronize(ev));
      float ms; cudaEventElapsedTime(&ms, a, ev); best = fminf(best, ms * 1000.f / (kNodes * kReps));
    }
    unsigned long long ph[8], c; CK(cudaMemcpyFromSymbol(ph, g_ph, sizeof ph)); CK(cudaMemcpyFromSymbol(&c, g_cnt, sizeof c));
    printf("layer_norm seed, stamped: %.3f us/op; cycles: wait %.0f, loads+sum %.0f, statistics %.0f, rescue check+rsqrt %.0f, write %.0f\n",
           best, double(ph[0]) / c, double(ph[1]) / c, double(ph[2]) / c, double(ph[3]) / c, double(ph[4]) / c);
  }
}
