// See side_stream.hpp.
#include "cuda/side_stream.hpp"

#include <atomic>
#include <memory>
#include <mutex>
#include <utility>

#include "cuda/common.cuh"
#include "cuda/per_stream.hpp"
#include "cuda/stream_scratch.hpp"

namespace loraops::cuda {

namespace {

struct Entry {
  std::mutex mu;  // the lease
  cudaStream_t side = nullptr;
  cudaEvent_t fork = nullptr, join = nullptr;
};

PerStream<Entry>& side_streams() {
  static auto* s = new PerStream<Entry>;  // never destroyed: it would outlive the CUDA context
  return *s;
}

std::atomic<bool>& side_on() {
  static std::atomic<bool> on{true};
  return on;
}

std::unique_ptr<Entry> make_entry() {
  int least = 0, greatest = 0;  // CUDA's priorities: the greatest number is the lowest priority
  LORAOPS_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  auto e = std::make_unique<Entry>();
  LORAOPS_CUDA_CHECK(cudaStreamCreateWithPriority(&e->side, cudaStreamNonBlocking, least));
  if (cudaEventCreateWithFlags(&e->fork, cudaEventDisableTiming) != cudaSuccess ||
      cudaEventCreateWithFlags(&e->join, cudaEventDisableTiming) != cudaSuccess) {
    if (e->fork) cudaEventDestroy(e->fork);
    cudaStreamDestroy(e->side);
    LORAOPS_CUDA_CHECK(cudaGetLastError());
    throw Error(ErrorKind::Runtime, "lora_backward", "stream", "a side stream's events", "cudaEventCreate failed");
  }
  return e;
}

}  // namespace

void set_side_streams(bool on) { side_on().store(on, std::memory_order_relaxed); }
bool side_streams_on() { return side_on().load(std::memory_order_relaxed); }

SideStream side_stream(int device, cudaStream_t stream) {
  const unsigned long long mine = stream_capture_id(stream);
  if (mine == kCaptureUnknown) return {};
  Entry* const e = side_streams().get(device, stream, [&]() -> std::unique_ptr<Entry> {
    return mine != 0 ? nullptr : make_entry();  // nothing is created during a capture
  }, mine != 0 ? 0 : stream_identity(stream));
  if (!e) return {};
  SideStream s;
  s.lease_ = std::unique_lock<std::mutex>(e->mu);
  const unsigned long long side_capture = stream_capture_id(e->side);
  if (side_capture != 0 && side_capture != mine) return {};  // still part of another capture
  s.side_ = e->side, s.fork_ = e->fork, s.join_ = e->join;
  return s;
}

void SideStream::fork(cudaStream_t stream) {
  LORAOPS_CUDA_CHECK(cudaEventRecord(fork_, stream));
  LORAOPS_CUDA_CHECK(cudaStreamWaitEvent(side_, fork_, 0));
  caller_ = stream, forked_ = true;  // only now is there something to join
}

void SideStream::join() {
  if (!forked_) return;
  forked_ = false;
  LORAOPS_CUDA_CHECK(cudaEventRecord(join_, side_));
  LORAOPS_CUDA_CHECK(cudaStreamWaitEvent(caller_, join_, 0));
}

SideStream::~SideStream() {
  if (!forked_) return;
  // unwinding: join anyway, so that nothing the side stream still reads is reused before it is
  // done (an error here surfaces at the next CUDA call; a destructor cannot throw)
  if (cudaEventRecord(join_, side_) == cudaSuccess) (void)cudaStreamWaitEvent(caller_, join_, 0);
}

}  // namespace loraops::cuda
