// One object per (device, stream), made on first use and kept for the process: the stream
// scratch's buffers, the side streams and cuBLASLt's per-stream workspaces each keep one. The
// rules for making one (always; never during a capture) stay with the caller's `make`.
//
// Streams are keyed by handle: a stream destroyed and another created with the same handle share
// the object (harmless where calls on one stream are ordered, as every user's are). Objects are
// never erased, so a pointer stays valid for the process; a registry is meant to be leaked (a
// static `new`), as its objects hold CUDA resources that must not be freed after the context.
#pragma once

#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <mutex>
#include <utility>

namespace loraops::cuda {

template <class T>
class PerStream {
 public:
  // The object of (device, stream); where there is none yet, make() gives it (a
  // std::unique_ptr<T>; null: none is made and get returns null). make runs under the
  // registry's lock, so at most one is made per key; what it throws propagates.
  template <class Make>
  T* get(int device, cudaStream_t stream, Make&& make) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_stream_.find({device, stream});
    if (it != by_stream_.end()) return it->second.get();
    std::unique_ptr<T> made = make();
    if (!made) return nullptr;
    return by_stream_.emplace(std::pair{device, stream}, std::move(made)).first->second.get();
  }

 private:
  std::mutex mu_;
  std::map<std::pair<int, cudaStream_t>, std::unique_ptr<T>> by_stream_;
};

}  // namespace loraops::cuda
