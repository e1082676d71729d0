// Device memory for an op's temporaries (LoRA's x@A.T, packed inputs), one buffer per
// (device, stream): calls on one stream run in order, so they can share it.
//
// Rules, the same as the cuBLASLt wrapper's packing scratch: the buffer grows only outside
// CUDA-graph capture (nothing may be allocated during capture; a call that needs more there is an
// Unsupported error asking to run it once first); cudaFree of an outgrown buffer waits for the
// device, so enqueued work that uses it finishes first; a buffer a captured graph uses is never
// freed, since the graph holds its address.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace loraops::cuda {

// A buffer of at least `bytes` (256-byte aligned) for work enqueued on `stream` of `device` (the
// current device). `op` and `what` name the call in errors. Valid until the next call with the
// same (device, stream).
void* stream_scratch(int device, cudaStream_t stream, size_t bytes, const char* op,
                     const char* what);

// Whether work enqueued on `stream` now would be captured into a graph.
bool stream_capturing(cudaStream_t stream);

}  // namespace loraops::cuda
