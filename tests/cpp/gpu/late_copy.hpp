// late_copy and StreamGate (late_copy.cu): a copy that lets the next kernel start first, and a
// host-released gate, for the dependent-launch tests.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace loraops::test {

// Launches a kernel on `stream` that allows its programmatic dependents to start, spins about
// spin_us microseconds, then copies `bytes` from src to dst (device memory).
cudaError_t late_copy(void* dst, const void* src, size_t bytes, double spin_us, cudaStream_t stream);

// A kernel that holds `stream` until the host calls open() (the destructor opens it too): work
// enqueued behind it starts only once all of it is enqueued, however slow the host is. Kernels
// enqueued behind it should have run once before: a lazily loaded kernel's first launch may wait
// for the device, which the gate holds (it gives up after about a second: timed_out()).
class StreamGate {
 public:
  explicit StreamGate(cudaStream_t stream);
  ~StreamGate();
  StreamGate(const StreamGate&) = delete;
  StreamGate& operator=(const StreamGate&) = delete;
  void open();
  // After a sync: whether the gate gave up waiting for open() (about a second).
  bool timed_out() const;

 private:
  cudaStream_t stream_;
  volatile int* flag_ = nullptr;  // mapped pinned host memory the gate kernel polls
};

}  // namespace loraops::test
