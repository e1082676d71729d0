// The CUDA backend's launchers, one per (op, implementation); registered in register.cpp.
// Each takes the op's params and the caller's stream (cudaStream_t as void*), never synchronises,
// and throws loraops::Error(Runtime) when a launch fails.
#pragma once

#include "core/params.hpp"

namespace loraops::cuda {

// kernels/activation.cu
void activation_custom(const detail::RowParams& p, void* stream);

}  // namespace loraops::cuda
