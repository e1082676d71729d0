// run_ordered: the dependent-launch tests' way of running a sequence of launches on one stream,
// either captured into a graph and replayed once, or eagerly behind a StreamGate.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <functional>

#include "gpu_util.hpp"
#include "late_copy.hpp"

namespace loraops::test {

// Runs `sequence` (launches on `stream`) once and waits for the stream. Eagerly, the launches are
// held behind a gate the host opens once all are enqueued, so a slow host cannot let one finish
// before the next is enqueued. Failures are reported through gtest.
inline void run_ordered(cudaStream_t stream, bool graph, const std::function<void()>& sequence) {
  if (graph) {
    GraphRun g;
    CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    sequence();
    CUDA_OK(cudaStreamEndCapture(stream, &g.graph));
    CUDA_OK(cudaGraphInstantiate(&g.exec, g.graph, 0));
    CUDA_OK(cudaGraphLaunch(g.exec, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
  } else {
    StreamGate gate(stream);  // holds the stream until open() (or its destructor, on a failure)
    sequence();
    gate.open();
    CUDA_OK(cudaStreamSynchronize(stream));
    EXPECT_FALSE(gate.timed_out()) << "a launch behind the gate waited for the device";
  }
}

}  // namespace loraops::test
