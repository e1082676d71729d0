#include "core/validate.hpp"

#include <cstdint>

namespace loraops::detail {

std::string dims_str(const int64_t* dims, int ndim) {
  std::string s = "[";
  for (int d = 0; d < ndim; ++d) {
    if (d) s += ", ";
    s += std::to_string(dims[d]);
  }
  return s + "]";
}

std::string shape_str(const Shape& s) { return dims_str(s.dims.data(), s.ndim); }

Shape shape_of(const Tensor& t) {
  Shape s;
  s.ndim = t.ndim;
  for (int d = 0; d < t.ndim; ++d) s.dims[size_t(d)] = t.shape[size_t(d)];
  return s;
}

void Checker::fail(ErrorKind kind, const char* arg, const std::string& expected,
                   const std::string& got) const {
  throw Error(kind, op, arg, expected, got);
}

void Checker::tensor(const Tensor& t, const char* arg) const {
  if (t.ndim < 0 || t.ndim > kMaxDims)
    fail(ErrorKind::Value, arg, "rank 0.." + std::to_string(kMaxDims),
         "rank " + std::to_string(t.ndim));
  if (unsigned(t.dtype) >= unsigned(kNumDTypes))
    fail(ErrorKind::Type, arg, "dtype float32, float16 or bfloat16",
         "dtype code " + std::to_string(unsigned(t.dtype)));
  if (unsigned(t.device.type) >= unsigned(kNumDeviceTypes) || t.device.index < 0)
    fail(ErrorKind::Value, arg, "a cpu or cuda device", "an unknown device");
  for (int d = 0; d < t.ndim; ++d)
    if (t.shape[size_t(d)] < 0)
      fail(ErrorKind::Value, arg, "non-negative sizes", "shape " + shape_str(t));
  if (t.numel() > 0) {
    if (!t.data) fail(ErrorKind::Value, arg, "a non-null data pointer", "null");
    if (reinterpret_cast<uintptr_t>(t.data) % uintptr_t(dtype_size(t.dtype)) != 0)
      fail(ErrorKind::Value, arg,
           "data aligned to " + std::to_string(dtype_size(t.dtype)) + " bytes",
           "a misaligned pointer");
  }
}

void Checker::rank(const Tensor& t, const char* arg, int min_rank, int max_rank) const {
  if (t.ndim >= min_rank && t.ndim <= max_rank) return;
  std::string want = min_rank == max_rank ? "rank " + std::to_string(min_rank)
                     : max_rank >= kMaxDims ? "rank >= " + std::to_string(min_rank)
                     : "rank " + std::to_string(min_rank) + ".." + std::to_string(max_rank);
  fail(ErrorKind::Value, arg, want, "rank " + std::to_string(t.ndim) + " " + shape_str(t));
}

void Checker::same_dtype(const Tensor& t, const char* arg, const Tensor& ref,
                         const char* ref_arg) const {
  if (t.dtype != ref.dtype)
    fail(ErrorKind::Type, arg, std::string("dtype ") + dtype_name(ref.dtype) + " (as " + ref_arg + ")",
         dtype_name(t.dtype));
}

namespace {
std::string device_str(Device d) {
  return d.type == DeviceType::CPU ? "cpu" : "cuda:" + std::to_string(d.index);
}
}  // namespace

void Checker::same_device(const Tensor& t, const char* arg, const Tensor& ref,
                          const char* ref_arg) const {
  if (!(t.device == ref.device))
    fail(ErrorKind::Value, arg, "device " + device_str(ref.device) + " (as " + ref_arg + ")",
         device_str(t.device));
}

void Checker::size(const Tensor& t, const char* arg, int d, int64_t want,
                   const std::string& what) const {
  if (t.size(d) != want) fail(ErrorKind::Value, arg, what, "shape " + shape_str(t));
}

void Checker::input_like(const Tensor& t, const char* arg, const Tensor& ref,
                         const char* ref_arg) const {
  tensor(t, arg);
  same_dtype(t, arg, ref, ref_arg);
  same_device(t, arg, ref, ref_arg);
}

void Checker::output(const Tensor& out, const char* arg, const Shape& shape, DType dtype,
                     Device device) const {
  tensor(out, arg);
  if (out.dtype != dtype)
    fail(ErrorKind::Type, arg, std::string("dtype ") + dtype_name(dtype), dtype_name(out.dtype));
  if (!(out.device == device))
    fail(ErrorKind::Value, arg, "device " + device_str(device), device_str(out.device));
  bool same = out.ndim == shape.ndim;
  for (int d = 0; same && d < shape.ndim; ++d) same = out.shape[size_t(d)] == shape.dims[size_t(d)];
  if (!same) fail(ErrorKind::Value, arg, "shape " + shape_str(shape), "shape " + shape_str(out));
  if (!out.is_contiguous())
    fail(ErrorKind::Value, arg, "a contiguous tensor", "strides " + dims_str(out.strides.data(), out.ndim));
}

int Checker::normalize_dim(int dim, int ndim, const char* arg) const {
  if (dim < -ndim || dim >= ndim)
    fail(ErrorKind::Value, arg,
         "a dim in [" + std::to_string(-ndim) + ", " + std::to_string(ndim - 1) + "]",
         std::to_string(dim));
  return dim < 0 ? dim + ndim : dim;
}

RowsView rows_view(const Tensor& t) {
  RowsView v;
  v.p = t.data;
  if (t.ndim == 0) {
    v.rows = 1;
    v.cols = 1;
    return v;
  }
  v.cols = t.shape[size_t(t.ndim - 1)];
  v.col_stride = t.strides[size_t(t.ndim - 1)];
  v.rows = 1;
  for (int d = 0; d < t.ndim - 1; ++d) v.rows *= t.shape[size_t(d)];
  if (v.rows == 0) return v;
  // Collapse leading dims, outermost first: drop size-1 dims; merge a dim into the previous
  // one when stride[prev] == stride[d] * shape[d].
  for (int d = 0; d < t.ndim - 1; ++d) {
    const int64_t s = t.shape[size_t(d)], st = t.strides[size_t(d)];
    if (s == 1) continue;
    if (v.nlead > 0 && v.lead_stride[size_t(v.nlead - 1)] == st * s) {
      v.lead_shape[size_t(v.nlead - 1)] *= s;
      v.lead_stride[size_t(v.nlead - 1)] = st;
    } else {
      v.lead_shape[size_t(v.nlead)] = s;
      v.lead_stride[size_t(v.nlead)] = st;
      ++v.nlead;
    }
  }
  return v;
}

Tensor move_dim_last(const Tensor& t, int d) {
  Tensor r = t;
  for (int i = d; i < t.ndim - 1; ++i) {
    r.shape[size_t(i)] = t.shape[size_t(i + 1)];
    r.strides[size_t(i)] = t.strides[size_t(i + 1)];
  }
  r.shape[size_t(t.ndim - 1)] = t.shape[size_t(d)];
  r.strides[size_t(t.ndim - 1)] = t.strides[size_t(d)];
  return r;
}

MatView mat_view(const Tensor& t) { return MatView{t.data, t.strides[0], t.strides[1]}; }

}  // namespace loraops::detail
