// One object per (device, stream), made on first use and kept for the process: the stream
// scratch's buffers, the side streams and cuBLASLt's per-stream workspaces each keep one. The
// rules for making one (always; never during a capture) stay with the caller's `make`.
//
// Streams are keyed by handle, and a handle is not a stream:
// - The runtime gives a new stream the handle of one destroyed a moment before, even while the
//   destroyed stream's work still runs (CUDA 13 on the H200, 2026-12-01: a stream destroyed
//   behind a 50 ms kernel, and the next stream created had its handle, idle). That work may
//   still use the object (a scratch buffer, a workspace), and the new stream's work is not
//   reliably ordered behind it (CudaStreamScratch.RecycledHandleWaitsForTheDestroyedStreamsWork
//   failed once in four runs without the wait below). So a caller also gives the stream's
//   process-unique identity (stream_identity; 0 where it cannot be asked, as under capture): a
//   handle met with another identity than its object was last handed to is a recycled one, and
//   the registry first waits for the device (the destroyed stream cannot be waited on alone;
//   the caller's current device is `device`). Where that wait is refused (another thread
//   capturing in global mode), the object is retired instead (kept, never handed out again)
//   and a new one made.
// - cudaStreamPerThread is each thread's own stream, and those are not ordered with each other:
//   it is keyed by the identity too (each thread's stream its own object; where the identity is
//   unknown, one object for the handle).
// Objects are never freed, so a pointer stays valid for the process; a registry is meant to be
// leaked (a static `new`), as its objects hold CUDA resources that must not be freed after the
// context.
#pragma once

#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <utility>
#include <vector>

namespace loraops::cuda {

// The wait for a recycled handle: the current device idle; false (the error cleared) where the
// runtime refuses it.
inline bool wait_for_device() {
  if (cudaDeviceSynchronize() == cudaSuccess) return true;
  (void)cudaGetLastError();  // not to surface at the next launch check
  return false;
}

template <class T, bool (*kWait)() = wait_for_device>
class PerStream {
 public:
  // The object of (device, stream); where there is none yet, make() gives it (a
  // std::unique_ptr<T>; null: none is made and get returns null). make runs under the
  // registry's lock, so at most one is made per key; what it throws propagates. identity: the
  // stream's (0: unknown, taken as the same stream).
  template <class Make>
  T* get(int device, cudaStream_t stream, Make&& make, unsigned long long identity = 0) {
    std::lock_guard<std::mutex> lock(mu_);
    const Key key{device, stream, stream == cudaStreamPerThread ? identity : 0};
    auto it = by_stream_.find(key);
    if (it == by_stream_.end()) {
      std::unique_ptr<T> made = make();
      if (!made) return nullptr;
      return by_stream_.emplace(key, Entry{std::move(made), identity}).first->second.object.get();
    }
    Entry& e = it->second;
    if (identity != 0 && identity != e.identity) {
      if (e.identity != 0 && !kWait()) {  // recycled, and its old work may still run: retire it
        std::unique_ptr<T> made = make();
        if (!made) return nullptr;  // (asked again at the next call)
        retired_.push_back(std::move(e.object));
        e.object = std::move(made);
      }
      e.identity = identity;
    }
    return e.object.get();
  }

 private:
  struct Entry {
    std::unique_ptr<T> object;
    unsigned long long identity = 0;  // the stream's it was last handed to (0: unknown)
  };
  using Key = std::tuple<int, cudaStream_t, unsigned long long>;  // device, handle, per-thread identity
  std::mutex mu_;
  std::map<Key, Entry> by_stream_;
  std::vector<std::unique_ptr<T>> retired_;
};

}  // namespace loraops::cuda
