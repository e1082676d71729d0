// A second stream for the part of an op that may run beside its main work, forked from the
// caller's stream and joined back before the op returns (the caller sees one stream's order).
//
// lora_backward's grad_a and grad_b (memory-bound products, once gB is known) run there beside
// grad_x's GEMM: the GEMM's persistent blocks fill every SM, and the side stream's blocks take
// the SMs its last round of tiles leaves idle, where run after it they would add their whole time.
//
// One side stream and two events per (device, stream handle), created on first use outside
// capture and kept until the process ends (keyed by handle, as cudaStreamGetId is refused during
// capture, and checked against the stream's identity outside it; cudaStreamPerThread by each
// thread's own stream: per_stream.hpp; threads sharing a stream share its side stream, the lease
// ordering their forks and joins). A call gets
// none (and runs on one stream) where that would need creating during a capture (so a capture on
// cudaStreamPerThread, keyed apart from the thread's eager stream, gets none), or where the side
// stream is still part of a capture other than the caller's (a stream that joined a capture stays
// in it until the capture ends). The side stream has CUDA's lowest priority, the default one: its
// blocks do not outrank the caller's.
#pragma once

#include <cuda_runtime.h>

#include <mutex>
#include <utility>

namespace loraops::cuda {

// Leased from side_stream() until destroyed: fork() makes work enqueued on side() afterwards wait
// for the caller's stream's work before it; join() (or the destructor, also when unwinding)
// makes the caller's stream wait for everything enqueued on side(). Declare it after any
// scratch lease whose memory the side stream reads, so that it joins before that ends.
class SideStream {
 public:
  SideStream() = default;
  SideStream(SideStream&& o) noexcept
      : side_(o.side_), caller_(o.caller_), fork_(o.fork_), join_(o.join_), forked_(std::exchange(o.forked_, false)),
        lease_(std::move(o.lease_)) {}
  SideStream& operator=(SideStream&&) = delete;
  ~SideStream();

  cudaStream_t side() const { return side_; }  // null: none (run everything on the caller's stream)
  void fork(cudaStream_t stream);
  void join();

 private:
  friend SideStream side_stream(int device, cudaStream_t stream);
  cudaStream_t side_ = nullptr, caller_ = nullptr;
  cudaEvent_t fork_ = nullptr, join_ = nullptr;
  bool forked_ = false;
  std::unique_lock<std::mutex> lease_;
};

// The side stream of `stream` on `device` (the current device), or an empty one (see above).
SideStream side_stream(int device, cudaStream_t stream);

// Whether ops may use side streams (default on; loraops_latency times both, a test compares them).
void set_side_streams(bool on);
bool side_streams_on();

}  // namespace loraops::cuda
