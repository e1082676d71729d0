// Element types, devices and the float16/bfloat16 <-> float32 conversions every backend shares.
#pragma once

#include <bit>
#include <cstdint>

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
// Written out by hand rather than through _Float16/__bf16, so every compiler and host gives the
// same bits; written as selects rather than branches, so a loop of them vectorises (the CPU
// kernels convert whole rows with these). Checked over every half and every float.

namespace detail {
inline uint32_t select_u32(bool c, uint32_t a, uint32_t b) {
  const uint32_t m = 0u - uint32_t(c);
  return (a & m) | (b & ~m);
}
}  // namespace detail

inline float bits_to_float(uint32_t u) { return std::bit_cast<float>(u); }
inline uint32_t float_to_bits(float f) { return std::bit_cast<uint32_t>(f); }

inline float bf16_to_float(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }

inline uint16_t float_to_bf16(float f) {
  const uint32_t u = float_to_bits(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;  // to nearest even
  // NaN: keep it NaN (quiet bit set) rather than letting the rounding carry it to inf.
  return uint16_t(detail::select_u32((u & 0x7fffffffu) > 0x7f800000u, (u >> 16) | 0x40u, rounded));
}

inline float fp16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;
  const uint32_t normal = (em << 13) + 0x38000000u;   // exponent rebiased by 127 - 15
  const uint32_t special = (em << 13) | 0x7f800000u;  // inf / NaN, payload kept
  // Subnormal half em * 2^-24, exactly: (2^-14 + em * 2^-24) - 2^-14.
  const uint32_t sub = float_to_bits(bits_to_float((em << 13) + 0x38800000u) - 0x1p-14f);
  return bits_to_float(sign | detail::select_u32(em >= 0x7c00u, special,
                                                 detail::select_u32(em < 0x400u, sub, normal)));
}

inline uint16_t float_to_fp16(float f) {
  const uint32_t u = float_to_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  const uint32_t nan = 0x7e00u | ((a >> 13) & 0x3ffu);
  const uint32_t normal = (a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u) >> 13;  // nearest even
  // Below the smallest normal half: adding 0.5 (whose ulp, 2^-24, is the subnormal step) rounds
  // |f| to nearest even on that grid, and leaves the multiple in the sum's low mantissa bits.
  const uint32_t sub = float_to_bits(bits_to_float(a) + 0.5f) - 0x3f000000u;
  const uint32_t mag = detail::select_u32(
      a > 0x7f800000u, nan,
      detail::select_u32(a >= 0x477ff000u, 0x7c00u,  // rounds to >= 65520: inf
                         detail::select_u32(a >= 0x38800000u, normal, sub)));
  return uint16_t(sign | mag);
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
