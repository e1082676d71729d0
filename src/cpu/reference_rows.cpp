// The reference row operations: plain loops over any strided view, every value and every sum in
// fp64, each result rounded once to the output dtype. This is the oracle the tests compare every
// other implementation to, so it is written for obviousness, not speed.
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/common.hpp"
#include "cpu/kernels.hpp"

namespace loraops::cpu {

namespace {

// Calls f(x, y) for every row, with x the row as doubles and y the row to fill.
template <class F>
void for_each_row(const RowParams& p, F f) {
  const int64_t n = p.x.cols;
  std::vector<double> x(static_cast<size_t>(n)), y(static_cast<size_t>(n));
  for (int64_t i = 0; i < p.x.rows; ++i) {
    const void* xr = at(p.x.p, p.dtype, p.x.row_offset(i));
    for (int64_t j = 0; j < n; ++j) x[size_t(j)] = ldd(xr, p.dtype, j * p.x.col_stride);
    f(x, y);
    void* yr = at(p.out.p, p.dtype, p.out.row_offset(i));
    for (int64_t j = 0; j < n; ++j) st(yr, p.dtype, j * p.out.col_stride, float(y[size_t(j)]));
  }
}

// weight[j] / bias[j] as a double, or `none` when absent.
double affine(const void* v, int64_t stride, DType t, int64_t j, double none) {
  return v ? ldd(v, t, j * stride) : none;
}

}  // namespace

void softmax_reference(const RowParams& p, void*) {
  for_each_row(p, [](const std::vector<double>& x, std::vector<double>& y) {
    const size_t n = x.size();
    bool has_nan = false;
    double m = -std::numeric_limits<double>::infinity();
    for (double v : x) {
      has_nan = has_nan || std::isnan(v);
      if (v > m) m = v;
    }
    if (has_nan) {  // NaN anywhere: the whole row is NaN (as PyTorch)
      for (size_t j = 0; j < n; ++j) y[j] = std::numeric_limits<double>::quiet_NaN();
      return;
    }
    if (m == -std::numeric_limits<double>::infinity()) {  // every entry -inf: no mass anywhere
      for (size_t j = 0; j < n; ++j) y[j] = 0.0;
      return;
    }
    // m = +inf is left to the formula: inf - inf = NaN makes the row NaN, as in PyTorch.
    double sum = 0.0;
    for (size_t j = 0; j < n; ++j) sum += (y[j] = std::exp(x[j] - m));
    for (size_t j = 0; j < n; ++j) y[j] /= sum;
  });
}

void rms_norm_reference(const RowParams& p, void*) {
  for_each_row(p, [&p](const std::vector<double>& x, std::vector<double>& y) {
    const size_t n = x.size();
    double ss = 0.0;
    for (double v : x) ss += v * v;
    const double r = 1.0 / std::sqrt(ss / double(n) + double(p.eps));
    for (size_t j = 0; j < n; ++j)
      y[j] = x[j] * r * affine(p.weight, p.weight_stride, p.dtype, int64_t(j), 1.0);
  });
}

void layer_norm_reference(const RowParams& p, void*) {
  for_each_row(p, [&p](const std::vector<double>& x, std::vector<double>& y) {
    const size_t n = x.size();
    // Two passes over the held row: the mean first, then the squared deviations from it.
    double sum = 0.0;
    for (double v : x) sum += v;
    const double mean = sum / double(n);
    double ss = 0.0;
    for (double v : x) ss += (v - mean) * (v - mean);
    const double var = ss / double(n);  // population variance, as PyTorch's layer_norm
    const double r = 1.0 / std::sqrt(var + double(p.eps));
    for (size_t j = 0; j < n; ++j)
      y[j] = (x[j] - mean) * r * affine(p.weight, p.weight_stride, p.dtype, int64_t(j), 1.0) +
             affine(p.bias, p.bias_stride, p.dtype, int64_t(j), 0.0);
  });
}

namespace {

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }  // exp overflow gives 0: right

// x times a factor that tends to 0 as x -> -inf and to 1 as x -> +inf (silu, gelu, gelu_tanh).
// At +-inf the product is taken as its limit (inf, 0), not as inf * 0 = NaN.
double gated(double x, double factor) {
  if (std::isinf(x)) return x > 0 ? x : 0.0;
  return x * factor;
}

double activate(Activation kind, double x) {
  constexpr double kSqrt2 = 1.41421356237309504880;
  constexpr double kSqrt2OverPi = 0.79788456080286535588;
  switch (kind) {
    case Activation::Relu: return x < 0 ? 0.0 : x;  // NaN is not < 0: it passes through
    case Activation::Sigmoid: return sigmoid(x);
    case Activation::Tanh: return std::tanh(x);
    // Phi(x) = (1 + erf(x/sqrt2))/2, written with erfc so the left tail keeps its digits.
    case Activation::Gelu: return gated(x, 0.5 * std::erfc(-x / kSqrt2));
    case Activation::GeluTanh:
      return gated(x, 0.5 * (1.0 + std::tanh(kSqrt2OverPi * (x + 0.044715 * x * x * x))));
    case Activation::Silu: return gated(x, sigmoid(x));
  }
  return std::numeric_limits<double>::quiet_NaN();
}

}  // namespace

void activation_reference(const RowParams& p, void*) {
  for_each_row(p, [&p](const std::vector<double>& x, std::vector<double>& y) {
    for (size_t j = 0; j < x.size(); ++j) y[j] = activate(p.kind, x[j]);
  });
}

}  // namespace loraops::cpu
