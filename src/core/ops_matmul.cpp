// Front end of matmul: out = alpha * op(a) @ op(b) + beta * c.
#include <string>

#include "core/registry.hpp"
#include "core/validate.hpp"

namespace loraops {

using namespace detail;

Shape matmul_shape(const Tensor& a, const Tensor& b, const MatmulOptions& opt) {
  Checker c{"matmul"};
  c.tensor(a, "a");
  c.rank(a, "a", 2, 3);
  c.input_like(b, "b", a, "a");
  if (b.ndim != a.ndim)
    c.fail(ErrorKind::Value, "b", "rank " + std::to_string(a.ndim) + " (as a)",
           "rank " + std::to_string(b.ndim) + " " + shape_str(b));
  const bool batched = a.ndim == 3;
  if (batched && b.size(0) != a.size(0))
    c.size(b, "b", 0, a.size(0), "batch " + std::to_string(a.size(0)) + " (as a)");
  const int64_t m = opt.trans_a ? a.size(-1) : a.size(-2);
  const int64_t k = opt.trans_a ? a.size(-2) : a.size(-1);
  const int64_t kb = opt.trans_b ? b.size(-1) : b.size(-2);
  const int64_t n = opt.trans_b ? b.size(-2) : b.size(-1);
  if (kb != k)
    c.fail(ErrorKind::Value, "b",
           std::string(opt.trans_b ? "op(b) = b.T" : "op(b) = b") + " with " + std::to_string(k) +
               " rows (op(a) has " + std::to_string(k) + " columns)",
           "shape " + shape_str(b) + (opt.trans_b ? " (trans_b=True)" : ""));
  Shape s;
  s.ndim = a.ndim;
  if (batched) s.dims[0] = a.size(0);
  s.dims[size_t(s.ndim - 2)] = m;
  s.dims[size_t(s.ndim - 1)] = n;
  if (opt.c) {
    c.input_like(*opt.c, "c", a, "a");
    bool same = opt.c->ndim == s.ndim;
    for (int d = 0; same && d < s.ndim; ++d) same = opt.c->shape[size_t(d)] == s.dims[size_t(d)];
    if (!same) c.fail(ErrorKind::Value, "c", "shape " + shape_str(s) + " (the output's)",
                      "shape " + shape_str(*opt.c));
  } else if (opt.beta != 0.0) {
    c.fail(ErrorKind::Value, "c", "a tensor when beta != 0", "None");
  }
  return s;
}

void matmul(const Tensor& a, const Tensor& b, const MatmulOptions& opt, const Tensor& out,
            const Exec& exec) {
  Checker c{"matmul"};
  const Shape s = matmul_shape(a, b, opt);
  c.output(out, "out", s, a.dtype, a.device);
  const bool batched = a.ndim == 3;
  MatmulParams p;
  p.dtype = a.dtype;
  p.device_index = a.device.index;
  p.batch = batched ? a.size(0) : 1;
  p.m = s.dims[size_t(s.ndim - 2)];
  p.n = s.dims[size_t(s.ndim - 1)];
  p.k = opt.trans_a ? a.size(-2) : a.size(-1);
  // Transposes are folded into the strides: op(a)[i][l] = a[i*a.rs + l*a.cs].
  const Tensor ta = opt.trans_a ? a.transposed(-1, -2) : a;
  const Tensor tb = opt.trans_b ? b.transposed(-1, -2) : b;
  p.a = MatView{ta.data, ta.stride(-2), ta.stride(-1)};
  p.b = MatView{tb.data, tb.stride(-2), tb.stride(-1)};
  p.a_bs = batched ? a.strides[0] : 0;
  p.b_bs = batched ? b.strides[0] : 0;
  if (opt.c && opt.beta != 0.0) {
    p.c = MatView{opt.c->data, opt.c->stride(-2), opt.c->stride(-1)};
    p.c_bs = batched ? opt.c->strides[0] : 0;
  }
  p.out = out.data;
  p.alpha = float(opt.alpha);
  p.beta = opt.c ? float(opt.beta) : 0.f;
  p.allow_tf32 = opt.allow_tf32;
  dispatch(OpId::Matmul, a.device, a.dtype, exec, p, out.numel() > 0);
}

}  // namespace loraops
