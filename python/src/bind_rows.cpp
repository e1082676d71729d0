// Bindings of the row operations: softmax, rms_norm, layer_norm, activation.
#include "bindings.hpp"
#include "convert.hpp"

namespace loraops::py {

namespace {

nb::object softmax_py(nb::handle x, int dim, nb::handle impl, nb::handle alloc, uintptr_t stream,
                      nb::handle bf16) {
  Call call("softmax", impl, alloc, stream, bf16);
  const Tensor xt = call.input("x", x);
  Tensor out;
  nb::object result = call.output("out", softmax_shape(xt, dim), xt, &out);
  {
    nb::gil_scoped_release unlocked;
    softmax(xt, dim, out, call.exec());
  }
  return result;
}

nb::object rms_norm_py(nb::handle x, nb::handle weight, double eps, nb::handle impl,
                       nb::handle alloc, uintptr_t stream, nb::handle bf16) {
  Call call("rms_norm", impl, alloc, stream, bf16);
  const Tensor xt = call.input("x", x);
  Tensor wt;
  const Tensor* w = call.optional_input("weight", weight, &wt) ? &wt : nullptr;
  Tensor out;
  nb::object result = call.output("out", rms_norm_shape(xt, w), xt, &out);
  {
    nb::gil_scoped_release unlocked;
    rms_norm(xt, w, eps, out, call.exec());
  }
  return result;
}

nb::object layer_norm_py(nb::handle x, nb::handle weight, nb::handle bias, double eps,
                         nb::handle impl, nb::handle alloc, uintptr_t stream, nb::handle bf16) {
  Call call("layer_norm", impl, alloc, stream, bf16);
  const Tensor xt = call.input("x", x);
  Tensor wt, bt;
  const Tensor* w = call.optional_input("weight", weight, &wt) ? &wt : nullptr;
  const Tensor* b = call.optional_input("bias", bias, &bt) ? &bt : nullptr;
  Tensor out;
  nb::object result = call.output("out", layer_norm_shape(xt, w, b), xt, &out);
  {
    nb::gil_scoped_release unlocked;
    layer_norm(xt, w, b, eps, out, call.exec());
  }
  return result;
}

nb::object activation_py(nb::handle x, nb::handle kind, nb::handle impl, nb::handle alloc,
                         uintptr_t stream, nb::handle bf16) {
  Call call("activation", impl, alloc, stream, bf16);
  const Activation k = activation_arg(kind);
  const Tensor xt = call.input("x", x);
  Tensor out;
  nb::object result = call.output("out", activation_shape(xt), xt, &out);
  {
    nb::gil_scoped_release unlocked;
    activation(xt, k, out, call.exec());
  }
  return result;
}

}  // namespace

void bind_rows(nb::module_& m) {
  m.def("softmax", &softmax_py, nb::arg("x").none(), nb::arg("dim"), LORAOPS_CALL_ARGS);
  m.def("rms_norm", &rms_norm_py, nb::arg("x").none(), nb::arg("weight").none(), nb::arg("eps"),
        LORAOPS_CALL_ARGS);
  m.def("layer_norm", &layer_norm_py, nb::arg("x").none(), nb::arg("weight").none(),
        nb::arg("bias").none(), nb::arg("eps"), LORAOPS_CALL_ARGS);
  m.def("activation", &activation_py, nb::arg("x").none(), nb::arg("kind").none(),
        LORAOPS_CALL_ARGS);
}

}  // namespace loraops::py
