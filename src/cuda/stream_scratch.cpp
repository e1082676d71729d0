// See stream_scratch.hpp.
#include "cuda/stream_scratch.hpp"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "cuda/arrival_slots.hpp"
#include "cuda/common.cuh"
#include "cuda/per_stream.hpp"
#include "loraops/error.hpp"

namespace loraops::cuda {

namespace {

constexpr size_t kQuantum = size_t(1) << 20;

struct Buffer {
  std::mutex mu;
  void* p = nullptr;
  size_t bytes = 0;
};

}  // namespace

unsigned long long stream_capture_id(cudaStream_t s) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  unsigned long long id = 0;
  if (cudaStreamGetCaptureInfo(s, &status, &id) != cudaSuccess) {
    (void)cudaGetLastError();  // cannot tell (legacy stream during a global capture): assume so
    return kCaptureUnknown;
  }
  if (status == cudaStreamCaptureStatusInvalidated) return kCaptureUnknown;  // its id is not valid
  return status == cudaStreamCaptureStatusActive ? id : 0;
}

unsigned long long stream_identity(cudaStream_t s) {
  if (stream_capture_id(s) != 0) return 0;
  unsigned long long id = 0;
  if (cudaStreamGetId(s, &id) != cudaSuccess) {
    (void)cudaGetLastError();  // not to surface at the next launch check
    return 0;
  }
  return id;
}

namespace {

Buffer* buffer_of(int device, cudaStream_t stream) {
  static auto* buffers = new PerStream<Buffer>;  // never destroyed: it would outlive the CUDA context
  return buffers->get(device, stream, [] { return std::make_unique<Buffer>(); }, stream_identity(stream));
}

}  // namespace

Scratch::Scratch(Scratch&& o) noexcept { *this = std::move(o); }

Scratch& Scratch::operator=(Scratch&& o) noexcept {
  if (this != &o) {
    release();
    lock_ = std::move(o.lock_);
    p_ = o.p_;
    stream_ = o.stream_;
    stream_ordered_ = o.stream_ordered_;
    o.p_ = nullptr;
    o.stream_ordered_ = false;
  }
  return *this;
}

Scratch::~Scratch() { release(); }

void Scratch::release() noexcept {
  // A failure here would surface at the op's next CUDA call; this cannot throw.
  if (stream_ordered_ && p_) (void)cudaFreeAsync(p_, stream_);
  stream_ordered_ = false;
  p_ = nullptr;
  if (lock_.owns_lock()) lock_.unlock();
}

Scratch stream_scratch(int device, cudaStream_t stream, size_t bytes, const char* op,
                       const char* what, const CapturePool* pool) {
  Scratch s;
  if (bytes == 0) return s;
  s.stream_ = stream;
  if (stream_capturing(stream) && pool) {
    const int64_t first =
        arrival_slots(pool->id, int64_t(pool->bytes / 256), device, stream, int64_t((bytes + 255) / 256));
    char* base = first >= 0 ? static_cast<char*>(pool->address()) : nullptr;
    if (base && reinterpret_cast<uintptr_t>(base) % 256 == 0) {
      // The stream's lock keeps two host threads capturing on one stream from interleaving their
      // calls' kernels over the shared range (as it does for the cached buffer eagerly; a
      // capturing stream never takes that path).
      s.lock_ = std::unique_lock<std::mutex>(buffer_of(device, stream)->mu);
      s.p_ = base + first * 256;
      return s;
    }
  }
  if (stream_capturing(stream)) {
    const cudaError_t err = cudaMallocAsync(&s.p_, bytes, stream);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      throw Error(ErrorKind::Runtime, op, what, "stream-ordered scratch under CUDA-graph capture",
                  std::string("cudaMallocAsync of ") + std::to_string(bytes) +
                      " bytes: " + cudaGetErrorName(err));
    }
    s.stream_ordered_ = true;
    return s;
  }
  Buffer* b = buffer_of(device, stream);
  s.lock_ = std::unique_lock<std::mutex>(b->mu);
  if (b->bytes < bytes) {
    const size_t want = std::max(bytes, 2 * b->bytes);
    const size_t rounded = (want + kQuantum - 1) / kQuantum * kQuantum;
    if (b->p) LORAOPS_CUDA_CHECK(cudaFree(b->p));
    b->p = nullptr;
    b->bytes = 0;
    void* p = nullptr;
    LORAOPS_CUDA_CHECK(cudaMalloc(&p, rounded));
    b->p = p;
    b->bytes = rounded;
  }
  s.p_ = b->p;
  return s;
}

}  // namespace loraops::cuda
