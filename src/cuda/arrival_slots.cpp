// See arrival_slots.hpp.
#include "cuda/arrival_slots.hpp"

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "cuda/range_allocator.hpp"
#include "cuda/stream_scratch.hpp"

namespace loraops::cuda {

namespace {

struct Range {
  int64_t first = 0, count = 0;
};

// (pool, device, capture id or 0 eagerly, stream id eagerly or handle under capture)
using RangeKey = std::tuple<int, int, unsigned long long, unsigned long long>;

// What a capture took, given back when its graph goes (release_capture).
struct CaptureTakes {
  struct Taken {
    int pool, device;
    int64_t first, count;
  };
  std::vector<Taken> taken;
  std::vector<RangeKey> keys;
};

enum class Hook { Unknown, Held, Failed };

struct Pools {
  std::mutex mu;
  std::map<std::pair<int, int>, RangeAllocator> units;  // (pool, device)
  std::map<RangeKey, Range> ranges;                     // the range a key's launches use
  std::map<unsigned long long, CaptureTakes> captures;  // by capture id, while its graph lives
  std::map<unsigned long long, Hook> hooks;             // by capture id
};

Pools& pools() {
  static auto* p = new Pools;  // never destroyed, as the per-stream registries
  return *p;
}

// The user object's destructor: the last reference to the capture's graph is gone (the graph,
// its clones and execs destroyed, and every launch of them complete), so no kernel can use its
// ranges any more. Runs on a CUDA-internal thread: host work only, and arrival_slots never holds
// the lock across a CUDA call, so taking it here cannot wait on CUDA.
void release_capture(void* ctx) {
  const unsigned long long capture = *static_cast<unsigned long long*>(ctx);
  delete static_cast<unsigned long long*>(ctx);
  Pools& p = pools();
  std::lock_guard<std::mutex> lock(p.mu);
  const auto it = p.captures.find(capture);
  if (it != p.captures.end()) {
    for (const auto& t : it->second.taken) p.units.at({t.pool, t.device}).give_back(t.first, t.count);
    for (const auto& k : it->second.keys) p.ranges.erase(k);
    p.captures.erase(it);
  }
  p.hooks.erase(capture);  // capture ids are never reused
}

// A user object on the graph `stream` is capturing (id `capture`) whose destructor gives back the
// capture's ranges: true where it holds (once per capture; CUDA calls outside the lock).
bool hook_capture(cudaStream_t stream, unsigned long long capture) {
  Pools& p = pools();
  {
    std::lock_guard<std::mutex> lock(p.mu);
    const Hook h = p.hooks[capture];
    if (h != Hook::Unknown) return h == Hook::Held;
  }
  bool held = false;
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  unsigned long long id = 0;
  cudaGraph_t graph = nullptr;
  if (cudaStreamGetCaptureInfo(stream, &status, &id, &graph) == cudaSuccess &&
      status == cudaStreamCaptureStatusActive && id == capture && graph) {
    auto* ctx = new unsigned long long(capture);
    cudaUserObject_t object = nullptr;
    if (cudaUserObjectCreate(&object, ctx, release_capture, 1, cudaUserObjectNoDestructorSync) != cudaSuccess) {
      delete ctx;
    } else {
      // Where the graph refuses it, the object keeps its one reference and never runs (a few
      // bytes kept): the capture's ranges are then never given back, as before this hook.
      held = cudaGraphRetainUserObject(graph, object, 1, cudaGraphUserObjectMove) == cudaSuccess;
    }
  }
  if (!held) (void)cudaGetLastError();  // not to surface at the next launch check
  std::lock_guard<std::mutex> lock(p.mu);
  Hook& h = p.hooks[capture];
  if (h == Hook::Unknown || held) h = held ? Hook::Held : Hook::Failed;  // (two threads: one holds)
  return h == Hook::Held;
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
  const bool give_back = capture != 0 && hook_capture(stream, capture);
  Pools& p = pools();
  std::lock_guard<std::mutex> lock(p.mu);
  RangeAllocator& units = p.units.try_emplace({pool_id, device}, pool_size).first->second;
  const RangeKey key{pool_id, device, capture, stream_key};
  Range& r = p.ranges[key];
  if (r.count < count) {  // eagerly with room to grow; a capture's launches are often all alike
    const int64_t n = capture != 0 ? count : std::max({count, 2 * r.count, int64_t(64)});
    const int64_t first = units.take(n);
    if (first < 0) return -1;
    if (give_back) {  // the outgrown range too: the capture's earlier nodes use it
      CaptureTakes& c = p.captures[capture];
      if (r.count == 0) c.keys.push_back(key);
      c.taken.push_back({pool_id, device, first, n});
    }
    r = Range{first, n};
  }
  return r.first;
}

int64_t arrival_slots_in_use(int pool_id, int device) {
  Pools& p = pools();
  std::lock_guard<std::mutex> lock(p.mu);
  const auto it = p.units.find({pool_id, device});
  return it == p.units.end() ? 0 : it->second.in_use();
}

}  // namespace loraops::cuda
