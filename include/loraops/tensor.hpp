// A non-owning view of a strided tensor: data pointer, dtype, device, shape and strides.
// Strides count elements (not bytes), may be zero or negative, and need not be contiguous.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "loraops/dtype.hpp"

namespace loraops {

inline constexpr int kMaxDims = 8;

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::Float32;
  Device device{};
  int ndim = 0;
  std::array<int64_t, kMaxDims> shape{};
  std::array<int64_t, kMaxDims> strides{};

  // A contiguous (row-major) view of `data`.
  static Tensor contiguous(void* data, DType dtype, std::initializer_list<int64_t> shape,
                           Device device = {});
  static Tensor contiguous(void* data, DType dtype, int ndim, const int64_t* shape,
                           Device device = {});

  int64_t numel() const;
  // Size / stride of dimension d; negative d counts from the end (-1 is the last).
  int64_t size(int d) const { return shape[size_t(d < 0 ? d + ndim : d)]; }
  int64_t stride(int d) const { return strides[size_t(d < 0 ? d + ndim : d)]; }
  bool is_contiguous() const;
  bool empty() const { return numel() == 0; }
  // The same data seen with dims d0 and d1 swapped.
  Tensor transposed(int d0, int d1) const;
};

// "[2, 3, 4]" for messages.
std::string shape_str(const Tensor& t);

}  // namespace loraops
