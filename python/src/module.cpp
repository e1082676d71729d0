// loraops._ext: the nanobind module. Maps loraops::Error onto Python exceptions and exposes
// introspection; the ops themselves are bound in bind_rows.cpp and bind_linalg.cpp.
#include <nanobind/nanobind.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>

#include <string>
#include <utility>

#include "bindings.hpp"
#include "convert.hpp"
#include "loraops/loraops.hpp"

namespace nb = nanobind;
using namespace loraops;

namespace {

PyObject* g_unsupported = nullptr;  // loraops.UnsupportedError, owned by the module

PyObject* python_type(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::Value: return PyExc_ValueError;
    case ErrorKind::Type: return PyExc_TypeError;
    case ErrorKind::Unsupported: return g_unsupported;
    case ErrorKind::Runtime: return PyExc_RuntimeError;
  }
  return PyExc_RuntimeError;
}

// Raises the mapped type with e.what() as its message and the parts as attributes, so callers
// can test exc.argument instead of parsing the text.
void raise(const Error& e) {
  PyObject* type = python_type(e.kind());
  PyObject* inst = PyObject_CallFunction(type, "s", e.what());
  if (!inst) return;  // the call set its own error
  const std::pair<const char*, const std::string*> parts[] = {
      {"op", &e.op()}, {"argument", &e.argument()}, {"expected", &e.expected()}, {"got", &e.got()}};
  for (const auto& [name, value] : parts) {
    PyObject* s = PyUnicode_FromStringAndSize(value->data(), Py_ssize_t(value->size()));
    if (s) PyObject_SetAttrString(inst, name, s);
    Py_XDECREF(s);
  }
  PyErr_SetObject(type, inst);
  Py_DECREF(inst);
}

DeviceType parse_device(const std::string& s) {
  const std::string base = s.substr(0, s.find(':'));
  for (int i = 0; i < kNumDeviceTypes; ++i)
    if (base == device_type_name(DeviceType(i))) return DeviceType(i);
  throw Error(ErrorKind::Value, "has_impl", "device", "'cpu' or 'cuda'", "'" + s + "'");
}

DType parse_dtype(const std::string& s) {
  for (int i = 0; i < kNumDTypes; ++i)
    if (s == dtype_name(DType(i))) return DType(i);
  throw Error(ErrorKind::Value, "has_impl", "dtype", "'float32', 'float16' or 'bfloat16'",
              "'" + s + "'");
}

}  // namespace

NB_MODULE(_ext, m) {
  m.doc() = "loraops' compiled core (private: use the loraops package)";
  m.attr("__version__") = LORAOPS_VERSION;

  g_unsupported = PyErr_NewExceptionWithDoc(
      "loraops.UnsupportedError",
      "The asked-for implementation of an op does not exist for this device and dtype "
      "(never silently replaced by another one).",
      PyExc_NotImplementedError, nullptr);
  m.attr("UnsupportedError") = nb::handle(g_unsupported);  // the module keeps a reference

  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const Error& e) {
      raise(e);
    }
  });

  m.def("built_with_cuda", &built_with_cuda);
  m.def("built_with_blas", &built_with_blas);
  m.def(
      "has_impl",
      [](const std::string& op, const std::string& device, const std::string& impl,
         const std::string& dtype) {
        Impl i;
        try {
          i = parse_impl(impl);
        } catch (const Error& e) {
          throw Error(e.kind(), "has_impl", e.argument(), e.expected(), e.got());
        }
        std::string why;
        const bool ok = has_impl(op, parse_device(device), i, parse_dtype(dtype), &why);
        return std::make_pair(ok, ok ? std::string() : why);
      },
      nb::arg("op"), nb::arg("device"), nb::arg("impl"), nb::arg("dtype"),
      "(exists, why not) for one op/device/impl/dtype");

  m.def("register_torch", &loraops::py::register_torch, nb::arg("tensor"), nb::arg("parameter"),
        nb::arg("dtypes"), nb::arg("strided"), nb::arg("empty"), nb::arg("fallback"),
        "torch objects for reading torch tensors directly (called once by loraops._frameworks)");

  loraops::py::bind_rows(m);
  loraops::py::bind_linalg(m);
}
