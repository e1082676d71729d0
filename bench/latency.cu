// loraops_latency: per-call latency of the seed suite's row ops and LoRA shapes on the GPU from
// C++, without Python in the way: back-to-back launches timed with events, and the same calls
// replayed from a CUDA graph; beside them the launch floor (an empty kernel, both ways). Prints a
// table.
//
// The LoRA decode rows (bf16, K = N = 4096) rotate over 4 sets of weights (128 MiB in all, more
// than the 50 MiB L2), so each call reads W from HBM as a real decode step does; their GB/s
// column counts the weight bytes (W, A, B) per call. The seed LoRA rows (fp32) do not rotate:
// they are the small-shape latency, hot in L2, as the seed suite's other rows.
//   usage: loraops_latency [calls=2000] [name filter: only cases whose name contains it; a|b: either]
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/params.hpp"
#include "core/validate.hpp"
#include "cuda/common.cuh"
#include "cuda/kernels.hpp"
#include "cuda/kernels/fold_gemm.hpp"
#include "cuda/side_stream.hpp"
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
__global__ void empty_dependent_kernel() { loraops::cuda::wait_then_allow_dependents(); }

// The read floor: every 16-byte vector of `n` read once, 4 loads in flight per thread, one value
// per block written (so the loads are not dead). What one pass over W could take at best.
// kStreaming: evict-first loads (__ldcs, for the rotating buffers), else L2's default policy.
template <bool kStreaming = true>
__global__ void read_kernel(const uint4* __restrict__ p, size_t n, unsigned* out) {
  unsigned acc = 0;
  const size_t step = size_t(gridDim.x) * blockDim.x;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += 4 * step) {
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u)
      v[u] = i + u * step < n ? (kStreaming ? __ldcs(p + i + u * step) : __ldg(p + i + u * step)) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int u = 0; u < 4; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  if (acc == 0x12345678u) out[blockIdx.x] = acc;
}

// The LoRA decode kernel's reads of W (lora_decode_mma, m 5-8: 16 warps, two blocks per SM; m <= 4
// now reads in the "4 rows x 128 B" grouping, ROWS4 below) without its math:
// a block reads 16 rows of k halves, its warps splitting k in 64-column chunks, two in flight
// each; lane (g, c) reads rows g and g + 8 at columns c * 8 and c * 8 + 32 of a chunk (8 rows x
// 64 bytes per load instruction). Against the read floor it tells the access pattern and the
// occupancy from the decode kernel's math and epilogue. k a multiple of 64, n of 16.
// HINT: 0 none, 1 .L2::128B, 2 .L2::256B (how much L2 fetches from DRAM on the miss)
template <int HINT = 0>
__device__ __forceinline__ uint4 load_no_l1(const void* p) {  // as lora_decode.cu's load_stream (HINT 1)
  uint4 v;
#define LORAOPS_LOAD_NO_L1(hint)                                                                     \
  asm("ld.global.nc.L1::no_allocate" hint ".v4.u32 {%0, %1, %2, %3}, [%4];"                          \
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)                                                   \
      : "l"(p))
  if constexpr (HINT == 1) LORAOPS_LOAD_NO_L1(".L2::128B");
  else if constexpr (HINT == 2) LORAOPS_LOAD_NO_L1(".L2::256B");
  else LORAOPS_LOAD_NO_L1("");
#undef LORAOPS_LOAD_NO_L1
  return v;
}

template <int U, int HINT = 0, bool ROWS4 = false>
__global__ void __launch_bounds__(512, 2) read_decode_pattern(const uint16_t* w, int64_t k, unsigned* out) {
  const int warp = int(threadIdx.x) >> 5, lane = int(threadIdx.x) & 31;
  const int g = ROWS4 ? lane >> 3 : lane >> 2, c = ROWS4 ? lane & 7 : lane & 3;
  // ROWS4: rows g and g + 4 at 128 bytes each per instruction (h then covers rows + 8)
  const uint16_t* r0 = w + (int64_t(blockIdx.x) * 16 + g) * k + c * 8;
  const uint16_t* r1 = r0 + (ROWS4 ? 4 : 8) * k;
  const int64_t chunks = k / 64;
  unsigned acc = 0;
  for (int64_t ch = warp; ch < chunks; ch += 16 * U) {
    uint4 v[U][2][2];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t col = (ch + u * 16) * 64 + (ROWS4 ? h * 8 * k : h * 32);
        const bool in = ch + u * 16 < chunks;
        v[u][h][0] = in ? load_no_l1<HINT>(r0 + col) : make_uint4(0, 0, 0, 0);
        v[u][h][1] = in ? load_no_l1<HINT>(r1 + col) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int q = 0; q < 2; ++q) acc ^= v[u][h][q].x ^ v[u][h][q].y ^ v[u][h][q].z ^ v[u][h][q].w;
  }
  if (acc == 0x12345678u) out[blockIdx.x] = acc;
}

// The decode kernel's split of W (a block per 16 rows, 2 blocks per SM) read linearly: each
// warp instruction 512 contiguous bytes, 4 in flight per thread. Against read_decode_pattern it
// tells the per-instruction pattern (8 rows x 64 bytes) from the split into fixed regions.
__global__ void __launch_bounds__(512, 2) read_block_linear(const uint4* w, int64_t vectors_per_block, unsigned* out) {
  const uint4* p = w + int64_t(blockIdx.x) * vectors_per_block;
  unsigned acc = 0;
  for (int64_t i = threadIdx.x; i < vectors_per_block; i += 4 * 512) {
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) v[u] = i + u * 512 < vectors_per_block ? load_no_l1(p + i + u * 512) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int u = 0; u < 4; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  if (acc == 0x12345678u) out[blockIdx.x] = acc;
}

// Pseudo-random values in [-1, 1) (a hash of the index), any float type.
template <class T>
__global__ void fill_kernel(T* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
    p[i] = T(float(h & 0xffff) / 32768.f - 1.f);
  }
}

// A device buffer of n elements of dtype t, filled; freed at exit (the process ends anyway).
void* filled(loraops::DType t, size_t n, uint32_t seed) {
  void* p = nullptr;
  CHECK(cudaMalloc(&p, n * size_t(loraops::dtype_size(t))));
  if (t == loraops::DType::BFloat16) fill_kernel<<<256, 256>>>(static_cast<__nv_bfloat16*>(p), n, seed);
  else fill_kernel<<<256, 256>>>(static_cast<float*>(p), n, seed);
  CHECK(cudaGetLastError());
  return p;
}

// One LoRA layer's tensors; `sets` copies of the weights to rotate over.
struct LoraSetup {
  loraops::DType t;
  int64_t m, k, n, r;
  double scale = 2.0;  // 0: no low-rank term (no shrink kernel)
  std::vector<loraops::Tensor> x, w, a, b;
  loraops::Tensor y;
  int next = 0;
  LoraSetup(loraops::DType t_, int64_t m_, int64_t k_, int64_t n_, int64_t r_, int sets)
      : t(t_), m(m_), k(k_), n(n_), r(r_) {
    const loraops::Device dev{loraops::DeviceType::CUDA, 0};
    for (int i = 0; i < sets; ++i) {
      const uint32_t s = 97u * uint32_t(i);
      x.push_back(loraops::Tensor::contiguous(filled(t, size_t(m * k), s + 1), t, {m, k}, dev));
      w.push_back(loraops::Tensor::contiguous(filled(t, size_t(n * k), s + 2), t, {n, k}, dev));
      a.push_back(loraops::Tensor::contiguous(filled(t, size_t(r * k), s + 3), t, {r, k}, dev));
      b.push_back(loraops::Tensor::contiguous(filled(t, size_t(n * r), s + 4), t, {n, r}, dev));
    }
    y = loraops::Tensor::contiguous(filled(t, size_t(m * n), 5), t, {m, n}, dev);
  }
  double weight_bytes() const { return double((n * k + r * k + n * r) * loraops::dtype_size(t)); }
  void lora(const loraops::Exec& ex) {
    const int i = next;
    next = (next + 1) % int(x.size());
    loraops::lora_forward(x[size_t(i)], w[size_t(i)], a[size_t(i)], b[size_t(i)], scale, nullptr, y, ex);
  }
  void base(const loraops::Exec& ex) {  // y = x @ W.T alone, through the vendor matmul
    const int i = next;
    next = (next + 1) % int(x.size());
    loraops::MatmulOptions opt;
    opt.trans_b = true;
    loraops::matmul(x[size_t(i)], w[size_t(i)], opt, y, ex);
  }
};

// A training step's LoRA layer, bf16: forward and backward at m tokens, K = N, with the base
// layer's own two GEMMs (x@W.T and g@W) beside it, the denominator of the fwd+bwd target.
struct TrainSetup {
  int64_t m, k, r;
  loraops::Tensor x, w, a, b, g, y, gx, ga, gb, xa;
  TrainSetup(int64_t m_, int64_t k_, int64_t r_) : m(m_), k(k_), r(r_) {
    const loraops::Device dev{loraops::DeviceType::CUDA, 0};
    const auto t = loraops::DType::BFloat16;
    auto make = [&](int64_t rows, int64_t cols, uint32_t seed) {
      return loraops::Tensor::contiguous(filled(t, size_t(rows * cols), seed), t, {rows, cols}, dev);
    };
    x = make(m, k, 11), w = make(k, k, 12), a = make(r, k, 13), b = make(k, r, 14);
    g = make(m, k, 15), y = make(m, k, 16), gx = make(m, k, 17), ga = make(r, k, 18);
    gb = make(k, r, 19), xa = make(m, r, 20);
  }
  void base(const loraops::Exec& ex) {  // y = x@W.T, grad_x = g@W
    loraops::MatmulOptions fwd;
    fwd.trans_b = true;
    loraops::matmul(x, w, fwd, y, ex);
    loraops::matmul(g, w, {}, gx, ex);
  }
  void lora(const loraops::Exec& ex, bool keep_xa) {
    loraops::lora_forward(x, w, a, b, 2.0, nullptr, y, ex, keep_xa ? &xa : nullptr);
    loraops::lora_backward(g, x, w, a, b, 2.0, gx, ga, gb, ex, keep_xa ? &xa : nullptr);
  }
  void forward(const loraops::Exec& ex) { loraops::lora_forward(x, w, a, b, 2.0, nullptr, y, ex, &xa); }
  void backward(const loraops::Exec& ex) { loraops::lora_backward(g, x, w, a, b, 2.0, gx, ga, gb, ex, &xa); }
};

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

// Median per-call µs of each of fns, timed in turns: `reps` rounds, each timing `calls`
// back-to-back calls of every fn in order (after 5 warm-up calls of each); graph: the calls
// captured once per fn and the graphs replayed (the device's time, without the host's).
std::vector<double> time_interleaved(const std::vector<std::function<void()>>& fns, cudaStream_t s, int calls, int reps,
                                     bool graph) {
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  for (const auto& fn : fns)
    for (int i = 0; i < 5; ++i) fn();
  std::vector<cudaGraphExec_t> execs;
  if (graph)
    for (const auto& fn : fns) {
      cudaGraph_t g;
      CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
      for (int i = 0; i < calls; ++i) fn();
      CHECK(cudaStreamEndCapture(s, &g));
      cudaGraphExec_t ge;
      CHECK(cudaGraphInstantiate(&ge, g, 0));
      CHECK(cudaGraphDestroy(g));
      CHECK(cudaGraphLaunch(ge, s));  // warm-up
      execs.push_back(ge);
    }
  std::vector<std::vector<double>> us(fns.size());
  for (int rep = 0; rep < reps; ++rep)
    for (size_t f = 0; f < fns.size(); ++f) {
      CHECK(cudaEventRecord(a, s));
      if (graph) CHECK(cudaGraphLaunch(execs[f], s));
      else
        for (int i = 0; i < calls; ++i) fns[f]();
      CHECK(cudaEventRecord(b, s));
      CHECK(cudaEventSynchronize(b));
      float ms = 0;
      CHECK(cudaEventElapsedTime(&ms, a, b));
      us[f].push_back(ms * 1e3 / calls);
    }
  for (cudaGraphExec_t ge : execs) cudaGraphExecDestroy(ge);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::vector<double> med;
  for (auto& v : us) {
    std::sort(v.begin(), v.end());
    med.push_back(v[v.size() / 2]);
  }
  return med;
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
    double bytes = 0;  // per call, for a GB/s column (0: none)
    int calls = 0;     // back-to-back calls per sample (0: the command line's); no graph replay
    double flops = 0;  // per call, for a TFLOP/s column instead of GB/s (0: none)
  };
  std::vector<Case> cases = {
      {"empty kernel (launch floor)", [&] { empty_kernel<<<1, 32, 0, s>>>(); }},
      {"softmax [4,16,1024] fp32", [&] { loraops::softmax(xv, -1, yv, ex); }},
      {"rms_norm [4,16,1024] fp32", [&] { loraops::rms_norm(xv, &wv, 1e-6, yv, ex); }},
      {"layer_norm [4,16,1024] fp32", [&] { loraops::layer_norm(xv, &wv, &bv, 1e-5, yv, ex); }},
      {"silu [4,16,1024] fp32",
       [&] { loraops::activation(xv, loraops::Activation::Silu, yv, ex); }},
  };
  // The same without programmatic dependent launch (the row ops and activations use it), and the
  // empty kernel with it: what the overlap of one launch with the previous kernel's tail buys.
  {
    const size_t n_seed = cases.size();
    for (size_t i = 1; i < n_seed; ++i) {
      auto fn = cases[i].fn;
      cases.push_back({cases[i].name + ", no PDL", [fn] {
                         loraops::cuda::set_dependent_launch(false);
                         fn();
                         loraops::cuda::set_dependent_launch(true);
                       }});
    }
    cases.push_back({"empty kernel, dependent launch", [&] {
                       loraops::cuda::launch_kernel(empty_dependent_kernel, dim3(1), 32, 0, s, true);
                     }});
  }
  // LoRA: the seed shapes (fp32, one token, r = 8; hot) and decode (bf16, rotating weights).
  const loraops::Exec custom{.impl = loraops::Impl::Custom, .stream = s};
  const loraops::Exec vendor{.impl = loraops::Impl::Vendor, .stream = s};
  std::vector<std::unique_ptr<LoraSetup>> setups;
  for (int64_t k : {512, 1024, 2048}) {
    setups.push_back(std::make_unique<LoraSetup>(loraops::DType::Float32, 1, k, k, 8, 1));
    LoraSetup* L = setups.back().get();
    const std::string shape = " fp32 x[1," + std::to_string(k) + "] r8";
    cases.push_back({"lora custom" + shape, [L, custom] { L->lora(custom); }, L->weight_bytes()});
    cases.push_back({"lora vendor" + shape, [L, vendor] { L->lora(vendor); }, L->weight_bytes()});
    // scale 0: no shrink and no low-rank term, the base pass alone
    setups.push_back(std::make_unique<LoraSetup>(loraops::DType::Float32, 1, k, k, 8, 1));
    setups.back()->scale = 0.0;
    LoraSetup* L0 = setups.back().get();
    cases.push_back({"lora custom scale0" + shape, [L0, custom] { L0->lora(custom); }, L0->weight_bytes()});
  }
  for (int64_t r : {4, 16, 64}) {  // the seed suite's ranks at K = 1024 (r = 8 above)
    setups.push_back(std::make_unique<LoraSetup>(loraops::DType::Float32, 1, 1024, 1024, r, 1));
    LoraSetup* L = setups.back().get();
    cases.push_back({"lora custom fp32 x[1,1024] r" + std::to_string(r), [L, custom] { L->lora(custom); },
                     L->weight_bytes()});
  }
  // The seed shapes with W cold, as `loraops bench` times them: enough weight sets rotating
  // that one sweep passes 100 MiB (2x the H200's L2; the bench's rotation of cases under it).
  const std::pair<int64_t, int64_t> cold_seeds[] = {{512, 8}, {1024, 4}, {1024, 8}, {1024, 16}, {1024, 64}, {2048, 8}};
  for (const auto& [k, r] : cold_seeds) {
    const int sets = int(100 * 1024 * 1024 / (k * k * 4)) + 1;
    setups.push_back(std::make_unique<LoraSetup>(loraops::DType::Float32, 1, k, k, r, sets));
    LoraSetup* L = setups.back().get();
    cases.push_back({"lora custom fp32 x[1," + std::to_string(k) + "] r" + std::to_string(r) + " rot",
                     [L, custom] { L->lora(custom); }, L->weight_bytes()});
  }
  for (int64_t m : {2, 4}) {  // a few tokens (the fma kernel's passes of 2 and 4)
    setups.push_back(std::make_unique<LoraSetup>(loraops::DType::Float32, m, 1024, 1024, 8, 1));
    LoraSetup* L = setups.back().get();
    cases.push_back({"lora custom fp32 x[" + std::to_string(m) + ",1024] r8", [L, custom] { L->lora(custom); },
                     L->weight_bytes()});
  }
  {  // the floor for one pass over 32 MiB, rotating over 4 buffers as the decode rows do
    auto bufs = std::make_shared<std::vector<void*>>();
    for (int i = 0; i < 4; ++i) bufs->push_back(filled(loraops::DType::BFloat16, size_t(4096) * 4096, 7u + i));
    unsigned* sink = static_cast<unsigned*>(filled(loraops::DType::Float32, 4096, 9));
    auto next = std::make_shared<int>(0);
    // A case reading the next of the 4 buffers each call: read(buffer) launches the kernel.
    auto rotating = [&](const std::string& name, std::function<void(const void*)> read) {
      cases.push_back({name, [=] {
                         const int i = *next;
                         *next = (i + 1) % 4;
                         read((*bufs)[size_t(i)]);
                       },
                       double(4096) * 4096 * 2});
    };
    const size_t vectors = size_t(4096) * 4096 * 2 / 16;
    auto u4 = [](const void* b) { return static_cast<const uint4*>(b); };
    auto u16 = [](const void* b) { return static_cast<const uint16_t*>(b); };
    rotating("read floor 32 MiB rot", [=](const void* b) { read_kernel<<<132 * 8, 256, 0, s>>>(u4(b), vectors, sink); });
    // the fp32 seed rows' weights (4 and 16 MiB at K = 1024 and 2048) read hot, one buffer: what
    // L2 gives them (x[1,2048] r8 takes 5.0 us, 3.9 at scale 0; 2026-12-01), with evict-first
    // loads (3.4 us at 16 MiB) and with L2's default policy
    for (size_t mib : {4, 16}) {
      cases.push_back({"read floor " + std::to_string(mib) + " MiB hot",
                       [=] { read_kernel<<<132 * 8, 256, 0, s>>>(u4((*bufs)[0]), mib * 1024 * 1024 / 16, sink); },
                       double(mib) * 1024 * 1024});
      cases.push_back({"read floor " + std::to_string(mib) + " MiB hot, L2 kept",
                       [=] { read_kernel<false><<<132 * 8, 256, 0, s>>>(u4((*bufs)[0]), mib * 1024 * 1024 / 16, sink); },
                       double(mib) * 1024 * 1024});
    }
    // the same bytes at the decode kernel's occupancy (2 blocks of 16 warps per SM), then in its
    // access pattern too: where the decode pass (11.2 µs at scale 0 then; 10.1-10.3 since the
    // whole-line loads) lost to the floor (9.0)
    rotating("read floor 32 MiB rot, 2x16 warps/SM",
             [=](const void* b) { read_kernel<<<2 * 132, 512, 0, s>>>(u4(b), vectors, sink); });
    rotating("read W decode pattern 32 MiB rot",
             [=](const void* b) { read_decode_pattern<2><<<4096 / 16, 512, 0, s>>>(u16(b), 4096, sink); });
    rotating("read W decode pattern, 1 chunk in flight",
             [=](const void* b) { read_decode_pattern<1><<<4096 / 16, 512, 0, s>>>(u16(b), 4096, sink); });
    rotating("read W decode pattern, L2::128B",
             [=](const void* b) { read_decode_pattern<2, 1><<<4096 / 16, 512, 0, s>>>(u16(b), 4096, sink); });
    rotating("read W decode pattern, L2::256B",
             [=](const void* b) { read_decode_pattern<2, 2><<<4096 / 16, 512, 0, s>>>(u16(b), 4096, sink); });
    rotating("read W decode pattern, 4 rows x 128 B",
             [=](const void* b) { read_decode_pattern<2, 0, true><<<4096 / 16, 512, 0, s>>>(u16(b), 4096, sink); });
    rotating("read W block-linear 32 MiB rot", [=](const void* b) {
      read_block_linear<<<4096 / 16, 512, 0, s>>>(u4(b), int64_t(16) * 4096 * 2 / 16, sink);
    });
    setups.push_back(std::make_unique<LoraSetup>(loraops::DType::BFloat16, 1, 4096, 4096, 16, 4));
    LoraSetup* L = setups.back().get();
    L->scale = 0.0;
    cases.push_back({"lora custom bf16 m1 scale0 rot", [L, custom] { L->lora(custom); },
                     L->weight_bytes()});
  }
  // (m, K = N, r): the issue's decode shapes, then r = 64, where the bench had custom at m = 16,
  // K = N = 8192 slower than vendor (69.5 against 56.5 µs eager, 2026-11-30)
  const int64_t decode_shapes[][3] = {{1, 4096, 16},  {8, 4096, 16},  {16, 4096, 16}, {32, 4096, 16},
                                      {64, 4096, 16}, {16, 4096, 64}, {1, 8192, 64},  {16, 8192, 64}};
  for (const auto& [m, h, r] : decode_shapes) {
    setups.push_back(std::make_unique<LoraSetup>(loraops::DType::BFloat16, m, h, h, r, 4));
    LoraSetup* L = setups.back().get();
    const std::string shape = " bf16 m" + std::to_string(m) + " " + std::to_string(h) + " r" + std::to_string(r) + " rot";
    cases.push_back({"lora custom" + shape, [L, custom] { L->lora(custom); }, L->weight_bytes()});
    cases.push_back({"lora vendor" + shape, [L, vendor] { L->lora(vendor); }, L->weight_bytes()});
    cases.push_back({"base GEMM" + shape, [L, vendor] { L->base(vendor); }, L->weight_bytes()});
  }

  // Prefill and training sizes, eager and in graph replay. Each group's members are timed in
  // turns (time_interleaved), so that the clock and power state the GPU drifts
  // through over a run (sustained GEMMs draw the card to its power limit) weighs on all alike;
  // ratios are to the group's first member, the base GEMM(s) alone.
  struct Member {
    std::string name;
    std::function<void()> fn;
    double flops = 0;
  };
  struct Group {
    std::string name;
    std::vector<Member> members;
  };
  std::vector<Group> groups;
  // r = 16 at the issue's three sizes; r = 64 where the lora bench had the fold 5-13% slower
  const std::pair<int64_t, int64_t> lora_sizes[] = {{512, 16}, {2048, 16}, {8192, 16}, {512, 64}, {2048, 64}, {8192, 64}};
  for (const auto& [m, r] : lora_sizes) {
    setups.push_back(std::make_unique<LoraSetup>(loraops::DType::BFloat16, m, 4096, 4096, r, 1));
    LoraSetup* L = setups.back().get();
    const double flops = 2.0 * double(m) * 4096 * 4096, lr = 2.0 * double(m) * double(r) * (4096 + 4096);
    // the folded GEMM alone (t and scale*B made once), as lora_forward_fold runs it
    auto t = std::make_shared<loraops::Tensor>(loraops::Tensor::contiguous(
        filled(loraops::DType::BFloat16, size_t(m * r), 31), loraops::DType::BFloat16, {m, r}, dev));
    auto fold_alone = [L, t, s](loraops::cuda::FoldTile tile) {
      return [L, t, s, tile] {
        loraops::cuda::FoldGemmArgs a;
        a.m = L->m, a.n = L->n, a.k1 = L->k, a.k2 = L->r;
        a.a = L->x[0].data, a.lda = L->k, a.a2 = t->data, a.lda2 = L->r;
        a.b = L->w[0].data, a.ldb = L->k, a.b2 = L->b[0].data, a.ldb2 = L->r;
        a.d = L->y.data;
        if (loraops::cuda::fold_gemm_workspace(loraops::DType::BFloat16, a) != 0)
          throw loraops::Error(loraops::ErrorKind::Runtime, "latency", "fold", "no workspace", "some");
        loraops::cuda::set_fold_tile(tile);
        loraops::cuda::fold_gemm(loraops::DType::BFloat16, a, nullptr, s);
        loraops::cuda::set_fold_tile(loraops::cuda::FoldTile::Auto);
      };
    };
    auto forced = [L, custom](loraops::cuda::FoldTile tile) {
      return [L, custom, tile] {
        loraops::cuda::set_fold_tile(tile);
        L->lora(custom);
        loraops::cuda::set_fold_tile(loraops::cuda::FoldTile::Auto);
      };
    };
    auto shrink_by = [L, custom](loraops::cuda::FoldShrinkBy how) {
      return [L, custom, how] {
        loraops::cuda::set_fold_shrink(how);
        L->lora(custom);
        loraops::cuda::set_fold_shrink(loraops::cuda::FoldShrinkBy::Auto);
      };
    };
    using loraops::cuda::FoldShrinkBy;
    using loraops::cuda::FoldTile;
    auto shrink = std::make_shared<loraops::Tensor>(*t);
    groups.push_back({"lora bf16 m" + std::to_string(m) + " 4096 r" + std::to_string(r),
                      {{"base GEMM x@W.T", [L, vendor] { L->base(vendor); }, flops},
                       {"lora custom", [L, custom] { L->lora(custom); }, flops + lr},
                       {"lora custom, narrow tile", forced(FoldTile::Narrow), flops + lr},
                       {"lora custom, pingpong tile", forced(FoldTile::Pingpong), flops + lr},
                       {"lora custom, our shrink", shrink_by(FoldShrinkBy::Ours), flops + lr},
                       {"lora custom, cuBLASLt shrink", shrink_by(FoldShrinkBy::CublasLt), flops + lr},
                       {"lora vendor", [L, vendor] { L->lora(vendor); }, flops + lr},
                       {"shrink x@A.T alone (cuBLASLt)",
                        [L, shrink, vendor] {
                          loraops::MatmulOptions o;
                          o.trans_b = true;
                          loraops::matmul(L->x[0], L->a[0], o, *shrink, vendor);
                        },
                        lr / 2},
                       {"shrink x@A.T alone (ours)",
                        [L, t, s] {
                          loraops::cuda::fold_shrink_product(loraops::DType::BFloat16,
                                                             {L->x[0].data, L->k, L->m, L->k, L->a[0].data, L->k, L->r, t->data}, s);
                        },
                        lr / 2},
                       // the two kernels of "lora custom" one after the other, outside lora_forward:
                       // what "lora custom" costs beyond them is the library's
                       {"shrink (ours) then fold GEMM alone",
                        [L, t, s, fold = fold_alone(FoldTile::Auto)] {
                          loraops::cuda::fold_shrink_product(loraops::DType::BFloat16,
                                                             {L->x[0].data, L->k, L->m, L->k, L->a[0].data, L->k, L->r, t->data}, s);
                          fold();
                        },
                        flops + lr},
                       {"fold GEMM alone, narrow", fold_alone(FoldTile::Narrow), flops + lr / 2},
                       {"fold GEMM alone, pingpong", fold_alone(FoldTile::Pingpong), flops + lr / 2}}});
  }
  // fn with lora_backward's side stream off: grad_a and grad_b after grad_x's GEMM, on one stream
  auto one_stream = [](std::function<void()> fn) -> std::function<void()> {
    return [fn] {
      struct Off {  // on again also when fn throws
        Off() { loraops::cuda::set_side_streams(false); }
        ~Off() { loraops::cuda::set_side_streams(true); }
      } off;
      fn();
    };
  };
  for (int64_t m : {8192, 2048, 512}) {  // Training: fwd+bwd of one layer against its base GEMMs (x@W.T and g@W).
    auto train = std::make_shared<TrainSetup>(m, 4096, 16);
    const double base = 2 * 2.0 * double(m) * 4096 * 4096;
    groups.push_back({"train bf16 m" + std::to_string(m) + " 4096 r16",
                      {{"train base x@W.T + g@W", [=] { train->base(vendor); }, base},
                       {"train lora custom, xa kept", [=] { train->lora(custom, true); }, base},
                       {"train lora custom, xa kept, no side stream",
                        one_stream([=] { train->lora(custom, true); }),
                        base},
                       {"train lora custom, recomputing xa", [=] { train->lora(custom, false); }, base},
                       {"train lora custom, xa kept, cuBLASLt forward shrink",
                        [=] {
                          loraops::cuda::set_fold_shrink(loraops::cuda::FoldShrinkBy::CublasLt);
                          train->lora(custom, true);
                          loraops::cuda::set_fold_shrink(loraops::cuda::FoldShrinkBy::Auto);
                        },
                        base},
                       {"train lora vendor, xa kept", [=] { train->lora(vendor, true); }, base},
                       {"train lora vendor, xa kept, no side stream",
                        one_stream([=] { train->lora(vendor, true); }),
                        base},
                       {"train lora vendor, recomputing xa", [=] { train->lora(vendor, false); }, base},
                       {"train fwd custom, xa kept", [=] { train->forward(custom); }, base / 2},
                       {"train bwd custom, xa given", [=] { train->backward(custom); }, base / 2},
                       {"train bwd custom, xa given, shrink and cuBLASLt grad_b",
                        [=] {
                          loraops::cuda::set_fold_g_pass(false);
                          train->backward(custom);
                          loraops::cuda::set_fold_g_pass(true);
                        },
                        base / 2},
                       {"train bwd custom, xa given, no side stream",
                        one_stream([=] { train->backward(custom); }),
                        base / 2},
                       {"train bwd vendor, xa given", [=] { train->backward(vendor); }, base / 2}}});
  }

  {  // one training step (m = 8192) alone, for NCU_CASE: each kernel's time in place
    auto train = std::make_shared<TrainSetup>(8192, 4096, 16);
    cases.push_back({"train step custom bf16 m8192 (one step)", [=] { train->lora(custom, true); }, 0, 3});
    cases.push_back({"train step custom bf16 m8192, no side stream (one step)",
                     one_stream([=] { train->lora(custom, true); }),
                     0, 3});
  }

  // Attention (custom; bf16): the issue's shapes. FLOPs as FlashAttention counts them: 4 S^2 D
  // per head, halved under the causal mask; decode: the K/V bytes.
  struct Attn {
    loraops::Tensor q, k, v, o;
  };
  // bf16 q, k, v (filled) and out on the GPU; seed tells the cases' data apart
  auto attn_tensors = [&](int64_t b, int64_t hq, int64_t hkv, int64_t sq, int64_t sk, int64_t d, uint32_t seed) {
    const loraops::Device dev{loraops::DeviceType::CUDA, 0};
    const auto t = loraops::DType::BFloat16;
    auto make = [&](int64_t h, int64_t s, uint32_t i) {
      return loraops::Tensor::contiguous(filled(t, size_t(b * h * s * d), seed + i), t, {b, h, s, d}, dev);
    };
    return Attn{make(hq, sq, 0), make(hkv, sk, 1), make(hkv, sk, 2), make(hq, sq, 3)};
  };
  auto attn = [&](int64_t b, int64_t hq, int64_t hkv, int64_t sq, int64_t sk, int64_t d, bool causal,
                  const loraops::Exec& ex) {
    auto a = std::make_shared<Attn>(attn_tensors(b, hq, hkv, sq, sk, d, 31));
    return [a, causal, ex] { loraops::attention(a->q, a->k, a->v, causal, std::nullopt, a->o, ex); };
  };
  // Kernels called directly: what the front end would hand them for these tensors.
  auto params_for = [&](const Attn& a, bool causal) {
    return std::make_shared<loraops::detail::AttentionParams>(
        loraops::detail::attention_params(a.q, a.k, a.v, causal, std::nullopt, a.o));
  };
  // Each flash kernel (mma.sync with 64- and 128-row blocks, wgmma), whatever custom picks.
  using loraops::cuda::FlashKernel;
  auto flash = [&](int64_t b, int64_t h, int64_t sl, int64_t d, bool causal, FlashKernel kernel, int64_t group = 0) {
    auto p = params_for(attn_tensors(b, h, h, sl, sl, d, 41), causal);
    void* const stream = custom.stream;
    return [p, stream, kernel, group] { loraops::cuda::attention_flash_with(*p, stream, kernel, group); };
  };
  for (auto [kernel, name] : {std::pair{FlashKernel::Mma64, "m1"}, std::pair{FlashKernel::Mma128, "m2"},
                              std::pair{FlashKernel::Wgmma, "wgmma"}}) {
    const std::string tag = std::string("attn flash ") + name + " ";
    cases.push_back({tag + "B4 H32 S4096 D128 causal", flash(4, 32, 4096, 128, true, kernel), 0, 5,
                     4.0 * 4 * 32 * 4096.0 * 4096 * 128 / 2});
    cases.push_back({tag + "B4 H32 S4096 D128", flash(4, 32, 4096, 128, false, kernel), 0, 5,
                     4.0 * 4 * 32 * 4096.0 * 4096 * 128});
    cases.push_back({tag + "B16 H32 S1024 D64 causal", flash(16, 32, 1024, 64, true, kernel), 0, 10,
                     4.0 * 16 * 32 * 1024.0 * 1024 * 64 / 2});
  }
  // Causal blocks heaviest first across groups of (head, batch) pairs (1: per pair, the order
  // before; the default is the kernel's choice, above), on the kernel custom picks for the shape.
  for (int64_t group : {1, 4, 8, 16, 32, 128}) {
    const std::string tag = "attn flash auto group " + std::to_string(group) + " ";
    cases.push_back({tag + "B4 H32 S4096 D128 causal", flash(4, 32, 4096, 128, true, FlashKernel::Auto, group), 0, 5,
                     4.0 * 4 * 32 * 4096.0 * 4096 * 128 / 2});
    cases.push_back({tag + "B16 H32 S1024 D64 causal", flash(16, 32, 1024, 64, true, FlashKernel::Auto, group), 0, 10,
                     4.0 * 16 * 32 * 1024.0 * 1024 * 64 / 2});
  }

  // Decode (Sq = 1, 32/8 heads, D = 128): the SIMT kernel against the tensor-core one that custom
  // picks for bf16, and the tensor-core kernel's split length (tiles of 64 keys per block; 0: its
  // own choice), at 4K keys and at batch 8 / 32K keys; "kernel merge": the splits merged by the
  // combine kernel, not by the grid's last blocks (Auto's way up to 16 splits).
  using loraops::cuda::DecodeMerge;
  auto decode = [&](int64_t b, int64_t sk, loraops::cuda::DecodeKernel kernel, int tps,
                    DecodeMerge merge = DecodeMerge::Auto) {
    auto p = params_for(attn_tensors(b, 32, 8, 1, sk, 128, 51), false);
    void* const stream = custom.stream;
    return [p, stream, kernel, tps, merge] { loraops::cuda::attention_decode_with(*p, stream, kernel, tps, merge); };
  };
  {
    using loraops::cuda::DecodeKernel;
    const double kv4k = 2.0 * 8 * 4096 * 128 * 2;
    cases.push_back({"attn decode simt Hq32 Hkv8 Sk4096 D128", decode(1, 4096, DecodeKernel::Simt, 0), kv4k, 0});
    for (int tps : {1, 2, 4, 8})
      cases.push_back({"attn decode tps" + std::to_string(tps) + " Hq32 Hkv8 Sk4096 D128",
                       decode(1, 4096, DecodeKernel::TensorCore, tps), kv4k, 0});
    for (int tps : {4, 8})  // 16 and 8 splits: Auto merges them in the grid
      cases.push_back({"attn decode kernel merge tps" + std::to_string(tps) + " Hq32 Hkv8 Sk4096 D128",
                       decode(1, 4096, DecodeKernel::TensorCore, tps, DecodeMerge::Kernel), kv4k, 0});
    for (int tps : {0, 4, 16})
      cases.push_back({"attn decode tps" + std::to_string(tps) + " B8 Hq32 Hkv8 Sk4096 D128",
                       decode(8, 4096, DecodeKernel::TensorCore, tps), 8 * kv4k, 0});
    cases.push_back({"attn decode kernel merge tps0 B8 Hq32 Hkv8 Sk4096 D128",
                     decode(8, 4096, DecodeKernel::TensorCore, 0, DecodeMerge::Kernel), 8 * kv4k, 0});
    for (int tps : {0, 4, 64})
      cases.push_back({"attn decode tps" + std::to_string(tps) + " Hq32 Hkv8 Sk32768 D128",
                       decode(1, 32768, DecodeKernel::TensorCore, tps), 8 * kv4k, 0});
  }

  {  // row ops at the rowwise suite's shapes (bf16 16384x4096: 256 MiB moved per call; bf16
     // 65536x1024 and 4096x32768; fp32 16384x4096), beside a copy
    const int64_t elems = int64_t(16384) * 4096;
    const int64_t shp[2] = {16384, 4096};
    // Twice the elements: 4096x32768 below views them all (until 2026-11-30 it ran over the end
    // of these buffers, x's second half being y's first and y's running past its allocation).
    void* ax = filled(loraops::DType::BFloat16, 2 * size_t(elems), 11);
    void* ay = filled(loraops::DType::BFloat16, 2 * size_t(elems), 12);
    auto tx = loraops::Tensor::contiguous(ax, loraops::DType::BFloat16, 2, shp, dev);
    auto ty = loraops::Tensor::contiguous(ay, loraops::DType::BFloat16, 2, shp, dev);
    const double moved = 2.0 * double(elems) * 2;
    cases.push_back({"act silu bf16 16384x4096", [=] { loraops::activation(tx, loraops::Activation::Silu, ty, custom); }, moved, 200});
    cases.push_back({"act gelu_tanh bf16 16384x4096", [=] { loraops::activation(tx, loraops::Activation::GeluTanh, ty, custom); }, moved, 200});
    cases.push_back({"act copy (cudaMemcpyAsync)", [=] { CHECK(cudaMemcpyAsync(ay, ax, size_t(elems) * 2, cudaMemcpyDeviceToDevice, s)); }, moved, 200});
    cases.push_back({"softmax bf16 16384x4096", [=] { loraops::softmax(tx, -1, ty, custom); }, moved, 200});
    cases.push_back({"rms_norm bf16 16384x4096 (no weight)", [=] { loraops::rms_norm(tx, nullptr, 1e-6, ty, custom); }, moved, 200});
    cases.push_back({"layer_norm bf16 16384x4096 (no affine)", [=] { loraops::layer_norm(tx, nullptr, nullptr, 1e-5, ty, custom); }, moved, 200});
    const int64_t shp2[2] = {65536, 1024};
    auto tx2 = loraops::Tensor::contiguous(ax, loraops::DType::BFloat16, 2, shp2, dev);
    auto ty2 = loraops::Tensor::contiguous(ay, loraops::DType::BFloat16, 2, shp2, dev);
    cases.push_back({"softmax bf16 65536x1024", [=] { loraops::softmax(tx2, -1, ty2, custom); }, moved, 200});
    cases.push_back({"rms_norm bf16 65536x1024 (no weight)", [=] { loraops::rms_norm(tx2, nullptr, 1e-6, ty2, custom); }, moved, 200});
    // With weight and bias, as in the rowwise bench (its layer_norm 4096x32768 too: 8 vectors a
    // thread).
    const int64_t shp3[2] = {4096, 32768};
    auto tx3 = loraops::Tensor::contiguous(ax, loraops::DType::BFloat16, 2, shp3, dev);
    auto ty3 = loraops::Tensor::contiguous(ay, loraops::DType::BFloat16, 2, shp3, dev);
    void* wb = filled(loraops::DType::BFloat16, 2 * 32768, 13);  // weight, then bias
    auto affine = [=](int64_t cols, int which) {
      const int64_t n[1] = {cols};
      return loraops::Tensor::contiguous(static_cast<char*>(wb) + which * 32768 * 2, loraops::DType::BFloat16, 1, n, dev);
    };
    for (const auto& [shape, x, y, cols] : {std::tuple{std::string("16384x4096"), tx, ty, int64_t(4096)},
                                            std::tuple{std::string("65536x1024"), tx2, ty2, int64_t(1024)},
                                            std::tuple{std::string("4096x32768"), tx3, ty3, int64_t(32768)}}) {
      const loraops::Tensor w = affine(cols, 0), b = affine(cols, 1);
      const double bytes = 2.0 * double(x.numel()) * 2;
      cases.push_back({"affine rms_norm bf16 " + shape, [=] { loraops::rms_norm(x, &w, 1e-6, y, custom); }, bytes, 200});
      cases.push_back({"affine layer_norm bf16 " + shape, [=] { loraops::layer_norm(x, &w, &b, 1e-5, y, custom); }, bytes, 200});
    }
    // float32 16384x4096 (the rowwise suite's fp32 shape): layer_norm's fp32 rows are kept
    // unshifted and normalised against a two-float mean
    void* fx = filled(loraops::DType::Float32, size_t(elems), 14);
    void* fy = filled(loraops::DType::Float32, size_t(elems), 15);
    void* fwb = filled(loraops::DType::Float32, 2 * 4096, 16);
    const int64_t nf[1] = {4096};
    auto tfx = loraops::Tensor::contiguous(fx, loraops::DType::Float32, 2, shp, dev);
    auto tfy = loraops::Tensor::contiguous(fy, loraops::DType::Float32, 2, shp, dev);
    auto fw = loraops::Tensor::contiguous(fwb, loraops::DType::Float32, 1, nf, dev);
    auto fb = loraops::Tensor::contiguous(static_cast<char*>(fwb) + 4096 * 4, loraops::DType::Float32, 1, nf, dev);
    cases.push_back({"affine layer_norm fp32 16384x4096", [=] { loraops::layer_norm(tfx, &fw, &fb, 1e-5, tfy, custom); }, 2 * moved, 200});
    cases.push_back({"affine rms_norm fp32 16384x4096", [=] { loraops::rms_norm(tfx, &fw, 1e-6, tfy, custom); }, 2 * moved, 200});
  }

  // The same shapes through cuDNN's SDPA (vendor), where the build has it; a refusal prints its reason.
  for (const auto& [tag, ex] : {std::pair{std::string("attn "), custom}, std::pair{std::string("attn cudnn "), vendor}}) {
    cases.push_back({tag + "B4 H32 S4096 D128 causal", attn(4, 32, 32, 4096, 4096, 128, true, ex), 0, 5,
                     4.0 * 4 * 32 * 4096.0 * 4096 * 128 / 2});
    cases.push_back({tag + "B16 H32 S1024 D64 causal", attn(16, 32, 32, 1024, 1024, 64, true, ex), 0, 10,
                     4.0 * 16 * 32 * 1024.0 * 1024 * 64 / 2});
    cases.push_back({tag + "B4 H32 S4096 D128", attn(4, 32, 32, 4096, 4096, 128, false, ex), 0, 5,
                     4.0 * 4 * 32 * 4096.0 * 4096 * 128});
    cases.push_back({tag + "decode Hq32 Hkv8 Sk4096 D128", attn(1, 32, 8, 1, 4096, 128, false, ex),
                     2.0 * 8 * 4096 * 128 * 2, 0});
  }

  std::printf("%-34s %14s %14s %12s %12s\n", "case (custom impl unless named)", "eager us/call",
              "graph us/call", "eager GB/s", "graph GB/s");
  // The filter: alternatives separated by '|'; a case runs when its name contains one of them.
  std::vector<std::string> filters;
  for (std::string f = argc > 2 ? argv[2] : "";;) {
    const size_t bar = f.find('|');
    filters.push_back(f.substr(0, bar));
    if (bar == std::string::npos) break;
    f.erase(0, bar + 1);
  }
  for (auto& c : cases) {
    if (std::none_of(filters.begin(), filters.end(),
                     [&](const std::string& f) { return c.name.find(f) != std::string::npos; }))
      continue;
    double eager = -1, graph = -1;
    try {
      eager = time_eager(c.fn, s, c.calls ? c.calls : calls);
      if (!c.calls) graph = time_graph(c.fn, s, calls);
    } catch (const loraops::Error& e) {
      std::printf("%-34s %s\n", c.name.c_str(), e.what());
      continue;
    }
    if (c.flops > 0)
      std::printf("%-34s %14.2f %14s %9.1f TF/s\n", c.name.c_str(), eager, "-", c.flops / eager * 1e-6);
    else if (c.bytes > 0 && graph < 0)
      std::printf("%-34s %14.2f %14s %12.0f\n", c.name.c_str(), eager, "-", c.bytes / eager * 1e-3);
    else if (c.bytes > 0)
      std::printf("%-34s %14.2f %14.2f %12.0f %12.0f\n", c.name.c_str(), eager, graph,
                  c.bytes / eager * 1e-3, c.bytes / graph * 1e-3);
    else if (graph >= 0)
      std::printf("%-34s %14.2f %14.2f\n", c.name.c_str(), eager, graph);
    else
      std::printf("%-34s %14.2f %14s\n", c.name.c_str(), eager, "-");
  }
  // The groups: a group runs when its name or a member's matches the filter.
  for (const Group& g : groups) {
    const bool any = std::any_of(filters.begin(), filters.end(), [&](const std::string& f) {
      return g.name.find(f) != std::string::npos ||
             std::any_of(g.members.begin(), g.members.end(), [&](const Member& mb) { return mb.name.find(f) != std::string::npos; });
    });
    if (!any) continue;
    std::vector<std::function<void()>> fns;
    for (const Member& mb : g.members) fns.push_back(mb.fn);
    std::vector<double> us, gus;
    try {
      us = time_interleaved(fns, s, 20, 9, false);
      gus = time_interleaved(fns, s, 20, 9, true);
    } catch (const loraops::Error& e) {
      std::printf("%s: %s\n", g.name.c_str(), e.what());
      continue;
    }
    std::printf("%s (interleaved; eager, then graph replay; ratios to the first row)\n", g.name.c_str());
    for (size_t i = 0; i < us.size(); ++i)
      std::printf("  %-40s %9.2f us %7.1f TF/s %6.3fx | %9.2f us %7.1f TF/s %6.3fx\n", g.members[i].name.c_str(),
                  us[i], g.members[i].flops / us[i] * 1e-6, us[i] / us[0], gus[i],
                  g.members[i].flops / gus[i] * 1e-6, gus[i] / gus[0]);
  }
  cudaFree(x);
  cudaFree(y);
  cudaFree(w);
  cudaFree(b);
  cudaStreamDestroy(s);
  return 0;
}
