// PerStream (src/cuda/per_stream.hpp), the registry behind the stream scratch, the side streams
// and cuBLASLt's per-stream workspaces. Host code only: it runs without a GPU (stream handles
// are only keys here).
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

cudaStream_t handle(uintptr_t i) { return reinterpret_cast<cudaStream_t>(i); }

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

}  // namespace
}  // namespace loraops::cuda
