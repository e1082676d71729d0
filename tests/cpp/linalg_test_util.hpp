// Helpers for the matmul / LoRA / attention tests: operands laid out in awkward ways (padded rows,
// transposed storage, negative strides, non-collapsible leading dims), the implementations to
// check, tolerances, and output checks (poison before, no NaN left, nothing written past the end).
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace loraops::test {

// How an operand's storage is laid out behind its logical shape [..., R, C].
enum class Layout {
  Contig,      // row-major
  Padded,      // rows of C+5 elements, the view starting 2 in: a column slice of a wider matrix
  Transposed,  // stored as [..., C, R] and viewed transposed: column stride R, row stride 1
  Flipped,     // rows in reverse order: a negative row stride
  Gappy,       // dim -2 padded by 2 in storage: leading dims that do not collapse (rank >= 3)
  RowPad,      // rows of round_up(C, 8) + 8 elements from an aligned start: 16-byte aligned rows
  Shifted,     // contiguous, but starting one element in (aligned only to the element)
  Odd,         // rows of C+3 elements, one element in
};

inline const char* layout_name(Layout l) {
  switch (l) {
    case Layout::Contig:
      return "contig";
    case Layout::Padded:
      return "padded";
    case Layout::Transposed:
      return "transposed";
    case Layout::Flipped:
      return "flipped";
    case Layout::Gappy:
      return "gappy";
    case Layout::RowPad:
      return "row-padded";
    case Layout::Shifted:
      return "shifted";
    case Layout::Odd:
      return "odd";
  }
  return "?";
}

// A random operand: its storage and a view of it with the logical shape.
struct Operand {
  HostTensor storage;
  Tensor view;
};

inline Operand make_operand(DType t, std::vector<int64_t> shape, Layout layout = Layout::Contig,
                            float lo = -1.f, float hi = 1.f) {
  const int nd = int(shape.size());
  std::vector<int64_t> st = shape;
  int64_t offset = 0;
  if (nd >= 2 && layout == Layout::Transposed) std::swap(st[size_t(nd - 1)], st[size_t(nd - 2)]);
  if (layout == Layout::Padded) st[size_t(nd - 1)] += 5, offset = 2;
  if (nd >= 2 && layout == Layout::Gappy) st[size_t(nd - 2)] += 2;
  if (layout == Layout::RowPad) st[size_t(nd - 1)] = (shape[size_t(nd - 1)] + 7) / 8 * 8 + 8;
  if (layout == Layout::Odd) st[size_t(nd - 1)] += 3, offset = 1;
  if (layout == Layout::Shifted) st[0] += 1, offset = 1;  // room for the shift
  Operand o{random_tensor(t, st, lo, hi), {}};
  Tensor v = o.storage.view();
  if (nd >= 2 && layout == Layout::Transposed) v = v.transposed(-1, -2);
  for (int d = 0; d < nd; ++d) v.shape[size_t(d)] = shape[size_t(d)];
  if (layout == Layout::Shifted) v = Tensor::contiguous(v.data, t, nd, shape.data());
  if (nd >= 2 && layout == Layout::Flipped && shape[size_t(nd - 2)] > 0) {
    offset = (shape[size_t(nd - 2)] - 1) * v.strides[size_t(nd - 2)];
    v.strides[size_t(nd - 2)] = -v.strides[size_t(nd - 2)];
  }
  v.data = static_cast<uint8_t*>(v.data) + offset * dtype_size(t);
  o.view = v;
  return o;
}

// lead + [last]: a shape with its last dim appended.
inline std::vector<int64_t> with_last(std::vector<int64_t> lead, int64_t last) {
  lead.push_back(last);
  return lead;
}

// Sets of dtypes as bits, for case tables that run only some of them.
constexpr unsigned kF32 = 1, kF16 = 2, kBF16 = 4, kHalves = kF16 | kBF16, kAll = 7;
inline unsigned bit(DType t) {
  return t == DType::Float32 ? kF32 : t == DType::Float16 ? kF16 : kBF16;
}

// A 1-D operand of n elements `stride` apart.
inline Operand make_vector(DType t, int64_t n, int64_t stride = 1) {
  Operand o{random_tensor(t, {std::max<int64_t>(n * stride, 1)}), {}};
  o.view = o.storage.view();
  o.view.shape[0] = n;
  o.view.strides[0] = stride;
  return o;
}

// An output buffer of `shape`, poisoned with NaN.
inline HostTensor poisoned(DType t, std::vector<int64_t> shape) {
  HostTensor h(t, std::move(shape));
  poison(h);
  return h;
}

// The implementations compared to the reference: vendor (when this build has a BLAS), custom,
// and auto.
inline std::vector<Impl> impls_under_test() {
  std::vector<Impl> v;
  if (built_with_blas()) v.push_back(Impl::Vendor);
  v.push_back(Impl::Custom);
  v.push_back(Impl::Auto);
  return v;
}

// Tolerance for results that are sums of `depth` products of O(1) inputs. fp32: fp32-vs-fp64
// accumulation, a few 1e-5 of the result's typical size (which grows like sqrt(depth)). Halves:
// both sides round the result to the dtype once, so they may differ by one ulp (2 ulps allowed),
// plus the same accumulation slack.
struct Tol {
  double atol, rtol;
};
inline Tol tol_for(DType t, double depth, double magnitude = 1.0) {
  const double s = std::sqrt(std::max(depth, 1.0)) * magnitude;
  if (t == DType::Float32) return {2e-5 * s, 2e-5};
  return {2e-5 * s, 2.0 * eps_of(t)};
}

// The bytes past a HostTensor's elements are zero when allocated: still zero means nothing
// wrote past the end of the output.
inline bool tail_intact(const HostTensor& h) {
  const size_t used = size_t(h.numel() * dtype_size(h.dtype));
  return std::all_of(h.bytes.begin() + ptrdiff_t(used), h.bytes.end(),
                     [](uint8_t b) { return b == 0; });
}

inline ::testing::AssertionResult matches(const HostTensor& got, const HostTensor& ref, Tol tol) {
  if (!tail_intact(got)) return ::testing::AssertionFailure() << "wrote past the end of the output";
  return all_close(got, ref, tol.atol, tol.rtol);
}

inline std::string trace(const std::string& name, DType t, Impl impl) {
  return name + " dtype=" + dtype_name(t) + " impl=" + impl_name(impl);
}

// f() throws loraops::Error of this kind naming this argument.
template <class F>
void expect_error(F&& f, ErrorKind kind, const char* argument) {
  try {
    f();
    ADD_FAILURE() << "no error, expected one naming " << argument;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_EQ(e.argument(), argument) << e.what();
  }
}

}  // namespace loraops::test
