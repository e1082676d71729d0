// Argument checks shared by every op's front end, and the conversion of checked Tensors into the
// raw views (RowsView, MatView) the kernels take. Every failure names the op and the argument.
#pragma once

#include <string>

#include "core/params.hpp"
#include "loraops/error.hpp"
#include "loraops/ops.hpp"

namespace loraops::detail {

std::string dims_str(const int64_t* dims, int ndim);
std::string shape_str(const Shape& s);

struct Checker {
  const char* op;

  [[noreturn]] void fail(ErrorKind kind, const char* arg, const std::string& expected,
                         const std::string& got) const;

  // Well-formed view: rank 0..8, sizes >= 0, a known dtype and device, a non-null pointer
  // aligned to the element size when it has elements.
  void tensor(const Tensor& t, const char* arg) const;
  void rank(const Tensor& t, const char* arg, int min_rank, int max_rank) const;
  void same_dtype(const Tensor& t, const char* arg, const Tensor& ref, const char* ref_arg) const;
  void same_device(const Tensor& t, const char* arg, const Tensor& ref, const char* ref_arg) const;
  // t.size(d) == want, else "expected <what>".
  void size(const Tensor& t, const char* arg, int d, int64_t want, const std::string& what) const;
  // An input with the reference's dtype and device.
  void input_like(const Tensor& t, const char* arg, const Tensor& ref, const char* ref_arg) const;
  // A caller-allocated output: contiguous, of this shape, dtype and device.
  void output(const Tensor& out, const char* arg, const Shape& shape, DType dtype,
              Device device) const;
  int normalize_dim(int dim, int ndim, const char* arg) const;
};

Shape shape_of(const Tensor& t);

// t seen as rows over its last dim (a 0-d tensor is one row of one element). Leading dims are
// collapsed where the strides allow, so contiguous and row-strided tensors give nlead <= 1.
RowsView rows_view(const Tensor& t);
// The tensor with dim `d` moved to the end (a free view change).
Tensor move_dim_last(const Tensor& t, int d);
MatView mat_view(const Tensor& t);  // t is 2-D

}  // namespace loraops::detail
