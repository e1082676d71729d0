// Bindings of the matrix ops: matmul, lora_forward, lora_backward, attention.
#include <optional>

#include "bindings.hpp"
#include "convert.hpp"

namespace loraops::py {

namespace {

nb::object matmul_py(nb::handle a, nb::handle b, bool trans_a, bool trans_b, double alpha,
                     double beta, nb::handle c, bool allow_tf32, nb::handle impl,
                     nb::handle alloc, uintptr_t stream, nb::handle bf16) {
  Call call("matmul", impl, alloc, stream, bf16);
  const Tensor at = call.input("a", a);
  const Tensor bt = call.input("b", b);
  Tensor ct;
  MatmulOptions opt;
  opt.trans_a = trans_a;
  opt.trans_b = trans_b;
  opt.alpha = alpha;
  opt.beta = beta;
  opt.c = call.optional_input("c", c, &ct) ? &ct : nullptr;
  opt.allow_tf32 = allow_tf32;
  Tensor out;
  nb::object result = call.output("out", matmul_shape(at, bt, opt), at, &out);
  {
    nb::gil_scoped_release unlocked;
    matmul(at, bt, opt, out, call.exec());
  }
  return result;
}

// Returns y, or (y, xa) with return_xa: xa = x@lora_a.T, [..., r], for lora_backward's xa.
nb::object lora_forward_py(nb::handle x, nb::handle weight, nb::handle lora_a, nb::handle lora_b,
                           double scale, nb::handle bias, bool return_xa, nb::handle impl,
                           nb::handle alloc, uintptr_t stream, nb::handle bf16) {
  Call call("lora_forward", impl, alloc, stream, bf16);
  const Tensor xt = call.input("x", x);
  const Tensor wt = call.input("weight", weight);
  const Tensor at = call.input("lora_a", lora_a);
  const Tensor bt = call.input("lora_b", lora_b);
  Tensor biast;
  const Tensor* bp = call.optional_input("bias", bias, &biast) ? &biast : nullptr;
  Tensor out;
  const Shape ys = lora_forward_shape(xt, wt, at, bt, bp);  // validates: lora_a is [r, K]
  nb::object result = call.output("out", ys, xt, &out);
  Tensor xa;
  nb::object xa_obj;
  if (return_xa) {  // x's leading dims, r
    Shape s = ys;
    s.dims[size_t(s.ndim - 1)] = at.size(0);
    xa_obj = call.output("xa", s, xt, &xa);
  }
  {
    nb::gil_scoped_release unlocked;
    lora_forward(xt, wt, at, bt, scale, bp, out, call.exec(), return_xa ? &xa : nullptr);
  }
  return return_xa ? nb::object(nb::make_tuple(result, xa_obj)) : result;
}

nb::tuple lora_backward_py(nb::handle grad_y, nb::handle x, nb::handle weight, nb::handle lora_a,
                           nb::handle lora_b, double scale, nb::handle xa, nb::handle impl,
                           nb::handle alloc, uintptr_t stream, nb::handle bf16) {
  Call call("lora_backward", impl, alloc, stream, bf16);
  const Tensor gt = call.input("grad_y", grad_y);
  const Tensor xt = call.input("x", x);
  const Tensor wt = call.input("weight", weight);
  const Tensor at = call.input("lora_a", lora_a);
  const Tensor bt = call.input("lora_b", lora_b);
  Tensor xat;
  const Tensor* xap = call.optional_input("xa", xa, &xat) ? &xat : nullptr;
  const LoraBackwardShapes s = lora_backward_shapes(gt, xt, wt, at, bt);
  Tensor gx, ga, gb;
  nb::object rx = call.output("grad_x", s.grad_x, xt, &gx);
  nb::object ra = call.output("grad_a", s.grad_a, xt, &ga);
  nb::object rb = call.output("grad_b", s.grad_b, xt, &gb);
  {
    nb::gil_scoped_release unlocked;
    lora_backward(gt, xt, wt, at, bt, scale, gx, ga, gb, call.exec(), xap);
  }
  return nb::make_tuple(rx, ra, rb);
}

nb::object attention_py(nb::handle q, nb::handle k, nb::handle v, bool causal, nb::handle scale,
                        nb::handle impl, nb::handle alloc, uintptr_t stream, nb::handle bf16) {
  Call call("attention", impl, alloc, stream, bf16);
  const Tensor qt = call.input("q", q);
  const Tensor kt = call.input("k", k);
  const Tensor vt = call.input("v", v);
  std::optional<double> sc;
  if (!scale.is_none()) {
    if (!PyFloat_Check(scale.ptr())) type_error("attention", "scale", "a float or None", scale);
    sc = PyFloat_AsDouble(scale.ptr());
  }
  Tensor out;
  nb::object result = call.output("out", attention_shape(qt, kt, vt), qt, &out);
  {
    nb::gil_scoped_release unlocked;
    attention(qt, kt, vt, causal, sc, out, call.exec());
  }
  return result;
}

}  // namespace

void bind_linalg(nb::module_& m) {
  m.def("matmul", &matmul_py, nb::arg("a").none(), nb::arg("b").none(), nb::arg("trans_a"),
        nb::arg("trans_b"), nb::arg("alpha"), nb::arg("beta"), nb::arg("c").none(),
        nb::arg("allow_tf32"), LORAOPS_CALL_ARGS);
  m.def("lora_forward", &lora_forward_py, nb::arg("x").none(), nb::arg("weight").none(),
        nb::arg("lora_a").none(), nb::arg("lora_b").none(), nb::arg("scale"),
        nb::arg("bias").none(), nb::arg("return_xa"), LORAOPS_CALL_ARGS);
  m.def("lora_backward", &lora_backward_py, nb::arg("grad_y").none(), nb::arg("x").none(),
        nb::arg("weight").none(), nb::arg("lora_a").none(), nb::arg("lora_b").none(),
        nb::arg("scale"), nb::arg("xa").none(), LORAOPS_CALL_ARGS);
  m.def("attention", &attention_py, nb::arg("q").none(), nb::arg("k").none(),
        nb::arg("v").none(), nb::arg("causal"), nb::arg("scale").none(), LORAOPS_CALL_ARGS);
}

}  // namespace loraops::py
