// What the cuDNN vendor paths share (attention_cudnn.cpp, rows_cudnn.cpp): libcudnn loaded at
// the first call, one handle per device guarded by one mutex, and the frontend headers included
// the same way in every file that uses them (dynamic loading: the frontend's inline functions
// must see one configuration). Compiled only where the build found cuDNN and the frontend
// (LORAOPS_WITH_CUDNN).
#pragma once

#if LORAOPS_WITH_CUDNN

#define NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING
#include <cuda_runtime.h>
#include <cudnn.h>
#include <cudnn_frontend.h>

#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace loraops::cuda::cudnn {

namespace fe = cudnn_frontend;

// libcudnn, opened once for the process: "" when loaded, else why not (a library of another
// major.minor than the build's headers is never used).
const std::string& load();

// A device's handle and the mutex that guards it (its stream) and the plan caches kept beside it.
struct Device {
  std::mutex mu;
  cudnnHandle_t handle = nullptr;
};
Device& device(int index);  // process lifetime

// d's handle (created at the first call) set to `stream`; d.mu must be held until the work on
// the handle is enqueued. Throws Error(Runtime) naming `op` when cuDNN fails.
cudnnHandle_t handle_on(Device& d, cudaStream_t stream, const char* op);

// A graph ready to execute, or why cuDNN refused it.
struct Plan {
  std::shared_ptr<fe::graph::Graph> graph;  // null: refused (why: `error`)
  std::string error;
  int64_t workspace = 0;
};

// The frontend's steps from a described graph to a plan: validate, operation graph, heuristics
// (`modes`), support check, plan, workspace size. A refusal names the first step that failed.
Plan finish(std::shared_ptr<fe::graph::Graph> g, cudnnHandle_t handle, const std::vector<fe::HeurMode_t>& modes);

// Plans per device and key, each built once by `build` (a Plan; an exception from the frontend is
// a refusal too). Call with the device's mutex held. Plans are never evicted: one may still have
// work queued on a stream, or be recorded in a caller's CUDA graph that replays later, and
// nothing tells us when either is over. The cost is one plan (host memory, any kernel cuDNN
// compiled for it) per distinct shape for the process's lifetime. Hold one as a static reference
// to a heap object that is never deleted: a static PlanCache would destroy its plans at exit,
// perhaps after the CUDA runtime has shut down.
template <class Key>
class PlanCache {
 public:
  template <class Build>
  std::shared_ptr<const Plan> get(int device, const Key& key, Build build) {
    std::map<Key, std::shared_ptr<const Plan>>* plans;
    {
      std::lock_guard<std::mutex> lock(mu_);  // the map of devices; each device's own map is
      plans = &by_device_[device];            // guarded by that device's mutex (the caller's)
    }
    auto it = plans->find(key);
    if (it != plans->end()) return it->second;
    Plan plan;
    try {
      plan = build();
    } catch (const std::exception& e) {
      plan = Plan{};
      plan.error = e.what();
    }
    return plans->emplace(key, std::make_shared<const Plan>(std::move(plan))).first->second;
  }

 private:
  std::mutex mu_;
  std::map<int, std::map<Key, std::shared_ptr<const Plan>>> by_device_;  // process lifetime
};

}  // namespace loraops::cuda::cudnn

#endif  // LORAOPS_WITH_CUDNN
