// See side_stream.hpp.
#include "cuda/side_stream.hpp"

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "cuda/common.cuh"
#include "cuda/stream_scratch.hpp"

namespace loraops::cuda {

namespace {

struct Entry {
  std::mutex mu;  // the lease
  cudaStream_t side = nullptr;
  cudaEvent_t fork = nullptr, join = nullptr;
};

struct SideStreams {
  std::mutex mu;
  std::map<std::pair<int, cudaStream_t>, std::unique_ptr<Entry>> by_stream;
};

SideStreams& side_streams() {
  static SideStreams* s = new SideStreams;  // never destroyed: it would outlive the CUDA context
  return *s;
}

std::atomic<bool>& side_on() {
  static std::atomic<bool> on{true};
  return on;
}

}  // namespace

void set_side_streams(bool on) { side_on().store(on, std::memory_order_relaxed); }
bool side_streams_on() { return side_on().load(std::memory_order_relaxed); }

SideStream side_stream(int device, cudaStream_t stream) {
  Entry* e = nullptr;
  {
    SideStreams& all = side_streams();
    std::lock_guard<std::mutex> lock(all.mu);
    std::unique_ptr<Entry>& slot = all.by_stream[{device, stream}];
    if (!slot) {
      if (stream_capturing(stream)) {
        all.by_stream.erase({device, stream});
        return {};
      }
      int least = 0, greatest = 0;  // CUDA's priorities: the greatest number is the lowest priority
      LORAOPS_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
      auto fresh = std::make_unique<Entry>();
      LORAOPS_CUDA_CHECK(cudaStreamCreateWithPriority(&fresh->side, cudaStreamNonBlocking, least));
      LORAOPS_CUDA_CHECK(cudaEventCreateWithFlags(&fresh->fork, cudaEventDisableTiming));
      LORAOPS_CUDA_CHECK(cudaEventCreateWithFlags(&fresh->join, cudaEventDisableTiming));
      slot = std::move(fresh);
    }
    e = slot.get();  // entries are never erased once made
  }
  SideStream s;
  s.lease = std::unique_lock<std::mutex>(e->mu);
  s.side = e->side, s.fork = e->fork, s.join = e->join;
  return s;
}

void fork_side(const SideStream& s, cudaStream_t stream) {
  LORAOPS_CUDA_CHECK(cudaEventRecord(s.fork, stream));
  LORAOPS_CUDA_CHECK(cudaStreamWaitEvent(s.side, s.fork, 0));
}

void join_side(const SideStream& s, cudaStream_t stream) {
  LORAOPS_CUDA_CHECK(cudaEventRecord(s.join, s.side));
  LORAOPS_CUDA_CHECK(cudaStreamWaitEvent(stream, s.join, 0));
}

}  // namespace loraops::cuda
