// PerStream (src/cuda/per_stream.hpp), the registry behind the stream scratch, the side streams
// and cuBLASLt's per-stream workspaces. Host code only: it runs without a GPU (stream handles
// and identities are only keys here, the wait for a recycled handle a stand-in).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include "cuda/per_stream.hpp"

namespace loraops::cuda {
namespace {

// Handles past the runtime's special ones (cudaStreamLegacy 0x1, cudaStreamPerThread 0x2).
cudaStream_t handle(uintptr_t i) { return reinterpret_cast<cudaStream_t>(0x1000 + i); }

TEST(PerStream, OneObjectPerDeviceAndStream) {
  PerStream<int> reg;
  int made = 0;
  auto make = [&] { return std::make_unique<int>(++made); };
  int* a = reg.get(0, handle(1), make);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(reg.get(0, handle(1), make), a);  // the same object again, nothing made
  int* b = reg.get(0, handle(2), make);
  int* c = reg.get(1, handle(1), make);  // another device, the same handle
  int* d = reg.get(0, nullptr, make);    // the legacy stream is a key like any other
  EXPECT_NE(b, a);
  EXPECT_NE(c, a);
  EXPECT_NE(d, a);
  EXPECT_EQ(made, 4);
  EXPECT_EQ(*a, 1);
  EXPECT_EQ(*c, 3);
}

TEST(PerStream, MakeMayDecline) {
  PerStream<int> reg;
  EXPECT_EQ(reg.get(0, handle(1), [] { return std::unique_ptr<int>(); }), nullptr);
  // nothing was kept: a later make is asked again
  int* a = reg.get(0, handle(1), [] { return std::make_unique<int>(7); });
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(*a, 7);
}

TEST(PerStream, MakeThatThrowsKeepsNothing) {
  PerStream<int> reg;
  EXPECT_THROW(reg.get(0, handle(1), []() -> std::unique_ptr<int> { throw std::runtime_error("no"); }),
               std::runtime_error);
  int* a = reg.get(0, handle(1), [] { return std::make_unique<int>(5); });  // the lock was released
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(*a, 5);
}

TEST(PerStream, ThreadsRacingForAKeyGetOneObject) {
  PerStream<int> reg;
  std::atomic<int> made{0};
  std::vector<int*> got(8);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      got[size_t(t)] = reg.get(0, handle(3), [&] { return std::make_unique<int>(++made); });
    });
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(made.load(), 1);
  for (int* p : got) EXPECT_EQ(p, got[0]);
}

// Identities: a handle met with another stream's identity (a recycled handle) waits, then keeps
// its object; where the wait is refused, the object is retired and a new one made. Unknown
// identities (0: under capture) change nothing.
int waits = 0;
bool wait_granted() { return ++waits, true; }
bool wait_refused() { return ++waits, false; }

TEST(PerStream, RecycledHandleWaitsThenKeepsItsObject) {
  PerStream<int, wait_granted> reg;
  waits = 0;
  int made = 0;
  auto make = [&] { return std::make_unique<int>(++made); };
  int* a = reg.get(0, handle(1), make, 10);
  EXPECT_EQ(reg.get(0, handle(1), make, 10), a);
  EXPECT_EQ(reg.get(0, handle(1), make, 0), a);  // unknown (a capture): no wait
  EXPECT_EQ(waits, 0);
  EXPECT_EQ(reg.get(0, handle(1), make, 11), a);  // recycled: waits, same object
  EXPECT_EQ(waits, 1);
  EXPECT_EQ(reg.get(0, handle(1), make, 11), a);  // the new stream again: no wait
  EXPECT_EQ(waits, 1);
  EXPECT_EQ(made, 1);
}

TEST(PerStream, RecycledHandleWithoutAWaitGetsANewObject) {
  PerStream<int, wait_refused> reg;
  waits = 0;
  int made = 0;
  auto make = [&] { return std::make_unique<int>(++made); };
  int* a = reg.get(0, handle(1), make, 10);
  int* b = reg.get(0, handle(1), make, 11);
  EXPECT_EQ(waits, 1);
  ASSERT_NE(b, a);
  EXPECT_EQ(*a, 1);  // the retired object lives on (the old stream's work may still use it)
  EXPECT_EQ(*b, 2);
  EXPECT_EQ(reg.get(0, handle(1), make, 11), b);
  // an object made with its identity unknown takes the first one it meets, without a wait
  int* c = reg.get(0, handle(2), make, 0);
  EXPECT_EQ(reg.get(0, handle(2), make, 12), c);
  EXPECT_EQ(reg.get(0, handle(2), make, 12), c);
  EXPECT_EQ(waits, 1);
}

// cudaStreamPerThread is each thread's own stream: one object per identity, no waits; unknown
// (under capture), one for the handle.
TEST(PerStream, PerThreadStreamsGetTheirOwnObjects) {
  PerStream<int, wait_granted> reg;
  waits = 0;
  int made = 0;
  auto make = [&] { return std::make_unique<int>(++made); };
  int* t1 = reg.get(0, cudaStreamPerThread, make, 20);
  int* t2 = reg.get(0, cudaStreamPerThread, make, 21);
  EXPECT_NE(t1, t2);
  EXPECT_EQ(reg.get(0, cudaStreamPerThread, make, 20), t1);
  EXPECT_EQ(reg.get(0, cudaStreamPerThread, make, 21), t2);
  int* unknown = reg.get(0, cudaStreamPerThread, make, 0);
  EXPECT_NE(unknown, t1);
  EXPECT_NE(unknown, t2);
  EXPECT_EQ(waits, 0);
  EXPECT_EQ(made, 3);
}

}  // namespace
}  // namespace loraops::cuda
