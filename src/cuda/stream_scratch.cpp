// See stream_scratch.hpp.
#include "cuda/stream_scratch.hpp"

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "cuda/common.cuh"
#include "loraops/error.hpp"

namespace loraops::cuda {

namespace {

constexpr size_t kQuantum = size_t(1) << 20;

struct Buffer {
  std::mutex mu;
  void* p = nullptr;
  size_t bytes = 0;
  bool in_graph = false;
};

struct Buffers {
  std::mutex mu;
  std::map<std::pair<int, cudaStream_t>, std::unique_ptr<Buffer>> by_stream;
};

Buffers& buffers() {
  static Buffers* b = new Buffers;  // never destroyed: it would outlive the CUDA context
  return *b;
}

}  // namespace

bool stream_capturing(cudaStream_t s) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(s, &status) != cudaSuccess) {
    (void)cudaGetLastError();  // cannot tell (legacy stream during a global capture): assume so
    return true;
  }
  return status != cudaStreamCaptureStatusNone;
}

namespace {

Buffer* buffer_of(int device, cudaStream_t stream) {
  Buffers& all = buffers();
  std::lock_guard<std::mutex> lock(all.mu);
  std::unique_ptr<Buffer>& slot = all.by_stream[{device, stream}];
  if (!slot) slot = std::make_unique<Buffer>();
  return slot.get();
}

}  // namespace

void* stream_scratch(int device, cudaStream_t stream, size_t bytes, const char* op,
                     const char* what) {
  Buffer* b = buffer_of(device, stream);
  std::lock_guard<std::mutex> lock(b->mu);
  const bool in_capture = stream_capturing(stream);
  if (b->bytes < bytes) {
    if (in_capture)
      throw Error(ErrorKind::Unsupported, op, what,
                  "scratch allocated before CUDA-graph capture (run the call once first)",
                  "a call that needs " + std::to_string(bytes) + " bytes of scratch, more than " +
                      std::to_string(b->bytes) + " allocated for this stream");
    const size_t want = std::max(bytes, 2 * b->bytes);
    const size_t rounded = (want + kQuantum - 1) / kQuantum * kQuantum;
    if (b->p && !b->in_graph) LORAOPS_CUDA_CHECK(cudaFree(b->p));
    b->p = nullptr;
    b->bytes = 0;
    b->in_graph = false;
    void* p = nullptr;
    LORAOPS_CUDA_CHECK(cudaMalloc(&p, rounded));
    b->p = p;
    b->bytes = rounded;
  }
  if (in_capture) b->in_graph = true;
  return b->p;
}

}  // namespace loraops::cuda
