// stream_scratch's cached buffer (src/cuda/stream_scratch.hpp) where a handle is not one stream
// (per_stream.hpp): the runtime gives a new stream the handle of one destroyed while its work
// still runs, and the new stream's lease must not reach the buffer before that work is done; and
// cudaStreamPerThread is every thread's own stream.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <thread>
#include <vector>

#include "cuda/stream_scratch.hpp"
#include "gpu_util.hpp"
#include "late_copy.hpp"

namespace loraops::test {
namespace {

constexpr size_t kBytes = 4096;

// Two patterns on the device (p1, p2) and a zeroed output, the late_copy kernel loaded before
// the timed launches; freed on scope exit.
struct Patterns {
  std::vector<uint8_t> first, second;
  void *p1 = nullptr, *p2 = nullptr, *out = nullptr;
  Patterns(uint8_t a, uint8_t b) : first(kBytes, a), second(kBytes, b) {
    EXPECT_EQ(cudaMalloc(&p1, kBytes), cudaSuccess);
    EXPECT_EQ(cudaMalloc(&p2, kBytes), cudaSuccess);
    EXPECT_EQ(cudaMalloc(&out, kBytes), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p1, first.data(), kBytes, cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p2, second.data(), kBytes, cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cudaMemset(out, 0, kBytes), cudaSuccess);
    EXPECT_EQ(late_copy(out, out, kBytes, 0, nullptr), cudaSuccess);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  }
  ~Patterns() {
    cudaFree(p1);
    cudaFree(p2);
    cudaFree(out);
  }
  Patterns(const Patterns&) = delete;
  Patterns& operator=(const Patterns&) = delete;
  std::vector<uint8_t> fetch() const {
    std::vector<uint8_t> got(kBytes);
    EXPECT_EQ(cudaMemcpy(got.data(), out, kBytes, cudaMemcpyDeviceToHost), cudaSuccess);
    return got;
  }
};

// Stream a, destroyed with its work queued: a pattern into its scratch at ~20 ms, the scratch
// copied out at ~25 ms. Stream b, created with a's handle: its lease, then another pattern into
// the scratch at ~22 ms after the lease. A lease that did not wait for a's work would put b's
// pattern between a's write and a's read, where b's work is not ordered behind a's (the runtime
// does not promise it; without the wait this failed once in four runs, H200, 2026-12-01).
TEST(CudaStreamScratch, RecycledHandleWaitsForTheDestroyedStreamsWork) {
  LORAOPS_REQUIRE_GPU();
  Patterns pt(0x11, 0x22);
  void *p1 = pt.p1, *p2 = pt.p2, *out = pt.out;

  cudaStream_t a = nullptr, b = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking));
  {
    const cuda::Scratch s = cuda::stream_scratch(0, a, kBytes, "test", "scratch");
    CUDA_OK(late_copy(s.get(), p1, kBytes, 20000, a));
    CUDA_OK(late_copy(out, s.get(), kBytes, 5000, a));
  }
  CUDA_OK(cudaStreamDestroy(a));
  CUDA_OK(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking));
  const bool recycled = b == a;
  {
    const cuda::Scratch s = cuda::stream_scratch(0, b, kBytes, "test", "scratch");
    CUDA_OK(late_copy(s.get(), p2, kBytes, 22000, b));
  }
  CUDA_OK(cudaDeviceSynchronize());
  CUDA_OK(cudaStreamDestroy(b));
  const std::vector<uint8_t> got = pt.fetch();
  if (!recycled) GTEST_SKIP() << "the runtime gave the new stream another handle: nothing shared";
  EXPECT_EQ(got, pt.first) << "the destroyed stream's scratch was overwritten by the new stream's work";
}

// cudaStreamPerThread is one handle for every thread's own stream, and those streams are not
// ordered with each other: each thread's lease its own buffer. The first thread's work as above;
// the second thread, once the first has enqueued, puts its pattern into its scratch at ~22 ms.
TEST(CudaStreamScratch, PerThreadStreamsGetTheirOwnBuffers) {
  LORAOPS_REQUIRE_GPU();
  Patterns pt(0x33, 0x44);
  void *p1 = pt.p1, *p2 = pt.p2, *out = pt.out;

  cudaError_t e1 = cudaSuccess, e2 = cudaSuccess;
  void *s1 = nullptr, *s2 = nullptr;
  std::thread t1([&] {
    const cuda::Scratch s = cuda::stream_scratch(0, cudaStreamPerThread, kBytes, "test", "scratch");
    s1 = s.get();
    e1 = late_copy(s.get(), p1, kBytes, 20000, cudaStreamPerThread);
    if (e1 == cudaSuccess) e1 = late_copy(out, s.get(), kBytes, 5000, cudaStreamPerThread);
  });
  t1.join();  // its work enqueued (not run)
  std::thread t2([&] {
    const cuda::Scratch s = cuda::stream_scratch(0, cudaStreamPerThread, kBytes, "test", "scratch");
    s2 = s.get();
    e2 = late_copy(s.get(), p2, kBytes, 22000, cudaStreamPerThread);
  });
  t2.join();
  CUDA_OK(e1);
  CUDA_OK(e2);
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<uint8_t> got = pt.fetch();
  EXPECT_NE(s1, s2);
  EXPECT_EQ(got, pt.first) << "one thread's scratch was overwritten by another thread's work";
}

}  // namespace
}  // namespace loraops::test
