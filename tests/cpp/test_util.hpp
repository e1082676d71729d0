// Helpers for the C++ tests: owned host tensors of any dtype filled with random values, views
// over them (strided, transposed), poisoning, and comparison against a reference result.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "loraops/loraops.hpp"

namespace loraops::test {

// Storage for a tensor of any dtype, kept as raw bytes.
struct HostTensor {
  DType dtype = DType::Float32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;

  HostTensor() = default;
  HostTensor(DType t, std::vector<int64_t> s) : dtype(t), shape(std::move(s)) {
    bytes.assign(size_t(numel() * dtype_size(t)) + 16, 0);
  }
  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  void* data() { return bytes.data(); }
  float get(int64_t i) const { return load_as_float(bytes.data(), dtype, i); }
  void set(int64_t i, float v) { store_from_float(bytes.data(), dtype, i, v); }
  // A contiguous view.
  Tensor view() { return Tensor::contiguous(data(), dtype, int(shape.size()), shape.data()); }
};

inline std::mt19937& rng() {
  static std::mt19937 g(1234);
  return g;
}

// Uniform in [lo, hi), rounded to the dtype.
inline HostTensor random_tensor(DType t, std::vector<int64_t> shape, float lo = -1.f, float hi = 1.f) {
  HostTensor h(t, std::move(shape));
  std::uniform_real_distribution<float> u(lo, hi);
  for (int64_t i = 0; i < h.numel(); ++i) h.set(i, u(rng()));
  return h;
}

// NaN everywhere: an element a kernel forgot to write stays NaN and fails the comparison.
inline void poison(HostTensor& h) {
  for (int64_t i = 0; i < h.numel(); ++i) h.set(i, std::nanf(""));
}

// Machine epsilon of each dtype (the unit roundoff is half of it).
inline double eps_of(DType t) {
  switch (t) {
    case DType::Float32: return 1.1920929e-07;
    case DType::Float16: return 9.765625e-04;
    case DType::BFloat16: return 7.8125e-03;
  }
  return 0;
}

// |got - ref| <= atol + rtol*|ref| elementwise, with NaN matching NaN and inf matching inf of
// the same sign. Reports the first few mismatches.
inline ::testing::AssertionResult all_close(const HostTensor& got, const HostTensor& ref,
                                            double atol, double rtol) {
  if (got.numel() != ref.numel())
    return ::testing::AssertionFailure() << "size " << got.numel() << " vs " << ref.numel();
  int bad = 0;
  std::string msg;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double g = got.get(i), r = ref.get(i);
    bool ok;
    if (std::isnan(r)) ok = std::isnan(g);
    else if (std::isinf(r)) ok = g == r;
    else ok = std::isfinite(g) && std::fabs(g - r) <= atol + rtol * std::fabs(r);
    if (!ok && bad++ < 5)
      msg += " [" + std::to_string(i) + "] got " + std::to_string(g) + " want " + std::to_string(r) + ";";
  }
  if (bad) return ::testing::AssertionFailure() << bad << " mismatches:" << msg;
  return ::testing::AssertionSuccess();
}

inline const DType kAllDTypes[] = {DType::Float32, DType::Float16, DType::BFloat16};

}  // namespace loraops::test
