// See arrival_slots.hpp.
#include "cuda/arrival_slots.hpp"

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>

#include "cuda/stream_scratch.hpp"

namespace loraops::cuda {

namespace {

struct Range {
  int64_t first = 0, count = 0;
};

struct Pools {
  std::mutex mu;
  std::map<std::pair<int, int>, int64_t> used;  // (pool, device): handed out
  // (pool, device, capture id or 0 eagerly, stream id eagerly or handle under capture): the
  // range its launches use
  std::map<std::tuple<int, int, unsigned long long, unsigned long long>, Range> ranges;
};

Pools& pools() {
  static auto* p = new Pools;  // never destroyed, as the per-stream registries
  return *p;
}

}  // namespace

int64_t arrival_slots(int pool_id, int64_t pool_size, int device, cudaStream_t stream, int64_t count) {
  if (count <= 0) return -1;
  const unsigned long long capture = stream_capture_id(stream);
  if (capture == kCaptureUnknown) return -1;
  unsigned long long stream_key = reinterpret_cast<uintptr_t>(stream);
  if (capture == 0 && cudaStreamGetId(stream, &stream_key) != cudaSuccess) {
    (void)cudaGetLastError();  // not to surface at the next launch check
    return -1;
  }
  Pools& p = pools();
  std::lock_guard<std::mutex> lock(p.mu);
  int64_t& used = p.used[{pool_id, device}];
  const auto take = [&](int64_t n) -> int64_t {
    if (n > pool_size - used) return -1;
    used += n;
    return used - n;
  };
  Range& r = p.ranges[{pool_id, device, capture, stream_key}];
  if (r.count < count) {  // eagerly with room to grow; a capture's launches are often all alike
    const int64_t n = capture != 0 ? count : std::max({count, 2 * r.count, int64_t(64)});
    const int64_t first = take(n);
    if (first < 0) return -1;
    r = Range{first, n};
  }
  return r.first;
}

}  // namespace loraops::cuda
