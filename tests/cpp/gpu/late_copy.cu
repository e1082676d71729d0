// A kernel for the dependent-launch tests: it lets the next kernel on the stream start at once
// (allow_dependents, as lora_shrink does), then spins for `spin_us` microseconds (the global timer) and only then copies
// `bytes` from src to dst. A kernel launched after it as a programmatic dependent that read or
// wrote memory before its grid_dependency_wait would see (or clobber) the state before the copy.
#include "late_copy.hpp"

#include <cuda_runtime.h>

#include "cuda/common.cuh"

namespace loraops::test {

namespace {

__device__ unsigned long long now_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__global__ void late_copy_kernel(unsigned char* dst, const unsigned char* src, size_t bytes, unsigned long long ns) {
  cuda::allow_dependents();
  const unsigned long long t0 = now_ns();
  while (now_ns() - t0 < ns) {
  }
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < bytes; i += size_t(gridDim.x) * blockDim.x)
    dst[i] = src[i];
}

// Spins until the host writes 1, or about a second has passed: then it writes 2 (timed out), so
// a host stuck before open() (a launch that waits for the device) fails the test, not hangs it.
__global__ void gate_kernel(volatile int* flag) {
  const unsigned long long t0 = now_ns();
  while (*flag == 0)
    if (now_ns() - t0 > 1000000000ull) *flag = 2;
}

}  // namespace

StreamGate::StreamGate(cudaStream_t stream) : stream_(stream) {
  int* p = nullptr;
  if (cudaHostAlloc(&p, sizeof(int), cudaHostAllocMapped) != cudaSuccess) return;  // no gate: open
  *p = 0;
  flag_ = p;
  int* dev = nullptr;
  if (cudaHostGetDevicePointer(&dev, p, 0) == cudaSuccess) gate_kernel<<<1, 1, 0, stream>>>(dev);
  if (cudaGetLastError() != cudaSuccess) *flag_ = 1;  // no gate: the sequence runs as enqueued
}

void StreamGate::open() {
  if (flag_ && *flag_ == 0) *flag_ = 1;
}

bool StreamGate::timed_out() const { return flag_ && *flag_ == 2; }

StreamGate::~StreamGate() {
  if (!flag_) return;
  open();
  cudaStreamSynchronize(stream_);  // the gate kernel has read its flag for the last time
  cudaFreeHost(const_cast<int*>(flag_));
}

cudaError_t late_copy(void* dst, const void* src, size_t bytes, double spin_us, cudaStream_t stream) {
  late_copy_kernel<<<64, 256, 0, stream>>>(static_cast<unsigned char*>(dst), static_cast<const unsigned char*>(src),
                                           bytes, (unsigned long long)(spin_us * 1e3));
  return cudaGetLastError();
}

}  // namespace loraops::test
