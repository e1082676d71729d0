// The row operations (softmax, rms_norm, layer_norm, activation) on the CPU: the reference
// against hand-computed values, then every other implementation against the reference through
// the public API, over dtypes, row lengths, strided views, special values and bad arguments.
#include <cmath>
#include <cstring>
#include <functional>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace loraops::test {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

// ---- the ops under test, as one table ----------------------------------------------------------

enum class Family { Softmax, RmsNorm, LayerNorm, Activation };

struct Op {
  Family family;
  Activation kind = Activation::Relu;  // Family::Activation only
  const char* name;
};

const Op kOps[] = {
    {Family::Softmax, Activation::Relu, "softmax"},
    {Family::RmsNorm, Activation::Relu, "rms_norm"},
    {Family::LayerNorm, Activation::Relu, "layer_norm"},
    {Family::Activation, Activation::Relu, "relu"},
    {Family::Activation, Activation::Sigmoid, "sigmoid"},
    {Family::Activation, Activation::Tanh, "tanh"},
    {Family::Activation, Activation::Gelu, "gelu"},
    {Family::Activation, Activation::GeluTanh, "gelu_tanh"},
    {Family::Activation, Activation::Silu, "silu"},
};

const Op& op_named(const std::string& name) {
  for (const Op& op : kOps)
    if (name == op.name) return op;
  throw std::runtime_error("no op " + name);
}

// The arguments besides x and out.
struct Args {
  int dim = -1;                   // softmax
  const Tensor* weight = nullptr;  // norms
  const Tensor* bias = nullptr;    // layer_norm
  double eps = 1e-5;               // norms
};

void call(const Op& op, const Tensor& x, const Args& a, const Tensor& out, Impl impl) {
  const Exec ex{.impl = impl};
  switch (op.family) {
    case Family::Softmax: return softmax(x, a.dim, out, ex);
    case Family::RmsNorm: return rms_norm(x, a.weight, a.eps, out, ex);
    case Family::LayerNorm: return layer_norm(x, a.weight, a.bias, a.eps, out, ex);
    case Family::Activation: return activation(x, op.kind, out, ex);
  }
}

std::vector<int64_t> shape_vec(const Tensor& t) {
  return std::vector<int64_t>(t.shape.begin(), t.shape.begin() + t.ndim);
}

// A fresh output of x's shape and dtype, NaN everywhere, the op run into it.
HostTensor run(const Op& op, const Tensor& x, const Args& a, Impl impl) {
  HostTensor out(x.dtype, shape_vec(x));
  poison(out);
  call(op, x, a, out.view(), impl);
  return out;
}

struct Tol {
  double atol, rtol;
};
// fp32: a few units in the 5th digit (fp32 accumulation vs fp64); halves: the result is rounded
// to the dtype by both sides, so they may differ by an ulp or so of the dtype.
Tol tol_of(DType t) {
  if (t == DType::Float32) return {10 * eps_of(t), 1e-5};
  return {eps_of(t), 2 * eps_of(t)};
}

::testing::AssertionResult close(const HostTensor& got, const HostTensor& ref) {
  const Tol tol = tol_of(got.dtype);
  return all_close(got, ref, tol.atol, tol.rtol);
}

::testing::AssertionResult same_bits(const HostTensor& a, const HostTensor& b) {
  const size_t n = size_t(a.numel() * dtype_size(a.dtype));
  if (a.numel() == b.numel() && std::memcmp(a.bytes.data(), b.bytes.data(), n) == 0)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "outputs differ bitwise";
}

// Inputs in a range that exercises each op: activations reach their tails, layer_norm sees a
// non-zero mean.
HostTensor input_for(const Op& op, DType t, std::vector<int64_t> shape) {
  switch (op.family) {
    case Family::Softmax: return random_tensor(t, std::move(shape), -4.f, 4.f);
    case Family::RmsNorm: return random_tensor(t, std::move(shape), -2.f, 2.f);
    case Family::LayerNorm: return random_tensor(t, std::move(shape), 1.f, 3.f);
    case Family::Activation: return random_tensor(t, std::move(shape), -6.f, 6.f);
  }
  return {};
}

// weight/bias variants a norm is run with: (has weight, has bias).
std::vector<std::pair<bool, bool>> affine_variants(const Op& op) {
  if (op.family == Family::RmsNorm) return {{false, false}, {true, false}};
  if (op.family == Family::LayerNorm) return {{false, false}, {true, false}, {false, true}, {true, true}};
  return {{false, false}};
}

// Runs op with `impl` and with the reference on the same input and compares them; for
// Impl::Auto also checks that it ran the custom kernel (bit-identical results).
void expect_matches_reference(const Op& op, const Tensor& x, Impl impl, const Tensor* weight,
                              const Tensor* bias, int dim = -1) {
  Args a;
  a.dim = dim;
  a.weight = weight;
  a.bias = bias;
  const HostTensor ref = run(op, x, a, Impl::Reference);
  const HostTensor got = run(op, x, a, impl);
  EXPECT_TRUE(close(got, ref));
  if (impl == Impl::Auto) EXPECT_TRUE(same_bits(got, run(op, x, a, Impl::Custom)));
}

// ---- strided inputs ---------------------------------------------------------------------------

enum class Layout {
  Contiguous, Transposed, Sliced, NegativeColStride, PermutedLead, ZeroColStride, ZeroRowStride
};

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::Contiguous: return "contiguous";
    case Layout::Transposed: return "transposed";
    case Layout::Sliced: return "sliced";
    case Layout::NegativeColStride: return "negative col stride";
    case Layout::PermutedLead: return "permuted leading dims";
    case Layout::ZeroColStride: return "zero col stride";
    case Layout::ZeroRowStride: return "zero row stride";
  }
  return "?";
}

// Storage plus a view of logical shape `shape` laid out as `layout` over it.
struct Input {
  HostTensor store;
  Tensor view;
};

Input make_input(const Op& op, DType t, const std::vector<int64_t>& shape, Layout layout) {
  Input in;
  const int nd = int(shape.size());
  std::vector<int64_t> s = shape;
  switch (layout) {
    case Layout::Contiguous:
      in.store = input_for(op, t, s);
      in.view = in.store.view();
      break;
    case Layout::Transposed:  // the last two dims swapped: col stride = the row count
      std::swap(s[size_t(nd - 1)], s[size_t(nd - 2)]);
      in.store = input_for(op, t, s);
      in.view = in.store.view().transposed(-1, -2);
      break;
    case Layout::Sliced: {  // columns 3..3+cols of wider rows: row stride > cols
      s[size_t(nd - 1)] += 7;
      in.store = input_for(op, t, s);
      in.view = in.store.view();
      in.view.shape[size_t(nd - 1)] = shape[size_t(nd - 1)];
      in.view.data = static_cast<char*>(in.store.data()) + 3 * dtype_size(t);
      break;
    }
    case Layout::NegativeColStride: {  // each row read back to front
      in.store = input_for(op, t, s);
      in.view = in.store.view();
      in.view.data = static_cast<char*>(in.store.data()) + (s[size_t(nd - 1)] - 1) * dtype_size(t);
      in.view.strides[size_t(nd - 1)] = -1;
      break;
    }
    case Layout::PermutedLead:  // dims 0 and 1 of a 3-D tensor swapped: rows not evenly spaced
      std::swap(s[0], s[1]);
      in.store = input_for(op, t, s);
      in.view = in.store.view().transposed(0, 1);
      break;
    case Layout::ZeroColStride:  // each row one value, broadcast along it
      in.store = input_for(op, t, s);
      in.view = in.store.view();
      in.view.strides[size_t(nd - 1)] = 0;
      break;
    case Layout::ZeroRowStride:  // one row, broadcast down the rows
      in.store = input_for(op, t, s);
      in.view = in.store.view();
      for (int d = 0; d < nd - 1; ++d) in.view.strides[size_t(d)] = 0;
      break;
  }
  return in;
}

// ---- the reference against values computed by hand ---------------------------------------

HostTensor from_values(DType t, std::vector<int64_t> shape, const std::vector<float>& v) {
  HostTensor h(t, std::move(shape));
  for (size_t i = 0; i < v.size(); ++i) h.set(int64_t(i), v[i]);
  return h;
}

void expect_values(const HostTensor& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.numel(), int64_t(want.size()));
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got.get(int64_t(i)), want[i], tol) << i;
}

TEST(RowsReference, SoftmaxByHand) {
  HostTensor x = from_values(DType::Float32, {2, 2}, {0.f, std::log(3.f), 5.f, 5.f});
  expect_values(run(op_named("softmax"), x.view(), {}, Impl::Reference), {0.25, 0.75, 0.5, 0.5}, 1e-7);
}

TEST(RowsReference, RmsNormByHand) {
  HostTensor x = from_values(DType::Float32, {1, 2}, {3.f, 4.f});
  HostTensor w = from_values(DType::Float32, {2}, {2.f, 0.5f});
  const double r = 1.0 / std::sqrt(12.5);
  Args a;
  a.eps = 0;
  expect_values(run(op_named("rms_norm"), x.view(), a, Impl::Reference), {3 * r, 4 * r}, 1e-7);
  Tensor wv = w.view();
  a.weight = &wv;
  expect_values(run(op_named("rms_norm"), x.view(), a, Impl::Reference), {6 * r, 2 * r}, 1e-7);
}

TEST(RowsReference, LayerNormByHand) {
  HostTensor x = from_values(DType::Float32, {1, 3}, {1.f, 2.f, 3.f});
  HostTensor w = from_values(DType::Float32, {3}, {1.f, 2.f, 3.f});
  HostTensor b = from_values(DType::Float32, {3}, {0.f, 1.f, 0.f});
  const double s = std::sqrt(1.5);  // 1/sqrt(var) with var = 2/3
  Args a;
  a.eps = 0;
  expect_values(run(op_named("layer_norm"), x.view(), a, Impl::Reference), {-s, 0, s}, 1e-6);
  Tensor wv = w.view(), bv = b.view();
  a.weight = &wv;
  a.bias = &bv;
  expect_values(run(op_named("layer_norm"), x.view(), a, Impl::Reference), {-s, 1, 3 * s}, 1e-6);
  // eps is added to the variance: var 2/3 + 1/3 = 1 gives plain x - mean.
  a.weight = a.bias = nullptr;
  a.eps = 1.0 / 3.0;
  expect_values(run(op_named("layer_norm"), x.view(), a, Impl::Reference), {-1, 0, 1}, 1e-6);
}

TEST(RowsReference, ActivationsByHand) {
  HostTensor x = from_values(DType::Float32, {2}, {1.f, -2.f});
  const std::pair<const char*, std::vector<double>> want[] = {
      {"relu", {1.0, 0.0}},
      {"sigmoid", {0.7310585786300049, 0.11920292202211755}},
      {"tanh", {0.7615941559557649, -0.9640275800758169}},
      {"gelu", {0.8413447460685429, -0.04550026389635842}},
      {"gelu_tanh", {0.8411919906082768, -0.04540230591222494}},
      {"silu", {0.7310585786300049, -0.2384058440442351}},
  };
  for (const auto& [name, v] : want) {
    SCOPED_TRACE(name);
    expect_values(run(op_named(name), x.view(), {}, Impl::Reference), v, 1e-7);
  }
}

// ---- every op x dtype x impl against the reference ------------------------------------------

struct Case {
  int op;  // index into kOps
  DType dtype;
  Impl impl;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return std::string(kOps[info.param.op].name) + "_" + dtype_name(info.param.dtype) + "_" +
         impl_name(info.param.impl);
}

// Every (op, dtype, impl) for the ops of the given families (all when none are given).
std::vector<Case> cases_of(std::initializer_list<Family> families = {}) {
  std::vector<Case> cases;
  for (int op = 0; op < int(std::size(kOps)); ++op) {
    bool wanted = families.size() == 0;
    for (Family f : families) wanted = wanted || kOps[op].family == f;
    if (!wanted) continue;
    for (DType t : kAllDTypes)
      for (Impl impl : {Impl::Custom, Impl::Auto}) cases.push_back({op, t, impl});
  }
  return cases;
}

class RowsVsReference : public ::testing::TestWithParam<Case> {
 protected:
  const Op& op() const { return kOps[GetParam().op]; }
  DType dtype() const { return GetParam().dtype; }
  Impl impl() const { return GetParam().impl; }

  // Runs every weight/bias variant of the op on x.
  void check(const Tensor& x, Tensor* weight_view = nullptr) {
    const int64_t cols = x.ndim ? x.size(-1) : 1;
    HostTensor w = random_tensor(dtype(), {cols}, 0.5f, 1.5f);
    HostTensor b = random_tensor(dtype(), {cols}, -0.5f, 0.5f);
    Tensor wv = weight_view ? *weight_view : w.view();
    Tensor bv = b.view();
    for (auto [has_w, has_b] : affine_variants(op())) {
      SCOPED_TRACE(std::string("weight ") + (has_w ? "yes" : "no") + ", bias " + (has_b ? "yes" : "no"));
      expect_matches_reference(op(), x, impl(), has_w ? &wv : nullptr, has_b ? &bv : nullptr);
    }
  }
};

TEST_P(RowsVsReference, RowLengthsAndCounts) {
  for (int64_t rows : {1, 3, 17})
    for (int64_t cols : {1, 31, 33, 1023, 2049, 4099}) {
      SCOPED_TRACE("shape [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
      HostTensor x = input_for(op(), dtype(), {rows, cols});
      check(x.view());
    }
}

TEST_P(RowsVsReference, OneDimAndThreeDim) {
  HostTensor x1 = input_for(op(), dtype(), {257});
  check(x1.view());
  HostTensor x3 = input_for(op(), dtype(), {2, 5, 129});
  check(x3.view());
}

TEST_P(RowsVsReference, StridedViews) {
  for (Layout layout : {Layout::Transposed, Layout::Sliced, Layout::NegativeColStride,
                        Layout::PermutedLead, Layout::ZeroColStride, Layout::ZeroRowStride}) {
    for (int64_t cols : {33, 1023}) {
      SCOPED_TRACE(std::string(layout_name(layout)) + ", cols " + std::to_string(cols));
      const std::vector<int64_t> shape = layout == Layout::PermutedLead
                                             ? std::vector<int64_t>{3, 5, cols}
                                             : std::vector<int64_t>{17, cols};
      Input in = make_input(op(), dtype(), shape, layout);
      check(in.view);
    }
  }
}

TEST_P(RowsVsReference, InPlace) {
  // out may be x itself: every kernel reads an element before writing it.
  HostTensor x = input_for(op(), dtype(), {9, 1023});
  HostTensor y = x;
  Args a;
  const HostTensor want = run(op(), x.view(), a, impl());
  call(op(), y.view(), a, y.view(), impl());
  EXPECT_TRUE(same_bits(y, want));
}

INSTANTIATE_TEST_SUITE_P(Cpu, RowsVsReference, ::testing::ValuesIn(cases_of()), case_name);

class NormsVsReference : public RowsVsReference {};

TEST_P(NormsVsReference, StridedWeight) {
  // Every other element of a longer array, and the same read backwards.
  const int64_t cols = 65;
  HostTensor x = input_for(op(), dtype(), {4, cols});
  HostTensor wstore = random_tensor(dtype(), {2 * cols}, 0.5f, 1.5f);
  Tensor w = Tensor::contiguous(wstore.data(), dtype(), {cols});
  w.strides[0] = 2;
  check(x.view(), &w);
  w.data = static_cast<char*>(wstore.data()) + (2 * cols - 1) * dtype_size(dtype());
  w.strides[0] = -2;
  check(x.view(), &w);
}

INSTANTIATE_TEST_SUITE_P(Cpu, NormsVsReference,
                         ::testing::ValuesIn(cases_of({Family::RmsNorm, Family::LayerNorm})),
                         case_name);

class SoftmaxVsReference : public RowsVsReference {};

TEST_P(SoftmaxVsReference, EveryDim) {
  HostTensor x = input_for(op(), dtype(), {5, 7, 33});
  for (int dim : {0, 1, 2, -1, -2, -3}) {
    SCOPED_TRACE("dim " + std::to_string(dim));
    expect_matches_reference(op(), x.view(), impl(), nullptr, nullptr, dim);
    // The reference normalises along `dim`: every fibre along it sums to 1.
    Args a;
    a.dim = dim;
    const HostTensor y = run(op(), x.view(), a, Impl::Reference);
    const int d = dim < 0 ? dim + 3 : dim;
    const int64_t sizes[3] = {5, 7, 33}, strides[3] = {7 * 33, 33, 1};
    const int o1 = d == 0 ? 1 : 0, o2 = d == 2 ? 1 : 2;  // the other two dims
    for (int64_t i = 0; i < sizes[o1]; ++i)
      for (int64_t k = 0; k < sizes[o2]; ++k) {
        double s = 0;
        for (int64_t j = 0; j < sizes[d]; ++j) s += y.get(i * strides[o1] + k * strides[o2] + j * strides[d]);
        EXPECT_NEAR(s, 1.0, eps_of(dtype()));  // each entry rounded by at most eps/2 of itself
      }
  }
}

INSTANTIATE_TEST_SUITE_P(Cpu, SoftmaxVsReference, ::testing::ValuesIn(cases_of({Family::Softmax})),
                         case_name);

// ---- special values ---------------------------------------------------------------------------

class RowsSpecialValues : public ::testing::TestWithParam<DType> {};

// Every implementation that exists on the CPU for these ops, the reference included.
constexpr Impl kCpuImpls[] = {Impl::Reference, Impl::Custom, Impl::Auto};

TEST_P(RowsSpecialValues, Softmax) {
  const DType t = GetParam();
  const float ln3 = std::log(3.f);
  const float big = t == DType::Float16 ? 60000.f : 1e30f;
  // Each row with its expected result (NaN: all NaN).
  const std::vector<std::pair<std::vector<float>, std::vector<float>>> rows = {
      {{-kInf, -kInf, -kInf, -kInf}, {0, 0, 0, 0}},          // no mass anywhere: zeros, not NaN
      {{-kInf, 0.f, -kInf, ln3}, {0, 0.25f, 0, 0.75f}},       // -inf entries get 0
      {{0.f, kNaN, 1.f, 2.f}, {kNaN, kNaN, kNaN, kNaN}},      // NaN in, NaN row out
      {{-kInf, kNaN, -kInf, -kInf}, {kNaN, kNaN, kNaN, kNaN}},
      {{kNaN, kNaN, kNaN, kNaN}, {kNaN, kNaN, kNaN, kNaN}},
      {{0.f, kInf, 1.f, -kInf}, {kNaN, kNaN, kNaN, kNaN}},    // +inf: inf - inf, as PyTorch
      {{big, 0.f, -big, big}, {0.5f, 0, 0, 0.5f}},            // no overflow from exp
      {{-big, -big, -big, -big}, {0.25f, 0.25f, 0.25f, 0.25f}},
  };
  std::vector<float> xs, want;
  for (const auto& [x, y] : rows) {
    xs.insert(xs.end(), x.begin(), x.end());
    want.insert(want.end(), y.begin(), y.end());
  }
  HostTensor x = from_values(t, {int64_t(rows.size()), 4}, xs);
  HostTensor expect = from_values(t, {int64_t(rows.size()), 4}, want);
  for (Impl impl : kCpuImpls) {
    SCOPED_TRACE(impl_name(impl));
    // ln 3 itself is rounded to the dtype: halves get a couple of their eps.
    const double atol = t == DType::Float32 ? 1e-7 : 2 * eps_of(t);
    EXPECT_TRUE(all_close(run(op_named("softmax"), x.view(), {}, impl), expect, atol, 0));
  }
}

TEST_P(RowsSpecialValues, SoftmaxRowsSumToOne) {
  const DType t = GetParam();
  HostTensor x = random_tensor(t, {17, 4099}, -10.f, 10.f);
  for (Impl impl : kCpuImpls) {
    SCOPED_TRACE(impl_name(impl));
    const HostTensor y = run(op_named("softmax"), x.view(), {}, impl);
    for (int64_t i = 0; i < 17; ++i) {
      double s = 0;
      for (int64_t j = 0; j < 4099; ++j) s += y.get(i * 4099 + j);
      // Each of the entries is rounded to the dtype: the sum is off by at most half an ulp of
      // each, which for a sum of 1 is at most eps/2 relative on the whole.
      EXPECT_NEAR(s, 1.0, t == DType::Float32 ? 1e-5 : eps_of(t)) << "row " << i;
    }
  }
}

TEST_P(RowsSpecialValues, Activations) {
  const DType t = GetParam();
  const std::vector<float> xs = {-kInf, -1000.f, -100.f, -20.f, -10.f, -3.f, -1.f, -1e-3f, -0.f,
                                 0.f,   1e-3f,   1.f,    3.f,   10.f,  20.f, 100.f, 1000.f, kInf,
                                 kNaN};
  HostTensor x = from_values(t, {int64_t(xs.size())}, xs);
  auto at = [&](float v) {
    for (size_t i = 0; i < xs.size(); ++i)
      if (xs[i] == v || (std::isnan(v) && std::isnan(xs[i]))) return int64_t(i);
    return int64_t(-1);
  };
  for (int k = 0; k < kNumActivations; ++k) {
    const Op op{Family::Activation, Activation(k), activation_name(Activation(k))};
    SCOPED_TRACE(op.name);
    const HostTensor ref = run(op, x.view(), {}, Impl::Reference);
    for (Impl impl : {Impl::Custom, Impl::Auto}) {
      SCOPED_TRACE(impl_name(impl));
      EXPECT_TRUE(close(run(op, x.view(), {}, impl), ref));
    }
    // The tails, in the reference (the others agree with it above): NaN passes through, and
    // nothing overflows to NaN.
    EXPECT_TRUE(std::isnan(ref.get(at(kNaN))));
    const Activation a = Activation(k);
    const bool gated = a == Activation::Silu || a == Activation::Gelu || a == Activation::GeluTanh;
    if (a == Activation::Sigmoid) {
      EXPECT_EQ(ref.get(at(-1000.f)), 0.f);
      EXPECT_EQ(ref.get(at(-kInf)), 0.f);
      EXPECT_EQ(ref.get(at(1000.f)), 1.f);
      EXPECT_EQ(ref.get(at(kInf)), 1.f);
    }
    if (a == Activation::Tanh) {
      EXPECT_EQ(ref.get(at(-kInf)), -1.f);
      EXPECT_EQ(ref.get(at(kInf)), 1.f);
    }
    if (a == Activation::Relu || gated) {
      EXPECT_EQ(ref.get(at(-1000.f)), 0.f);
      EXPECT_EQ(ref.get(at(-kInf)), 0.f);  // the limit, not -inf * 0 = NaN
      EXPECT_EQ(ref.get(at(1000.f)), 1000.f);
      EXPECT_EQ(ref.get(at(kInf)), kInf);
    }
  }
}

TEST_P(RowsSpecialValues, NormsAgreeOnNonFiniteRows) {
  const DType t = GetParam();
  HostTensor x = random_tensor(t, {4, 40});
  x.set(0 * 40 + 7, kNaN);
  x.set(1 * 40 + 0, kInf);  // first element: layer_norm's shift point
  x.set(2 * 40 + 9, -kInf);
  for (const char* name : {"rms_norm", "layer_norm"}) {
    SCOPED_TRACE(name);
    const HostTensor ref = run(op_named(name), x.view(), {}, Impl::Reference);
    for (int64_t j = 0; j < 40; ++j) EXPECT_TRUE(std::isnan(ref.get(j)));  // the NaN row
    for (Impl impl : {Impl::Custom, Impl::Auto}) {
      SCOPED_TRACE(impl_name(impl));
      EXPECT_TRUE(close(run(op_named(name), x.view(), {}, impl), ref));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cpu, RowsSpecialValues, ::testing::ValuesIn(kAllDTypes),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(RowsCustom, LayerNormFarFromZeroKeepsItsDigits) {
  // 1e4 + noise of unit size: E[x^2] - E[x]^2 would lose every digit of the variance in fp32,
  // and a mean rounded to a float near 1e4 would be off by up to 5e-4.
  HostTensor x = random_tensor(DType::Float32, {8, 4099}, -1.f, 1.f);
  for (int64_t i = 0; i < x.numel(); ++i) x.set(i, 1e4f + x.get(i));
  const HostTensor ref = run(op_named("layer_norm"), x.view(), {}, Impl::Reference);
  EXPECT_TRUE(close(run(op_named("layer_norm"), x.view(), {}, Impl::Custom), ref));
}

TEST(RowsCustom, LayerNormShiftPointFarFromTheMean) {
  // The shift point x[0] far from the rest of its row (rows of [1, 3]): x - x0 and the mean of
  // x - x0 round at 2^-24 of |x - x0| and |mean - x0|, not of the row's spread, so the write must
  // subtract the mean from x itself (carried as two floats). The float32 kernel lost ~2-9e-6
  // here against 2.2e-6 allowed (2026-11-30).
  for (int64_t cols : {1000, 16384}) {
    SCOPED_TRACE(cols);
    HostTensor x = random_tensor(DType::Float32, {3, cols}, 1.f, 3.f);
    const float x0[] = {60.f, -1e4f, 2.f + 4.2f * 0.57735f};
    for (int64_t row = 0; row < 3; ++row) x.set(row * cols, x0[row]);
    const HostTensor ref = run(op_named("layer_norm"), x.view(), {}, Impl::Reference);
    EXPECT_TRUE(close(run(op_named("layer_norm"), x.view(), {}, Impl::Custom), ref));
  }
}

TEST(RowsCustom, HalfLoadsAndStoresAreExact) {
  // relu of every float16/bfloat16 bit pattern returns it unchanged (or 0): the custom kernels'
  // own half<->float conversions, contiguous and strided, lose nothing and keep inf and NaN.
  for (DType t : {DType::Float16, DType::BFloat16}) {
    SCOPED_TRACE(dtype_name(t));
    HostTensor x(t, {256, 256});
    for (int64_t i = 0; i < x.numel(); ++i) std::memcpy(x.bytes.data() + 2 * i, &i, 2);
    const Tensor views[] = {x.view(), x.view().transposed(0, 1)};
    for (const Tensor& v : views) {
      const HostTensor y = run(op_named("relu"), v, {}, Impl::Custom);
      for (int64_t i = 0; i < 256; ++i)
        for (int64_t j = 0; j < 256; ++j) {
          const float in = x.get(i * v.strides[0] + j * v.strides[1]);
          const float got = y.get(i * 256 + j);
          if (std::isnan(in)) {
            ASSERT_TRUE(std::isnan(got)) << i << "," << j;
          } else {
            ASSERT_EQ(got, in < 0 ? 0.f : in) << i << "," << j;
          }
        }
    }
  }
}

TEST(RowsCustom, EmptyInputs) {
  for (const Op& op : kOps)
    for (Impl impl : kCpuImpls) {
      SCOPED_TRACE(std::string(op.name) + " " + impl_name(impl));
      for (std::vector<int64_t> shape : {std::vector<int64_t>{0, 5}, {3, 0}, {2, 0, 4}}) {
        HostTensor x(DType::Float32, shape);
        HostTensor out(DType::Float32, shape);
        EXPECT_NO_THROW(call(op, x.view(), {}, out.view(), impl));
      }
    }
}

TEST(RowsCustom, ZeroDimTensor) {
  // A 0-d tensor is one element to the activations (the norms and softmax need a dim).
  HostTensor x = from_values(DType::Float32, {}, {2.f});
  for (Impl impl : kCpuImpls) {
    SCOPED_TRACE(impl_name(impl));
    const HostTensor y = run(op_named("silu"), x.view(), {}, impl);
    EXPECT_NEAR(y.get(0), 2.0 / (1.0 + std::exp(-2.0)), 1e-6);
  }
}

// ---- bad arguments ------------------------------------------------------------------------

void expect_error(const std::function<void()>& f, ErrorKind kind, const std::string& argument) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one naming " << argument;
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), argument) << e.what();
    EXPECT_EQ(int(e.kind()), int(kind)) << e.what();
  }
}

TEST(RowsErrors, NoVendorRowOpsOnTheCpu) {
  HostTensor x = random_tensor(DType::Float32, {3, 8});
  HostTensor out(DType::Float32, {3, 8});
  for (const Op& op : kOps) {
    SCOPED_TRACE(op.name);
    expect_error([&] { call(op, x.view(), {}, out.view(), Impl::Vendor); }, ErrorKind::Unsupported,
                 "impl");
    // Also for an empty tensor: no silent substitution there either.
    HostTensor e(DType::Float32, {0, 8});
    expect_error([&] { call(op, e.view(), {}, e.view(), Impl::Vendor); }, ErrorKind::Unsupported,
                 "impl");
  }
}

TEST(RowsErrors, BadEps) {
  HostTensor x = random_tensor(DType::Float32, {3, 8});
  HostTensor out(DType::Float32, {3, 8});
  for (const char* name : {"rms_norm", "layer_norm"})
    for (double eps : {-1e-6, double(kInf), double(kNaN)}) {
      SCOPED_TRACE(std::string(name) + " eps " + std::to_string(eps));
      Args a;
      a.eps = eps;
      expect_error([&] { call(op_named(name), x.view(), a, out.view(), Impl::Custom); },
                   ErrorKind::Value, "eps");
    }
}

TEST(RowsErrors, BadWeightOrBias) {
  HostTensor x = random_tensor(DType::Float32, {3, 8});
  HostTensor out(DType::Float32, {3, 8});
  HostTensor too_long = random_tensor(DType::Float32, {9});
  HostTensor wrong_dtype = random_tensor(DType::BFloat16, {8});
  HostTensor two_d = random_tensor(DType::Float32, {1, 8});
  const std::pair<HostTensor*, ErrorKind> bad[] = {
      {&too_long, ErrorKind::Value}, {&wrong_dtype, ErrorKind::Type}, {&two_d, ErrorKind::Value}};
  for (const auto& [h, kind] : bad) {
    Tensor v = h->view();
    SCOPED_TRACE("affine " + shape_str(v) + " " + dtype_name(v.dtype));
    Args a;
    a.weight = &v;
    expect_error([&] { call(op_named("rms_norm"), x.view(), a, out.view(), Impl::Custom); }, kind,
                 "weight");
    expect_error([&] { call(op_named("layer_norm"), x.view(), a, out.view(), Impl::Custom); },
                 kind, "weight");
    Args b;
    b.bias = &v;
    expect_error([&] { call(op_named("layer_norm"), x.view(), b, out.view(), Impl::Custom); },
                 kind, "bias");
  }
}

TEST(RowsErrors, BadOutput) {
  HostTensor x = random_tensor(DType::Float32, {3, 8});
  HostTensor wrong_shape(DType::Float32, {3, 9});
  HostTensor wrong_dtype(DType::Float16, {3, 8});
  HostTensor wide(DType::Float32, {8, 3});
  const Tensor strided = wide.view().transposed(0, 1);  // [3, 8], not contiguous
  for (const Op& op : kOps) {
    SCOPED_TRACE(op.name);
    expect_error([&] { call(op, x.view(), {}, wrong_shape.view(), Impl::Custom); },
                 ErrorKind::Value, "out");
    expect_error([&] { call(op, x.view(), {}, wrong_dtype.view(), Impl::Custom); },
                 ErrorKind::Type, "out");
    expect_error([&] { call(op, x.view(), {}, strided, Impl::Custom); }, ErrorKind::Value, "out");
  }
}

TEST(RowsErrors, SoftmaxDimOutOfRange) {
  HostTensor x = random_tensor(DType::Float32, {3, 8});
  HostTensor out(DType::Float32, {3, 8});
  for (int dim : {2, -3, 100}) {
    Args a;
    a.dim = dim;
    expect_error([&] { call(op_named("softmax"), x.view(), a, out.view(), Impl::Custom); },
                 ErrorKind::Value, "dim");
  }
}

TEST(RowsErrors, UnknownActivationKind) {
  HostTensor x = random_tensor(DType::Float32, {3, 8});
  HostTensor out(DType::Float32, {3, 8});
  expect_error([&] { activation(x.view(), Activation(kNumActivations), out.view()); },
               ErrorKind::Value, "kind");
}

}  // namespace
}  // namespace loraops::test
