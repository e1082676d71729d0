// GPU test helpers: skip without a device, device buffers that mirror a HostTensor.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <stdexcept>
#include <vector>

#include "test_util.hpp"

namespace loraops::test {

inline bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define LORAOPS_REQUIRE_GPU() \
  if (!::loraops::test::have_gpu()) GTEST_SKIP() << "no CUDA device"

#define CUDA_OK(call) ASSERT_EQ((call), cudaSuccess) << #call

// A device copy of a HostTensor (same dtype and shape), freed on scope exit.
struct DeviceTensor {
  HostTensor* host = nullptr;
  void* ptr = nullptr;
  size_t bytes = 0;
  explicit DeviceTensor(HostTensor& h) : host(&h), bytes(h.bytes.size()) {
    EXPECT_EQ(cudaMalloc(&ptr, bytes), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(ptr, h.bytes.data(), bytes, cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceTensor() { cudaFree(ptr); }
  DeviceTensor(const DeviceTensor&) = delete;
  DeviceTensor& operator=(const DeviceTensor&) = delete;
  // 0xFF bytes: NaN in every float type, so an unwritten element fails the comparison.
  void poison() { EXPECT_EQ(cudaMemset(ptr, 0xFF, bytes), cudaSuccess); }
  Tensor view() {
    Tensor t = host->view();
    t.data = ptr;
    t.device = Device{DeviceType::CUDA, 0};
    return t;
  }
  void to_host() {
    EXPECT_EQ(cudaMemcpy(host->bytes.data(), ptr, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  }
};

}  // namespace loraops::test

// ---- linalg operands on the device (matmul, LoRA) ---------------------------------------------

namespace loraops::test {

// An operand's storage copied to the device, its view moved along (same offset, same strides).
// Takes linalg_test_util.hpp's Operand (anything with .storage and .view).
struct DeviceOperand {
  DeviceTensor mem;
  Tensor view;
  DeviceOperand(HostTensor& storage, const Tensor& host_view) : mem(storage), view(host_view) {
    // the view must point into this storage (a copy of the storage would give a wild pointer)
    const auto* at = static_cast<const uint8_t*>(host_view.data);
    if (at < storage.bytes.data() || at > storage.bytes.data() + storage.bytes.size())
      throw std::logic_error("DeviceOperand: the host view does not point into the given storage");
    view.data = static_cast<uint8_t*>(mem.ptr) +
                (static_cast<const uint8_t*>(host_view.data) - storage.bytes.data());
    view.device = Device{DeviceType::CUDA, 0};
    // The upload from pageable memory may still be in flight: order it before work on any stream.
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  }
  template <class O>
  explicit DeviceOperand(O& o) : DeviceOperand(o.storage, o.view) {}
  // Copies the host storage to the same device memory again (new contents, same pointers: for
  // replaying a captured graph on new data).
  void upload() {
    EXPECT_EQ(cudaMemcpy(mem.ptr, mem.host->bytes.data(), mem.bytes, cudaMemcpyHostToDevice),
              cudaSuccess);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  }
};

// A device output, 0xFF (NaN in every dtype) over its elements before each call; the bytes past
// them stay zero, so tail_intact() (linalg_test_util.hpp) catches a write past the end.
struct DeviceOut {
  HostTensor host;
  DeviceTensor mem;
  DeviceOut(DType t, std::vector<int64_t> shape) : host(t, std::move(shape)), mem(host) { poison(); }
  void poison() {
    EXPECT_EQ(cudaMemset(mem.ptr, 0xFF, size_t(host.numel() * dtype_size(host.dtype))), cudaSuccess);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  }
  Tensor view() { return mem.view(); }
  const HostTensor& fetch() {
    mem.to_host();
    return host;
  }
};

// A captured graph and its executable, destroyed on scope exit.
struct GraphRun {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  GraphRun() = default;
  GraphRun(const GraphRun&) = delete;
  GraphRun& operator=(const GraphRun&) = delete;
  ~GraphRun() {
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
  }
};

// The nodes of `graph` of the given type (failures reported through gtest).
inline int count_nodes(cudaGraph_t graph, cudaGraphNodeType type) {
  size_t n = 0;
  EXPECT_EQ(cudaGraphGetNodes(graph, nullptr, &n), cudaSuccess);
  std::vector<cudaGraphNode_t> nodes(n);
  EXPECT_EQ(cudaGraphGetNodes(graph, nodes.data(), &n), cudaSuccess);
  int count = 0;
  for (cudaGraphNode_t node : nodes) {
    cudaGraphNodeType t;
    EXPECT_EQ(cudaGraphNodeGetType(node, &t), cudaSuccess);
    count += t == type;
  }
  return count;
}

// The edges of `graph` that are programmatic (a kernel launched as a programmatic dependent of
// the kernel before it, captured). CUDA 13's cudaGraphGetEdges (with edge data; 12.x named it
// cudaGraphGetEdges_v2): the project builds with nvcc 13.
inline int count_programmatic_edges(cudaGraph_t graph) {
  size_t n = 0;
  EXPECT_EQ(cudaGraphGetEdges(graph, nullptr, nullptr, nullptr, &n), cudaSuccess);
  std::vector<cudaGraphNode_t> from(n), to(n);
  std::vector<cudaGraphEdgeData> data(n);
  EXPECT_EQ(cudaGraphGetEdges(graph, from.data(), to.data(), data.data(), &n), cudaSuccess);
  int count = 0;
  for (size_t i = 0; i < n; ++i) count += data[i].type == cudaGraphDependencyTypeProgrammatic;
  return count;
}

}  // namespace loraops::test

// ---- per-element tolerances (the LoRA tests) ----------------------------------------------------

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace loraops::test {

// The unit roundoff of a dtype: the largest relative error of one rounding to it (2^-24 fp32,
// 2^-11 fp16, 2^-8 bf16; subnormals aside).
inline double unit_roundoff_of(DType t) {
  return t == DType::Float32 ? std::ldexp(1.0, -24) : eps_of(t) / 2;
}

// Half the smallest subnormal of a dtype: the largest absolute error of one rounding to it of a
// value below its normal range (2^-25 fp16, 2^-134 bf16, 2^-150 fp32).
inline double half_subnormal_of(DType t) {
  return std::ldexp(1.0, t == DType::Float16 ? -25 : t == DType::BFloat16 ? -134 : -150);
}

// v rounded to the dtype (as a store to it does) and read back.
inline float round_to_dtype(DType t, float v) {
  uint8_t buf[4];
  store_from_float(buf, t, 0, v);
  return load_as_float(buf, t, 0);
}

// A view [..., C] read through its strides into a dense row-major fp64 array [rows, C], the
// leading dims flattened in order (rows = 1 for a 1-D view).
inline std::vector<double> dense_rows(const Tensor& v) {
  const int64_t c = v.ndim > 0 ? v.size(-1) : 1;
  int64_t rows = 1;
  for (int d = 0; d < v.ndim - 1; ++d) rows *= v.shape[size_t(d)];
  std::vector<double> out(size_t(rows * c));
  for (int64_t i = 0; i < rows; ++i) {
    int64_t off = 0, rest = i;
    for (int d = v.ndim - 2; d >= 0; --d) {
      off += (rest % v.shape[size_t(d)]) * v.strides[size_t(d)];
      rest /= v.shape[size_t(d)];
    }
    for (int64_t l = 0; l < c; ++l)
      out[size_t(i * c + l)] = load_as_float(v.data, v.dtype, off + l * v.stride(-1));
  }
  return out;
}

// Seeds rng() from a case's name and dtype, so a case's data does not depend on which tests ran
// before it (a failure reproduces under --gtest_filter and compute-sanitizer alike).
inline void seed_rng_for(const char* name, DType t) {
  uint32_t h = 2166136261u;  // FNV-1a
  for (const char* p = name; *p; ++p) h = (h ^ uint8_t(*p)) * 16777619u;
  rng().seed(h ^ (uint32_t(t) + 1) * 0x9E3779B9u);
}

// got within tol of ref elementwise (tol per element, row-major, `cols` per row for the report);
// NaN must match NaN, inf the same inf, and a NaN tol (a test bug) fails. Also: nothing written
// past the end of the output (a HostTensor's spare bytes are zero when allocated).
inline ::testing::AssertionResult within_tol(const HostTensor& got, const HostTensor& ref,
                                             const std::vector<double>& tol, int64_t cols) {
  const size_t used = size_t(got.numel() * dtype_size(got.dtype));
  if (!std::all_of(got.bytes.begin() + ptrdiff_t(used), got.bytes.end(),
                   [](uint8_t b) { return b == 0; }))
    return ::testing::AssertionFailure() << "wrote past the end of the output";
  if (got.numel() != ref.numel() || size_t(ref.numel()) != tol.size())
    return ::testing::AssertionFailure() << "size " << got.numel() << " vs " << ref.numel();
  const int64_t w = std::max<int64_t>(cols, 1);
  int64_t bad = 0;
  double worst = 0;
  std::string msg;
  for (int64_t e = 0; e < ref.numel(); ++e) {
    const double g = got.get(e), r = ref.get(e), tl = tol[size_t(e)];
    bool ok;
    if (std::isnan(r)) ok = std::isnan(g);
    else if (std::isinf(r)) ok = g == r;
    else ok = std::isfinite(g) && std::fabs(g - r) <= tl;
    if (!ok) {
      if (std::isfinite(g) && std::isfinite(r)) worst = std::max(worst, std::fabs(g - r) / tl);
      if (bad++ < 5) {
        char buf[160];
        std::snprintf(buf, sizeof buf, " [row %lld col %lld] got %.6g want %.6g tol %.3g;",
                      (long long)(e / w), (long long)(e % w), g, r, tl);
        msg += buf;
      }
    }
  }
  if (bad)
    return ::testing::AssertionFailure() << bad << " of " << ref.numel()
                                         << " elements off (worst finite error " << worst
                                         << " x tol):" << msg;
  return ::testing::AssertionSuccess();
}

}  // namespace loraops::test
