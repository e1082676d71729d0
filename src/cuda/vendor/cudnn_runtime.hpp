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

#include <mutex>
#include <string>

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

}  // namespace loraops::cuda::cudnn

#endif  // LORAOPS_WITH_CUDNN
