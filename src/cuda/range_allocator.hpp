// Ranges of a fixed pool of units (arrival_slots' counters and capture pools): first fit over the
// free ranges, a range given back joined with its free neighbours, so a pool whose ranges come
// back can be handed out again whole. Host code; not thread-safe (the caller holds its lock).
#pragma once

#include <cstdint>
#include <iterator>
#include <map>

namespace loraops::cuda {

class RangeAllocator {
 public:
  explicit RangeAllocator(int64_t size) : size_(size) {
    if (size > 0) free_[0] = size;
  }

  int64_t size() const { return size_; }
  int64_t in_use() const { return in_use_; }

  // The first unit of n free ones (the lowest range that holds them), or -1.
  int64_t take(int64_t n) {
    if (n <= 0) return -1;
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->second < n) continue;
      const int64_t first = it->first, left = it->second - n;
      free_.erase(it);
      if (left > 0) free_[first + n] = left;
      in_use_ += n;
      return first;
    }
    return -1;
  }

  // Units [first, first + n), taken before, free again.
  void give_back(int64_t first, int64_t n) {
    if (n <= 0) return;
    in_use_ -= n;
    auto next = free_.lower_bound(first);
    if (next != free_.end() && next->first == first + n) {  // joins the free range after it
      n += next->second;
      next = free_.erase(next);
    }
    if (next != free_.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == first) {  // ... and the one before it
        prev->second += n;
        return;
      }
    }
    free_[first] = n;
  }

  // Free ranges (first -> count), for tests.
  const std::map<int64_t, int64_t>& free_ranges() const { return free_; }

 private:
  int64_t size_;
  int64_t in_use_ = 0;
  std::map<int64_t, int64_t> free_;
};

}  // namespace loraops::cuda
