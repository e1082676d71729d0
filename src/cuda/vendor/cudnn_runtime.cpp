// libcudnn loaded at the first call, one handle per device (cudnn_runtime.hpp).
#include "cuda/vendor/cudnn_runtime.hpp"

#if LORAOPS_WITH_CUDNN

#ifndef LORAOPS_CUDNN_LIBRARY_DIR  // CMakeLists sets it: the directory of the headers' library
#define LORAOPS_CUDNN_LIBRARY_DIR ""
#endif

#include <dlfcn.h>

#include <map>
#include <memory>
#include <string>

#include "loraops/error.hpp"

namespace cudnn_frontend {
void* cudnn_dlhandle = nullptr;  // the frontend's handle on libcudnn (dynamic loading)
}  // namespace cudnn_frontend

namespace loraops::cuda::cudnn {

const std::string& load() {
  static const std::string why = [] {
    // The frontend is built against one cuDNN's headers: another minor version in the process
    // (PyTorch 2.11 carries 9.19 where the build saw 9.14) crashed inside the frontend's graph
    // validation on the H200 (2026-11-29), and a matching library preloaded ran. So a library of
    // another major.minor is never used.
    using GetVersion = size_t (*)();
    auto mismatch = [](void* h) -> std::string {
      const auto get_version = reinterpret_cast<GetVersion>(dlsym(h, "cudnnGetVersion"));
      const size_t version = get_version ? get_version() : 0;
      if (version / 100 == size_t(CUDNN_VERSION) / 100) return std::string();
      return "cuDNN " + std::to_string(version / 10000) + "." + std::to_string(version / 100 % 100) +
             " is loaded in this process, and loraops' cuDNN path was built against " +
             std::to_string(CUDNN_MAJOR) + "." + std::to_string(CUDNN_MINOR) +
             " (the frontend needs the version it was built for)";
    };
    // A copy already loaded (PyTorch's) is the only candidate: a second one beside it would not
    // be the one PyTorch uses.
    if (void* h = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_NOLOAD)) {
      std::string why_not = mismatch(h);
      if (why_not.empty()) cudnn_frontend::cudnn_dlhandle = h;
      return why_not;
    }
    // Else the library beside the build's headers (a wheel's, the toolkit's), then the system's.
    // One of another version is closed again (RTLD_LOCAL until it matches), so that a later
    // `import torch` does not find it under libcudnn.so.9.
    const std::string own_dir = LORAOPS_CUDNN_LIBRARY_DIR;
    const std::string own = own_dir.empty() ? std::string() : own_dir + "/libcudnn.so.9";
    std::string tried;
    for (const std::string& lib : {own, std::string("libcudnn.so.9"), std::string("libcudnn.so")}) {
      if (lib.empty()) continue;
      void* h = dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!h) {
        const char* e = dlerror();
        tried += "; " + lib + ": " + (e ? e : "not found");
        continue;
      }
      const std::string why_not = mismatch(h);
      if (!why_not.empty()) {
        tried += "; " + lib + ": " + why_not;
        dlclose(h);
        continue;
      }
      dlopen(lib.c_str(), RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);  // now global, as cuDNN expects
      cudnn_frontend::cudnn_dlhandle = h;
      return std::string();
    }
    return "no usable libcudnn.so.9 could be loaded" + tried;
  }();
  return why;
}

Device& device(int index) {
  static std::mutex mu;
  // Never destroyed (a static map would be, at exit, perhaps after the CUDA runtime): the
  // devices' handles and mutexes live as long as the process.
  static auto& devices = *new std::map<int, std::unique_ptr<Device>>;
  std::lock_guard<std::mutex> lock(mu);
  auto& d = devices[index];
  if (!d) d = std::make_unique<Device>();
  return *d;
}

cudnnHandle_t handle_on(Device& d, cudaStream_t stream, const char* op) {
  if (!d.handle) {
    const cudnnStatus_t st = fe::detail::create_handle(&d.handle);
    if (st != CUDNN_STATUS_SUCCESS) {
      d.handle = nullptr;
      throw Error(ErrorKind::Runtime, op, "cudnn", "cudnnCreate to succeed", fe::detail::get_error_string(st));
    }
  }
  const cudnnStatus_t st = fe::detail::set_stream(d.handle, stream);
  if (st != CUDNN_STATUS_SUCCESS)
    throw Error(ErrorKind::Runtime, op, "cudnn", "cudnnSetStream to succeed", fe::detail::get_error_string(st));
  return d.handle;
}

Plan finish(std::shared_ptr<fe::graph::Graph> g, cudnnHandle_t handle, const std::vector<fe::HeurMode_t>& modes) {
  Plan plan;
  auto step = [&](fe::error_t e, const char* what) {
    if (e.is_bad() && plan.error.empty()) plan.error = std::string(what) + ": " + e.get_message();
    return e.is_good();
  };
  if (step(g->validate(), "validate") && step(g->build_operation_graph(handle), "operation graph") &&
      step(g->create_execution_plans(modes), "heuristics") && step(g->check_support(handle), "support") &&
      step(g->build_plans(handle), "plan") && step(g->get_workspace_size(plan.workspace), "workspace"))
    plan.graph = std::move(g);
  return plan;
}

}  // namespace loraops::cuda::cudnn

#endif  // LORAOPS_WITH_CUDNN
