// A second stream for the part of an op that may run beside its main work, forked from the
// caller's stream and joined back before the op returns (the caller sees one stream's order).
//
// The backward's grad_a (a memory-bound product over x) runs there beside the folded grad_x GEMM:
// the GEMM's persistent blocks fill every SM, and grad_a's blocks take the SMs the GEMM's last
// wave leaves idle, where run after it they would add their whole time.
//
// One side stream and two events per (device, stream), created on first use outside capture
// (during a capture nothing is created: the op then runs in one stream) and kept until the
// process ends. The side stream has the lowest priority, so that its blocks never go before the
// caller's stream's where both have blocks waiting. The lease (held from fork to join) keeps two
// host threads on one stream handle (e.g. cudaStreamPerThread) from interleaving their event
// records.
#pragma once

#include <cuda_runtime.h>

#include <mutex>

namespace loraops::cuda {

struct SideStream {
  cudaStream_t side = nullptr;  // null: none (run everything on the caller's stream)
  cudaEvent_t fork = nullptr, join = nullptr;
  std::unique_lock<std::mutex> lease;
};

// The side stream of `stream` on `device` (the current device), leased until the returned value
// is destroyed; or an empty one during capture before its first use outside it.
SideStream side_stream(int device, cudaStream_t stream);

// Work on s.side enqueued after fork_side waits for the work on `stream` before it; work on
// `stream` after join_side waits for the work enqueued on s.side before it.
void fork_side(const SideStream& s, cudaStream_t stream);
void join_side(const SideStream& s, cudaStream_t stream);

// Whether ops may use side streams (default on; loraops_latency times both, a test compares them).
void set_side_streams(bool on);
bool side_streams_on();

}  // namespace loraops::cuda
