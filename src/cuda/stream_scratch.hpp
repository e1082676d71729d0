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
// Or, for an op that names a CapturePool: a range of that __device__ pool per (capture, stream),
// handed out by arrival_slots (arrival_slots.hpp) and kept until the graph is gone, shared by the
// stream's calls in that capture as the cached buffer is eagerly. No memory node then sits
// between one call's kernels and the next call's: a memory node cuts the programmatic edge
// between two kernels (the next then starts ~0.75 us after the last ends, as a plain launch;
// NOTES.md, session 29). Graphs still share no memory, but two execs of one graph replayed beside
// each other share its range (a graph holding a memory node has one exec at a time); where the
// pool is spent, the stream-ordered allocation. Not covered either: a clone of such a graph
// replayed beside it. At most one lease of a pool may live per stream at a time (a second would
// get the same range; under capture it would wait forever for the first's lock).
//
// Streams are keyed by handle, checked against the stream's identity (per_stream.hpp): a stream
// created with the handle of one destroyed while its work still runs waits for that work before
// it gets the buffer; cudaStreamPerThread is keyed by each thread's own stream. Buffers of
// destroyed streams are kept until the process ends.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <mutex>

namespace loraops::cuda {

// A kernel file's __device__ pool that capture may take ranges of (see above): declare it
// __align__(256).
struct CapturePool {
  int id;              // its arrival_slots name (ArrivalPool), unique in the process
  size_t bytes;        // its size, a multiple of 256
  void* (*address)();  // its address on the current device (pool_address), or null
};

// CapturePool::address for the __device__ array kPool, instantiated in the kernel file that
// defines it; null where the runtime cannot tell. It runs under capture: the thread is put in
// relaxed capture mode around the query, since an API call the runtime deems unsafe in global
// mode (a module's lazy load, say) would fail and invalidate the capture.
template <auto& kPool>
void* pool_address() {
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  if (cudaThreadExchangeStreamCaptureMode(&mode) != cudaSuccess) {
    (void)cudaGetLastError();  // not to surface at the next launch check
    return nullptr;
  }
  void* p = nullptr;
  const bool found = cudaGetSymbolAddress(&p, kPool) == cudaSuccess;
  (void)cudaThreadExchangeStreamCaptureMode(&mode);  // the thread's mode as it was
  if (!found) (void)cudaGetLastError();
  return found ? p : nullptr;
}

class Scratch {
 public:
  Scratch() = default;
  Scratch(Scratch&&) noexcept;
  Scratch& operator=(Scratch&&) noexcept;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch();  // ends the lease: unlocks the cached buffer or the pool's range, or frees the capture's allocation

  char* get() const { return static_cast<char*>(p_); }

 private:
  friend Scratch stream_scratch(int, cudaStream_t, size_t, const char*, const char*, const CapturePool*);
  void release() noexcept;
  std::unique_lock<std::mutex> lock_;
  void* p_ = nullptr;
  cudaStream_t stream_ = nullptr;
  bool stream_ordered_ = false;  // allocated under capture: freed in stream order at the end
};

// At least `bytes` (256-byte aligned) for work enqueued on `stream` of `device` (the current
// device), valid while the lease lives; keep it until the op's last kernel is enqueued. `op` and
// `what` name the call in errors. bytes == 0 gives an empty lease. `pool`: under capture, a range
// of it where it has room (its kernels must reach that memory only after the work before them on
// the stream is complete, as they reach the cached buffer).
Scratch stream_scratch(int device, cudaStream_t stream, size_t bytes, const char* op,
                       const char* what, const CapturePool* pool = nullptr);

// The capture `stream` is part of: 0 none, its id while active, kCaptureUnknown where the runtime
// cannot tell (e.g. the legacy stream while another thread captures globally; the error is
// cleared so that it does not surface at the next launch check) or the capture is invalidated.
constexpr unsigned long long kCaptureUnknown = ~0ull;
unsigned long long stream_capture_id(cudaStream_t stream);

// The stream's process-unique id (cudaStreamGetId), the identity PerStream's registries check
// handles against; 0 while it is capturing (the query would invalidate the capture) or where the
// runtime cannot tell.
unsigned long long stream_identity(cudaStream_t stream);

// Whether work enqueued on `stream` now would be captured into a graph (then nothing may be
// allocated with cudaMalloc); where the runtime cannot tell, assume it would.
inline bool stream_capturing(cudaStream_t stream) { return stream_capture_id(stream) != 0; }

}  // namespace loraops::cuda
