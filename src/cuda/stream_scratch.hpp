// Device memory for an op's temporaries (LoRA's x@A.T, packed inputs).
//
// Outside CUDA-graph capture: one cached buffer per (device, stream), grown as needed. The Scratch
// lease holds that buffer's lock until the op has enqueued its last kernel, so two host threads
// sharing a stream cannot interleave their uses of it (the kernels of one op then follow each
// other on the stream, and the next op's follow those). Growing frees the old buffer with
// cudaFree, which waits for the device, so work enqueued with it finishes first.
//
// Under capture: a stream-ordered allocation (cudaMallocAsync, freed with cudaFreeAsync when the
// lease ends), which the graph records as its own memory nodes. A graph therefore never shares
// memory with eager calls or other graphs, and capture works on a stream the op never ran on.
//
// Streams are keyed by handle: a stream destroyed and another created with the same handle share
// the cached buffer (harmless: calls on one stream are ordered), and buffers of destroyed streams
// are kept until the process ends.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <mutex>

namespace loraops::cuda {

class Scratch {
 public:
  Scratch() = default;
  Scratch(Scratch&&) noexcept;
  Scratch& operator=(Scratch&&) noexcept;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch();  // ends the lease: unlocks the cached buffer, or frees the capture's allocation

  char* get() const { return static_cast<char*>(p_); }

 private:
  friend Scratch stream_scratch(int, cudaStream_t, size_t, const char*, const char*);
  void release() noexcept;
  std::unique_lock<std::mutex> lock_;
  void* p_ = nullptr;
  cudaStream_t stream_ = nullptr;
  bool stream_ordered_ = false;  // allocated under capture: freed in stream order at the end
};

// At least `bytes` (256-byte aligned) for work enqueued on `stream` of `device` (the current
// device), valid while the lease lives; keep it until the op's last kernel is enqueued. `op` and
// `what` name the call in errors. bytes == 0 gives an empty lease.
Scratch stream_scratch(int device, cudaStream_t stream, size_t bytes, const char* op,
                       const char* what);

// The capture `stream` is part of: 0 none, its id while active, kCaptureUnknown where the runtime
// cannot tell (e.g. the legacy stream while another thread captures globally; the error is
// cleared so that it does not surface at the next launch check) or the capture is invalidated.
constexpr unsigned long long kCaptureUnknown = ~0ull;
unsigned long long stream_capture_id(cudaStream_t stream);

// Whether work enqueued on `stream` now would be captured into a graph (then nothing may be
// allocated with cudaMalloc); where the runtime cannot tell, assume it would.
inline bool stream_capturing(cudaStream_t stream) { return stream_capture_id(stream) != 0; }

}  // namespace loraops::cuda
