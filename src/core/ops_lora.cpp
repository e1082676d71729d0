// Front ends of lora_forward and lora_backward.
#include <string>

#include "core/registry.hpp"
#include "core/validate.hpp"

namespace loraops {

using namespace detail;

namespace {

struct LoraDims {
  int64_t k, n, r;
};

// weight:[N,K] lora_a:[r,K] lora_b:[N,r], K taken from x's last dim.
LoraDims check_lora_weights(const Checker& c, const Tensor& x, const char* x_arg,
                            const Tensor& weight, const Tensor& lora_a, const Tensor& lora_b) {
  const int64_t k = x.size(-1);
  const std::string ks = std::to_string(k);
  c.input_like(weight, "weight", x, x_arg);
  c.rank(weight, "weight", 2, 2);
  c.size(weight, "weight", 1, k, "shape [N, " + ks + "] (K = x's last dim)");
  const int64_t n = weight.size(0);
  const std::string ns = std::to_string(n);
  c.input_like(lora_a, "lora_a", x, x_arg);
  c.rank(lora_a, "lora_a", 2, 2);
  c.size(lora_a, "lora_a", 1, k, "shape [r, " + ks + "] (K = x's last dim)");
  const int64_t r = lora_a.size(0);
  const std::string rs = std::to_string(r);
  c.input_like(lora_b, "lora_b", x, x_arg);
  c.rank(lora_b, "lora_b", 2, 2);
  c.size(lora_b, "lora_b", 0, n, "shape [" + ns + ", " + rs + "] (N from weight, r from lora_a)");
  c.size(lora_b, "lora_b", 1, r, "shape [" + ns + ", " + rs + "] (N from weight, r from lora_a)");
  return {k, n, r};
}

// x's shape with r for its last dim: the shape of x@lora_a.T.
Shape xa_shape(const Tensor& x, int64_t r) {
  Shape s = shape_of(x);
  s.dims[size_t(s.ndim - 1)] = r;
  return s;
}

}  // namespace

Shape lora_forward_shape(const Tensor& x, const Tensor& weight, const Tensor& lora_a,
                         const Tensor& lora_b, const Tensor* bias) {
  Checker c{"lora_forward"};
  c.tensor(x, "x");
  c.rank(x, "x", 1, kMaxDims);
  const LoraDims d = check_lora_weights(c, x, "x", weight, lora_a, lora_b);
  if (bias) {
    c.input_like(*bias, "bias", x, "x");
    c.rank(*bias, "bias", 1, 1);
    c.size(*bias, "bias", 0, d.n, "shape [" + std::to_string(d.n) + "] (N from weight)");
  }
  Shape s = shape_of(x);
  s.dims[size_t(s.ndim - 1)] = d.n;
  return s;
}

void lora_forward(const Tensor& x, const Tensor& weight, const Tensor& lora_a,
                  const Tensor& lora_b, double scale, const Tensor* bias, const Tensor& out,
                  const Exec& exec, const Tensor* xa_out) {
  Checker c{"lora_forward"};
  const Shape s = lora_forward_shape(x, weight, lora_a, lora_b, bias);
  c.output(out, "out", s, x.dtype, x.device);
  if (xa_out) c.output(*xa_out, "xa_out", xa_shape(x, lora_a.size(0)), x.dtype, x.device);
  LoraForwardParams p;
  p.dtype = x.dtype;
  p.device_index = x.device.index;
  p.x = rows_view(x);
  p.m = p.x.rows;
  p.k = x.size(-1);
  p.n = weight.size(0);
  p.r = lora_a.size(0);
  p.weight = mat_view(weight);
  p.lora_a = mat_view(lora_a);
  p.lora_b = mat_view(lora_b);
  if (bias) p.bias = bias->data, p.bias_stride = bias->strides[0];
  p.scale = float(scale);
  p.out = out.data;
  if (xa_out) p.xa_out = xa_out->data;
  const bool run = out.numel() > 0 || (xa_out && xa_out->numel() > 0);
  dispatch(OpId::LoraForward, x.device, x.dtype, exec, p, run);
}

LoraBackwardShapes lora_backward_shapes(const Tensor& grad_y, const Tensor& x,
                                        const Tensor& weight, const Tensor& lora_a,
                                        const Tensor& lora_b) {
  Checker c{"lora_backward"};
  c.tensor(x, "x");
  c.rank(x, "x", 1, kMaxDims);
  const LoraDims d = check_lora_weights(c, x, "x", weight, lora_a, lora_b);
  c.input_like(grad_y, "grad_y", x, "x");
  bool same = grad_y.ndim == x.ndim && grad_y.size(-1) == d.n;
  for (int i = 0; same && i < x.ndim - 1; ++i) same = grad_y.shape[size_t(i)] == x.shape[size_t(i)];
  if (!same) {
    Shape want = shape_of(x);
    want.dims[size_t(want.ndim - 1)] = d.n;
    c.fail(ErrorKind::Value, "grad_y", "shape " + shape_str(want) + " (x's leading dims, N)",
           "shape " + shape_str(grad_y));
  }
  LoraBackwardShapes s;
  s.grad_x = shape_of(x);
  s.grad_a = shape_of(lora_a);
  s.grad_b = shape_of(lora_b);
  return s;
}

void lora_backward(const Tensor& grad_y, const Tensor& x, const Tensor& weight,
                   const Tensor& lora_a, const Tensor& lora_b, double scale,
                   const Tensor& grad_x, const Tensor& grad_a, const Tensor& grad_b,
                   const Exec& exec, const Tensor* xa) {
  Checker c{"lora_backward"};
  const LoraBackwardShapes s = lora_backward_shapes(grad_y, x, weight, lora_a, lora_b);
  if (xa) {
    c.input_like(*xa, "xa", x, "x");
    const Shape want = xa_shape(x, lora_a.size(0));
    bool same = xa->ndim == want.ndim;
    for (int i = 0; same && i < want.ndim; ++i) same = xa->shape[size_t(i)] == want.dims[size_t(i)];
    if (!same)
      c.fail(ErrorKind::Value, "xa", "shape " + shape_str(want) + " (x's leading dims, r)",
             "shape " + shape_str(*xa));
  }
  c.output(grad_x, "grad_x", s.grad_x, x.dtype, x.device);
  c.output(grad_a, "grad_a", s.grad_a, x.dtype, x.device);
  c.output(grad_b, "grad_b", s.grad_b, x.dtype, x.device);
  LoraBackwardParams p;
  p.dtype = x.dtype;
  p.device_index = x.device.index;
  p.grad_y = rows_view(grad_y);
  p.x = rows_view(x);
  p.m = p.x.rows;
  p.k = x.size(-1);
  p.n = weight.size(0);
  p.r = lora_a.size(0);
  p.weight = mat_view(weight);
  p.lora_a = mat_view(lora_a);
  p.lora_b = mat_view(lora_b);
  p.scale = float(scale);
  p.grad_x = grad_x.data;
  p.grad_a = grad_a.data;
  p.grad_b = grad_b.data;
  if (xa && xa->numel() > 0) p.xa = rows_view(*xa);
  const bool run = grad_x.numel() > 0 || grad_a.numel() > 0 || grad_b.numel() > 0;
  dispatch(OpId::LoraBackward, x.device, x.dtype, exec, p, run);
}

}  // namespace loraops
