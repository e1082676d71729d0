// RangeAllocator (src/cuda/range_allocator.hpp), the free list behind arrival_slots' pools.
// Host code only: it runs without a GPU.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <random>
#include <vector>

#include "cuda/range_allocator.hpp"

namespace loraops::cuda {
namespace {

using Free = std::map<int64_t, int64_t>;

TEST(RangeAllocator, TakesTheLowestRangeThatFits) {
  RangeAllocator a(100);
  EXPECT_EQ(a.take(30), 0);
  EXPECT_EQ(a.take(30), 30);
  EXPECT_EQ(a.take(30), 60);
  EXPECT_EQ(a.take(11), -1);  // 10 left
  EXPECT_EQ(a.take(0), -1);
  EXPECT_EQ(a.in_use(), 90);
  a.give_back(0, 30);
  EXPECT_EQ(a.take(40), -1);  // 30 and 10 free, not side by side
  EXPECT_EQ(a.take(20), 0);   // the first fit, not the best (90..100 would not hold it anyway)
  EXPECT_EQ(a.take(10), 20);
  EXPECT_EQ(a.take(10), 90);
  EXPECT_EQ(a.in_use(), 100);
  EXPECT_TRUE(a.free_ranges().empty());
}

TEST(RangeAllocator, JoinsARangeGivenBackWithItsFreeNeighbours) {
  RangeAllocator a(40);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(a.take(10), 10 * i);
  a.give_back(0, 10);
  a.give_back(20, 10);
  EXPECT_EQ(a.free_ranges(), (Free{{0, 10}, {20, 10}}));
  a.give_back(10, 10);  // joins both sides
  EXPECT_EQ(a.free_ranges(), (Free{{0, 30}}));
  a.give_back(30, 10);  // joins the one before
  EXPECT_EQ(a.free_ranges(), (Free{{0, 40}}));
  EXPECT_EQ(a.in_use(), 0);
  EXPECT_EQ(a.take(40), 0);  // whole again
}

TEST(RangeAllocator, JoinsTheRangeAfter) {
  RangeAllocator a(30);
  EXPECT_EQ(a.take(10), 0);
  EXPECT_EQ(a.take(10), 10);
  a.give_back(10, 10);  // joins the free 20..30
  EXPECT_EQ(a.free_ranges(), (Free{{10, 20}}));
  EXPECT_EQ(a.take(20), 10);
}

TEST(RangeAllocator, AnEmptyPoolHandsOutNothing) {
  RangeAllocator a(0);
  EXPECT_EQ(a.take(1), -1);
  EXPECT_EQ(a.in_use(), 0);
}

// Random takes and gives back against a map of units: no unit handed out twice, the free list
// always the complement of what is held, joined (no two free ranges side by side).
TEST(RangeAllocator, RandomTakesAndGivesBackKeepTheListExact) {
  constexpr int64_t kSize = 1000;
  RangeAllocator a(kSize);
  std::vector<std::pair<int64_t, int64_t>> held;
  std::vector<int> owner(kSize, 0);
  std::mt19937 rng(7);
  for (int step = 0; step < 5000; ++step) {
    if (held.empty() || rng() % 2) {
      const int64_t n = 1 + int64_t(rng() % 60);
      const int64_t first = a.take(n);
      if (first < 0) continue;
      ASSERT_LE(first + n, kSize);
      for (int64_t u = first; u < first + n; ++u) ASSERT_EQ(owner[size_t(u)]++, 0) << "unit " << u << " twice";
      held.push_back({first, n});
    } else {
      const size_t i = rng() % held.size();
      a.give_back(held[i].first, held[i].second);
      for (int64_t u = held[i].first; u < held[i].first + held[i].second; ++u) owner[size_t(u)] = 0;
      held.erase(held.begin() + std::ptrdiff_t(i));
    }
    int64_t used = 0, end = -1;
    for (int o : owner) used += o;
    ASSERT_EQ(a.in_use(), used);
    for (const auto& [first, n] : a.free_ranges()) {
      ASSERT_GT(first, end) << "free ranges overlap or touch";
      for (int64_t u = first; u < first + n; ++u) ASSERT_EQ(owner[size_t(u)], 0);
      end = first + n;
    }
    int64_t free_units = 0;
    for (const auto& [first, n] : a.free_ranges()) free_units += n;
    ASSERT_EQ(free_units + used, kSize);
  }
}

}  // namespace
}  // namespace loraops::cuda
