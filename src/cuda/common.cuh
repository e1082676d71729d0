// Shared by the CUDA backend: error checks that become loraops::Error, the device guard, and the
// mapping from loraops::DType to the CUDA element types.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "loraops/error.hpp"
#include "loraops/dtype.hpp"

namespace loraops::cuda {

[[noreturn]] inline void throw_cuda(cudaError_t err, const char* what) {
  throw Error(ErrorKind::Runtime, "cuda", what, "cudaSuccess",
              std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err));
}

#define LORAOPS_CUDA_CHECK(call)                                   \
  do {                                                             \
    const cudaError_t loraops_err_ = (call);                       \
    if (loraops_err_ != cudaSuccess) ::loraops::cuda::throw_cuda(loraops_err_, #call); \
  } while (0)

// After a launch: a bad configuration shows up here, not as a silent no-op.
#define LORAOPS_CUDA_CHECK_LAUNCH(name) LORAOPS_CUDA_CHECK(cudaGetLastError())

// Makes `index` the current device for the scope of a launch, and restores the caller's.
class DeviceGuard {
 public:
  explicit DeviceGuard(int index) {
    LORAOPS_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != index) LORAOPS_CUDA_CHECK(cudaSetDevice(index));
  }
  ~DeviceGuard() {
    int now = previous_;
    cudaGetDevice(&now);
    if (now != previous_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

// x rounded up to a multiple of q (sizes, pitches and offsets of scratch matrices).
constexpr int64_t round_up(int64_t x, int64_t q) { return (x + q - 1) / q * q; }

// A device attribute the launchers size work by, read once per device (0 past device 63, or
// where the device reports none). Racing first calls store the same value.
template <cudaDeviceAttr kAttr>
inline int device_attribute(int device) {
  static std::atomic<int> cached[64] = {};
  if (device < 0 || device >= 64) return 0;
  int v = cached[device].load(std::memory_order_relaxed);
  if (v == 0) {
    LORAOPS_CUDA_CHECK(cudaDeviceGetAttribute(&v, kAttr, device));
    cached[device].store(v, std::memory_order_relaxed);
  }
  return v;
}

// Multiprocessor count of a device (grid sizes are multiples of it).
inline int sm_count(int device) {
  const int n = device_attribute<cudaDevAttrMultiProcessorCount>(device);
  return n > 0 ? n : 132;
}

// Occupancy answers cached per (kernel, block, cluster, device, smem): the first call asks the
// runtime (query()), later ones take a lock and a lookup. The queries enqueue no work, so they
// are safe under stream capture.
template <class Query>
int cached_occupancy(const void* kernel, int block, int cluster, int device, size_t smem, Query query) {
  struct Entry {
    const void* kernel;
    int block, cluster, device;
    size_t smem;
    int n;
  };
  static std::mutex mu;
  static std::vector<Entry> cache;
  {
    std::lock_guard<std::mutex> lock(mu);
    for (const Entry& e : cache)
      if (e.kernel == kernel && e.block == block && e.cluster == cluster && e.device == device && e.smem == smem)
        return e.n;
  }
  const int n = query();
  std::lock_guard<std::mutex> lock(mu);
  cache.push_back({kernel, block, cluster, device, smem, n});
  return n;
}

// Blocks that fit on the device at once (occupancy x SMs) for `block` threads and `smem` bytes
// of dynamic shared memory (the kernel's attribute allowing it set first).
inline int resident_blocks(const void* kernel, int block, int device, size_t smem = 0) {
  return cached_occupancy(kernel, block, 0, device, smem, [&] {
    int per_sm = 0;
    LORAOPS_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, block, smem));
    return (per_sm > 0 ? per_sm : 1) * sm_count(device);
  });
}

// Clusters of `cluster` blocks (of `block` threads, `smem` bytes of dynamic shared memory, the
// kernel's attribute allowing it set first) the device holds at once; 0 where it runs none of
// that size. Past the portable 8, the kernel is first allowed non-portable sizes.
inline int resident_clusters(const void* kernel, int block, int cluster, int device, size_t smem) {
  return cached_occupancy(kernel, block, cluster, device, smem, [&] {
    int n = 0;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(unsigned(cluster));
    cfg.blockDim = dim3(unsigned(block));
    cfg.dynamicSmemBytes = smem;
    cudaLaunchAttribute attr = {};
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim = {unsigned(cluster), 1, 1};
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    if ((cluster > 8 &&
         cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess) ||
        cudaOccupancyMaxActiveClusters(&n, kernel, &cfg) != cudaSuccess) {
      (void)cudaGetLastError();  // a refusal only means none of that size
      n = 0;
    }
    return n;
  });
}

// Whether a pointer allows 16-byte vector loads (cp.async, uint4) from it.
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
// Rows starting at p, row_stride elements of es bytes apart, that all start 16-byte aligned.
inline bool rows16(const void* p, int64_t row_stride, int64_t es) {
  return aligned16(p) && (row_stride * es) % 16 == 0;
}

// Calls f(T{}) with T the CUDA element type of `t`: the one place a runtime dtype becomes a
// compile-time one.
template <class F>
decltype(auto) dispatch_dtype(DType t, F&& f) {
  switch (t) {
    case DType::Float16: return f(__half{});
    case DType::BFloat16: return f(__nv_bfloat16{});
    case DType::Float32: break;
  }
  return f(float{});
}

template <class T> __device__ __forceinline__ float to_float(T v);
template <> __device__ __forceinline__ float to_float(float v) { return v; }
template <> __device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float(float v) { return v; }
template <> __device__ __forceinline__ __half from_float(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float(float v) { return __float2bfloat16_rn(v); }

// Programmatic dependent launch (Hopper). A kernel launched as a programmatic dependent of the
// work before it on the stream (launch_kernel with pdl) may start while that work still runs; it
// must call grid_dependency_wait before it reads what that work writes, and before it writes
// anything that work reads or writes (all of that work is complete and visible after the wait).
// allow_dependents lets the next kernel start before this one ends.
__device__ __forceinline__ void grid_dependency_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void allow_dependents() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
// At the start of a kernel launched as a dependent that touches memory only after the wait: the
// next kernel may start as soon as every block is past the wait. Allowing it only after the wait
// keeps one guarantee for a dependent that reads early (as lora_decode reads x and W before its
// own wait behind lora_shrink): every kernel before this one has completed. A LoRA decode kernel
// itself allows its dependents before it waits for the shrink: what follows it must wait before
// touching memory (every kernel of this library does, but the decode kernel behind its shrink;
// an L2 prefetch, which reads nothing into the SM, may come first: lora_decode.cu's WPrefetch).
__device__ __forceinline__ void wait_then_allow_dependents() {
  grid_dependency_wait();
  allow_dependents();
}

// Whether the row ops and activations launch as programmatic dependents (on by default). One
// switch for the whole process, for loraops_latency only, which times both
// (set_dependent_launch in kernels.hpp).
inline std::atomic<bool>& row_ops_pdl() {
  static std::atomic<bool> on{true};
  return on;
}
// The row ops' grid limit (set_row_grid_limit in kernels.hpp; 0: none).
inline std::atomic<unsigned>& row_grid_limit() {
  static std::atomic<unsigned> blocks{0};
  return blocks;
}

// Launch attributes: as a programmatic dependent of the work before it on the stream (pdl), in
// clusters of cluster_x blocks along x (0: no cluster attribute).
struct LaunchAttrs {
  bool pdl = false;
  unsigned cluster_x = 0;
};

template <class... Params, class... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, int threads, size_t smem, cudaStream_t stream,
                   LaunchAttrs at, Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(unsigned(threads));
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[2] = {};
  unsigned n = 0;
  if (at.pdl) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (at.cluster_x) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n++].val.clusterDim = {at.cluster_x, 1, 1};
  }
  cfg.attrs = attr;
  cfg.numAttrs = n;
  LORAOPS_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, args...));
}

// Launches `kernel`, as a programmatic dependent of the work before it on the stream when `pdl`.
template <class... Params, class... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, int threads, size_t smem, cudaStream_t stream,
                   bool pdl, Args... args) {
  launch_kernel(kernel, grid, threads, smem, stream, LaunchAttrs{pdl, 0}, args...);
}

}  // namespace loraops::cuda
