// late_copy (late_copy.cu): a copy that lets the next kernel start first, for the dependent-launch
// tests.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace loraops::test {

// Launches a kernel on `stream` that allows its programmatic dependents to start, spins about
// spin_us microseconds, then copies `bytes` from src to dst (device memory).
cudaError_t late_copy(void* dst, const void* src, size_t bytes, double spin_us, cudaStream_t stream);

}  // namespace loraops::test
