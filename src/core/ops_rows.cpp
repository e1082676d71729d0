// Front ends of the row operations: softmax, rms_norm, layer_norm, activation.
#include <cmath>

#include "core/registry.hpp"
#include "core/validate.hpp"

namespace loraops {

using namespace detail;

namespace {

RowParams row_params(const Tensor& x, const Tensor& out) {
  RowParams p;
  p.dtype = x.dtype;
  p.device_index = x.device.index;
  p.x = rows_view(x);
  p.out = rows_view(out);
  return p;
}

void check_eps(const Checker& c, double eps) {
  if (!(eps >= 0.0) || !std::isfinite(eps))
    c.fail(ErrorKind::Value, "eps", "a finite eps >= 0", std::to_string(eps));
}

// weight/bias of a norm: 1-D, of the last dim's size, x's dtype and device.
void check_affine(const Checker& c, const Tensor& x, const Tensor* t, const char* arg) {
  if (!t) return;
  c.input_like(*t, arg, x, "x");
  c.rank(*t, arg, 1, 1);
  c.size(*t, arg, 0, x.size(-1), "shape [" + std::to_string(x.size(-1)) + "] (x's last dim)");
}

}  // namespace

Shape softmax_shape(const Tensor& x, int dim) {
  Checker c{"softmax"};
  c.tensor(x, "x");
  c.rank(x, "x", 1, kMaxDims);
  c.normalize_dim(dim, x.ndim, "dim");
  return shape_of(x);
}

void softmax(const Tensor& x, int dim, const Tensor& out, const Exec& exec) {
  Checker c{"softmax"};
  const Shape s = softmax_shape(x, dim);
  c.output(out, "out", s, x.dtype, x.device);
  const int d = c.normalize_dim(dim, x.ndim, "dim");
  RowParams p = row_params(move_dim_last(x, d), move_dim_last(out, d));
  dispatch(OpId::Softmax, x.device, x.dtype, exec, p, out.numel() > 0);
}

Shape rms_norm_shape(const Tensor& x, const Tensor* weight) {
  Checker c{"rms_norm"};
  c.tensor(x, "x");
  c.rank(x, "x", 1, kMaxDims);
  check_affine(c, x, weight, "weight");
  return shape_of(x);
}

void rms_norm(const Tensor& x, const Tensor* weight, double eps, const Tensor& out,
              const Exec& exec) {
  Checker c{"rms_norm"};
  const Shape s = rms_norm_shape(x, weight);
  check_eps(c, eps);
  c.output(out, "out", s, x.dtype, x.device);
  RowParams p = row_params(x, out);
  if (weight) p.weight = weight->data, p.weight_stride = weight->strides[0];
  p.eps = float(eps);
  dispatch(OpId::RmsNorm, x.device, x.dtype, exec, p, out.numel() > 0);
}

Shape layer_norm_shape(const Tensor& x, const Tensor* weight, const Tensor* bias) {
  Checker c{"layer_norm"};
  c.tensor(x, "x");
  c.rank(x, "x", 1, kMaxDims);
  check_affine(c, x, weight, "weight");
  check_affine(c, x, bias, "bias");
  return shape_of(x);
}

void layer_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, double eps,
                const Tensor& out, const Exec& exec) {
  Checker c{"layer_norm"};
  const Shape s = layer_norm_shape(x, weight, bias);
  check_eps(c, eps);
  c.output(out, "out", s, x.dtype, x.device);
  RowParams p = row_params(x, out);
  if (weight) p.weight = weight->data, p.weight_stride = weight->strides[0];
  if (bias) p.bias = bias->data, p.bias_stride = bias->strides[0];
  p.eps = float(eps);
  dispatch(OpId::LayerNorm, x.device, x.dtype, exec, p, out.numel() > 0);
}

Shape activation_shape(const Tensor& x) {
  Checker c{"activation"};
  c.tensor(x, "x");
  return shape_of(x);
}

void activation(const Tensor& x, Activation kind, const Tensor& out, const Exec& exec) {
  Checker c{"activation"};
  const Shape s = activation_shape(x);
  if (unsigned(kind) >= unsigned(kNumActivations))
    c.fail(ErrorKind::Value, "kind", "one of relu, sigmoid, tanh, gelu, gelu_tanh, silu",
           "kind code " + std::to_string(unsigned(kind)));
  c.output(out, "out", s, x.dtype, x.device);
  RowParams p = row_params(x, out);
  p.kind = kind;
  dispatch(OpId::Activation, x.device, x.dtype, exec, p, out.numel() > 0);
}

}  // namespace loraops
