#include "loraops/tensor.hpp"

#include <utility>

namespace loraops {

Tensor Tensor::contiguous(void* data, DType dtype, int ndim, const int64_t* shape, Device device) {
  Tensor t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.ndim = ndim;
  int64_t stride = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    t.shape[size_t(d)] = shape[d];
    t.strides[size_t(d)] = stride;
    stride *= shape[d] > 0 ? shape[d] : 1;
  }
  return t;
}

Tensor Tensor::contiguous(void* data, DType dtype, std::initializer_list<int64_t> shape,
                          Device device) {
  return contiguous(data, dtype, int(shape.size()), shape.begin(), device);
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= shape[size_t(d)];
  return n;
}

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;  // no element to place: any strides will do
  int64_t expected = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    if (shape[size_t(d)] == 1) continue;  // a size-1 dim's stride never matters
    if (strides[size_t(d)] != expected) return false;
    expected *= shape[size_t(d)];
  }
  return true;
}

Tensor Tensor::transposed(int d0, int d1) const {
  Tensor t = *this;
  if (d0 < 0) d0 += ndim;
  if (d1 < 0) d1 += ndim;
  std::swap(t.shape[size_t(d0)], t.shape[size_t(d1)]);
  std::swap(t.strides[size_t(d0)], t.strides[size_t(d1)]);
  return t;
}

std::string shape_str(const Tensor& t) {
  std::string s = "[";
  for (int d = 0; d < t.ndim; ++d) {
    if (d) s += ", ";
    s += std::to_string(t.shape[size_t(d)]);
  }
  return s + "]";
}

}  // namespace loraops
