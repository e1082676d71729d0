// Branch-free float helpers for loops GCC should vectorise: a bitwise select and exp of a
// non-positive argument (what every softmax needs: exp(x - max)). Used by the attention kernels.
#pragma once

#include <bit>
#include <cstdint>

namespace loraops::cpu {

// c ? a : b as bit operations. GCC will not if-convert a float ?: whose condition is a float
// comparison (it may trap, under the default -ftrapping-math) and would leave the loop scalar.
inline float pick(bool c, float a, float b) {
  const uint32_t mask = 0u - uint32_t(c);
  return std::bit_cast<float>((std::bit_cast<uint32_t>(a) & mask) |
                              (std::bit_cast<uint32_t>(b) & ~mask));
}

// exp(x) for x <= 0: x = n*ln2 + r with |r| <= ln2/2, exp(r) by a degree-6 polynomial
// (relative error ~2e-7), 2^n written into the exponent field. n is rounded by adding 1.5*2^23,
// which leaves it in the low bits of the sum, so there is no float->int conversion. Below
// -87.3 (where the result leaves the normal range), -inf included, it returns 0; NaN stays NaN.
inline float exp_le0(float x) {
  constexpr float kRound = 12582912.f;  // 1.5 * 2^23
  const float z = x * 1.44269504089f + kRound;
  const float n = z - kRound;
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;  // ln2 in two parts
  float e = 1.f / 720.f;
  e = e * r + 1.f / 120.f;
  e = e * r + 1.f / 24.f;
  e = e * r + 1.f / 6.f;
  e = e * r + 0.5f;
  e = e * r + 1.f;
  e = e * r + 1.f;
  // Unsigned arithmetic: for the (masked-out) x far below -87.3 the exponent wraps harmlessly.
  const uint32_t bits = (std::bit_cast<uint32_t>(z) - 0x4B400000u + 127u) << 23;
  return pick(x < -87.3f, 0.f, e * std::bit_cast<float>(bits));
}

}  // namespace loraops::cpu
