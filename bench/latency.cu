// loraops_latency: per-call latency of the seed suite's row ops on the GPU from C++, without
// Python in the way: back-to-back launches timed with events, and the same calls replayed from a
// CUDA graph; beside them the launch floor (an empty kernel, both ways). Prints a table.
//   usage: loraops_latency [calls=2000]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "loraops/loraops.hpp"

namespace {

#define CHECK(call)                                                                  \
  do {                                                                               \
    cudaError_t e_ = (call);                                                         \
    if (e_ != cudaSuccess) {                                                         \
      std::fprintf(stderr, "%s: %s\n", #call, cudaGetErrorString(e_));              \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)

__global__ void empty_kernel() {}

// Median over 9 samples of per-call µs for `calls` back-to-back calls of fn on stream s.
double time_eager(const std::function<void()>& fn, cudaStream_t s, int calls) {
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 50; ++i) fn();
  std::vector<double> us;
  for (int rep = 0; rep < 9; ++rep) {
    CHECK(cudaEventRecord(a, s));
    for (int i = 0; i < calls; ++i) fn();
    CHECK(cudaEventRecord(b, s));
    CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, a, b));
    us.push_back(ms * 1e3 / calls);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

// The same, with `per_graph` calls captured once and the graph replayed.
double time_graph(const std::function<void()>& fn, cudaStream_t s, int calls) {
  const int per_graph = 100;
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < per_graph; ++i) fn();
  CHECK(cudaStreamEndCapture(s, &g));
  CHECK(cudaGraphInstantiate(&ge, g, 0));
  const int replays = std::max(1, calls / per_graph);
  auto replay = [&] { CHECK(cudaGraphLaunch(ge, s)); };
  const double us = time_eager(replay, s, replays) / per_graph;
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  return us;
}

}  // namespace

int main(int argc, char** argv) {
  const int calls = argc > 1 ? std::atoi(argv[1]) : 2000;
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    std::printf("loraops_latency: no CUDA device\n");
    return 0;
  }
  cudaStream_t s;
  CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const int64_t shape[3] = {4, 16, 1024};
  const size_t n = 4 * 16 * 1024;
  std::vector<float> host(n);
  for (size_t i = 0; i < n; ++i) host[i] = float((i * 2654435761u) % 1000) / 250.f - 2.f;
  float *x, *y, *w, *b;
  CHECK(cudaMalloc(&x, n * 4));
  CHECK(cudaMalloc(&y, n * 4));
  CHECK(cudaMalloc(&w, 1024 * 4));
  CHECK(cudaMalloc(&b, 1024 * 4));
  CHECK(cudaMemcpy(x, host.data(), n * 4, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(w, host.data(), 1024 * 4, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(b, host.data() + 1024, 1024 * 4, cudaMemcpyHostToDevice));
  const loraops::Device dev{loraops::DeviceType::CUDA, 0};
  auto xv = loraops::Tensor::contiguous(x, loraops::DType::Float32, 3, shape, dev);
  auto yv = loraops::Tensor::contiguous(y, loraops::DType::Float32, 3, shape, dev);
  auto wv = loraops::Tensor::contiguous(w, loraops::DType::Float32, {1024}, dev);
  auto bv = loraops::Tensor::contiguous(b, loraops::DType::Float32, {1024}, dev);
  const loraops::Exec ex{.impl = loraops::Impl::Custom, .stream = s};

  struct Case {
    std::string name;
    std::function<void()> fn;
  };
  std::vector<Case> cases = {
      {"empty kernel (launch floor)", [&] { empty_kernel<<<1, 32, 0, s>>>(); }},
      {"softmax [4,16,1024] fp32", [&] { loraops::softmax(xv, -1, yv, ex); }},
      {"rms_norm [4,16,1024] fp32", [&] { loraops::rms_norm(xv, &wv, 1e-6, yv, ex); }},
      {"layer_norm [4,16,1024] fp32", [&] { loraops::layer_norm(xv, &wv, &bv, 1e-5, yv, ex); }},
      {"silu [4,16,1024] fp32",
       [&] { loraops::activation(xv, loraops::Activation::Silu, yv, ex); }},
  };
  std::printf("%-30s %14s %14s\n", "case (custom impl)", "eager us/call", "graph us/call");
  for (auto& c : cases) {
    double eager = -1, graph = -1;
    try {
      eager = time_eager(c.fn, s, calls);
      graph = time_graph(c.fn, s, calls);
    } catch (const loraops::Error& e) {
      std::printf("%-30s %s\n", c.name.c_str(), e.what());
      continue;
    }
    std::printf("%-30s %14.2f %14.2f\n", c.name.c_str(), eager, graph);
  }
  cudaFree(x);
  cudaFree(y);
  cudaFree(w);
  cudaFree(b);
  cudaStreamDestroy(s);
  return 0;
}
