// Element types, devices and the float16/bfloat16 <-> float32 conversions every backend shares.
#pragma once

#include <cstdint>
#include <cstring>

namespace loraops {

enum class DType : uint8_t { Float32, Float16, BFloat16 };

inline constexpr int kNumDTypes = 3;

constexpr int64_t dtype_size(DType t) { return t == DType::Float32 ? 4 : 2; }

constexpr const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float32: return "float32";
    case DType::Float16: return "float16";
    case DType::BFloat16: return "bfloat16";
  }
  return "?";
}

enum class DeviceType : uint8_t { CPU, CUDA };

inline constexpr int kNumDeviceTypes = 2;

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  friend constexpr bool operator==(Device a, Device b) {
    return a.type == b.type && (a.type == DeviceType::CPU || a.index == b.index);
  }
};

constexpr const char* device_type_name(DeviceType t) {
  return t == DeviceType::CPU ? "cpu" : "cuda";
}

// --- half conversions (host side; round to nearest even, NaN stays NaN) ---------------------
// Written out by hand rather than through _Float16/__bf16 so the CPU backend behaves the same
// with every compiler and on every host.

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bf16_to_float(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }

inline uint16_t float_to_bf16(float f) {
  uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                          // round to nearest even
  return uint16_t(u >> 16);
}

inline float fp16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (man << 13));  // inf / NaN
  if (exp != 0) return bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
  if (man == 0) return bits_to_float(sign);
  // Subnormal half: value = man * 2^-24, exact in float.
  float v = float(man) * 5.9604644775390625e-8f;
  return sign ? -v : v;
}

inline uint16_t float_to_fp16(float f) {
  const uint32_t u = float_to_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // NaN
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (a >= 0x38800000u) {                                 // normal half
    uint32_t m = a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u;  // rebias exponent, round
    return uint16_t(sign | (m >> 13));
  }
  if (a < 0x33000000u) return sign;  // below half of the smallest subnormal: zero
  // Subnormal half: shift the mantissa (with its implicit bit) into place, round to nearest even.
  const uint32_t exp = a >> 23;
  const uint32_t man = (a & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - exp;  // 14..24
  uint32_t q = man >> shift;
  const uint32_t rem = man & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (q & 1u))) ++q;
  return uint16_t(sign | q);
}

// Load/store one element of any dtype as float.
inline float load_as_float(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::Float32: return static_cast<const float*>(p)[i];
    case DType::Float16: return fp16_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::BFloat16: return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
  }
  return 0.f;
}

inline void store_from_float(void* p, DType t, int64_t i, float v) {
  switch (t) {
    case DType::Float32: static_cast<float*>(p)[i] = v; break;
    case DType::Float16: static_cast<uint16_t*>(p)[i] = float_to_fp16(v); break;
    case DType::BFloat16: static_cast<uint16_t*>(p)[i] = float_to_bf16(v); break;
  }
}

}  // namespace loraops
