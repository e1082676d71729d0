#include "convert.hpp"

#include <string>

namespace loraops::py {

namespace {

namespace dl = nb::dlpack;

constexpr const char* kTensorWhat = "a DLPack tensor (numpy.ndarray, torch.Tensor, ...)";
constexpr const char* kDTypeWhat = "dtype float32, float16 or bfloat16";

// "list", "None", "torch.Tensor": the name a Python user would write.
std::string python_type_name(nb::handle obj) {
  if (obj.is_none()) return "None";
  nb::handle tp = obj.type();
  std::string name = nb::borrow<nb::str>(nb::getattr(tp, "__qualname__", nb::str("?"))).c_str();
  nb::object mod = nb::getattr(tp, "__module__", nb::none());
  if (nb::isinstance<nb::str>(mod)) {
    std::string m = nb::borrow<nb::str>(mod).c_str();
    if (m != "builtins") name = m + "." + name;
  }
  return name;
}

std::string dlpack_dtype_name(dl::dtype t) {
  std::string s;
  switch (dl::dtype_code(t.code)) {
    case dl::dtype_code::Int: s = "int"; break;
    case dl::dtype_code::UInt: s = "uint"; break;
    case dl::dtype_code::Float: s = "float"; break;
    case dl::dtype_code::Bfloat: s = "bfloat"; break;
    case dl::dtype_code::Complex: s = "complex"; break;
    case dl::dtype_code::Bool: return "bool";
    default: s = "dlpack-type-" + std::to_string(t.code) + "-"; break;
  }
  s += std::to_string(t.bits);
  if (t.lanes != 1) s += "x" + std::to_string(t.lanes);
  return s;
}

// The DLPack dtype as ours; `bf16` reads a uint16 buffer as bfloat16.
bool to_dtype(dl::dtype t, bool bf16, DType* out) {
  if (t.lanes != 1) return false;
  if (t.code == uint8_t(dl::dtype_code::Float) && t.bits == 32) return *out = DType::Float32, true;
  if (t.code == uint8_t(dl::dtype_code::Float) && t.bits == 16) return *out = DType::Float16, true;
  if (t.code == uint8_t(dl::dtype_code::Bfloat) && t.bits == 16) return *out = DType::BFloat16, true;
  if (bf16 && t.code == uint8_t(dl::dtype_code::UInt) && t.bits == 16)
    return *out = DType::BFloat16, true;
  return false;
}

const char* dlpack_device_name(int type) {
  switch (type) {
    case 4: return "opencl";
    case 7: return "vulkan";
    case 8: return "metal";
    case 9: return "vpi";
    case 10: return "rocm";
    case 11: return "rocm_host";
    case 14: return "oneapi";
    case 15: return "webgpu";
    case 16: return "hexagon";
    default: return "unknown";
  }
}

// ---- torch.Tensor, read directly ---------------------------------------------------------
// Reading a tensor's dtype, layout, device, data_ptr(), shape and stride() costs a fraction of a
// microsecond; exporting it through DLPack (to_dlpack in Python, then nanobind's import) costs
// several, which is most of a small op's time. Only plain tensors take this path (exactly
// torch.Tensor or nn.Parameter, strided, on cpu/cuda, of our dtypes, not a lazily negated view);
// anything else goes to loraops._frameworks._torch_capsule, which raises or exports it through
// DLPack as before, so errors and exotic tensors behave exactly as they did.

struct Torch {
  PyTypeObject* tensor;
  PyTypeObject* parameter;
  PyObject* dtypes[kNumDTypes];  // torch.float32, torch.float16, torch.bfloat16, in DType order
  PyObject* strided;
  PyObject* empty;
  PyObject* fallback;       // _torch_capsule(op, arg, tensor) -> DLPack capsule, or raises
  PyObject* empty_kwnames;  // ("dtype", "device")
  PyObject *s_dtype, *s_layout, *s_is_neg, *s_is_cuda, *s_is_cpu, *s_get_device, *s_data_ptr,
      *s_shape, *s_stride, *s_device;
};
// Set once and never freed: torch cannot be unloaded, so these references live as long as it.
const Torch* g_torch = nullptr;

// An owned reference that may be null (a failed C API call).
struct Ref {
  PyObject* p;
  explicit Ref(PyObject* o) : p(o) {}
  Ref(const Ref&) = delete;
  ~Ref() { Py_XDECREF(p); }
};

bool is_torch_tensor(nb::handle obj) {
  return g_torch && PyObject_TypeCheck(obj.ptr(), g_torch->tensor);
}

// Fills *t from a plain torch tensor; false (no Python error left set) for anything else.
bool torch_view(nb::handle h, Tensor* t) {
  const Torch& T = *g_torch;
  PyObject* obj = h.ptr();
  if (Py_TYPE(obj) != T.tensor && Py_TYPE(obj) != T.parameter) return false;  // subclasses
  bool ok = false;
  {
    Ref dtype(PyObject_GetAttr(obj, T.s_dtype));
    int k = 0;
    while (k < kNumDTypes && dtype.p != T.dtypes[k]) ++k;
    if (k == kNumDTypes) goto done;
    t->dtype = DType(k);
    Ref layout(PyObject_GetAttr(obj, T.s_layout));
    Ref neg(PyObject_CallMethodNoArgs(obj, T.s_is_neg));
    if (layout.p != T.strided || neg.p != Py_False) goto done;
    Ref cuda(PyObject_GetAttr(obj, T.s_is_cuda));
    if (cuda.p == Py_True) {
      Ref index(PyObject_CallMethodNoArgs(obj, T.s_get_device));
      if (!index.p) goto done;
      t->device = {DeviceType::CUDA, int(PyLong_AsLong(index.p))};
    } else {
      Ref cpu(PyObject_GetAttr(obj, T.s_is_cpu));
      if (cpu.p != Py_True) goto done;  // meta, mps, ...: the fallback names the device
      t->device = {DeviceType::CPU, 0};
    }
    Ref ptr(PyObject_CallMethodNoArgs(obj, T.s_data_ptr));
    Ref shape(PyObject_GetAttr(obj, T.s_shape));  // torch.Size, a tuple
    Ref stride(PyObject_CallMethodNoArgs(obj, T.s_stride));
    if (!ptr.p || !shape.p || !stride.p || !PyTuple_Check(shape.p) || !PyTuple_Check(stride.p))
      goto done;
    const Py_ssize_t ndim = PyTuple_GET_SIZE(shape.p);
    if (ndim > kMaxDims || PyTuple_GET_SIZE(stride.p) != ndim) goto done;
    t->data = PyLong_AsVoidPtr(ptr.p);
    t->ndim = int(ndim);
    for (Py_ssize_t d = 0; d < ndim; ++d) {
      t->shape[size_t(d)] = PyLong_AsLongLong(PyTuple_GET_ITEM(shape.p, d));
      t->strides[size_t(d)] = PyLong_AsLongLong(PyTuple_GET_ITEM(stride.p, d));
    }
    ok = true;
  }
done:
  if (PyErr_Occurred()) {  // a getter that raised (no storage, ...): let the fallback say it
    PyErr_Clear();
    ok = false;
  }
  return ok;
}

// torch.empty(*shape, dtype=dtype, device=like.device): the sizes as separate ints, which
// torch parses faster than a tuple (~0.7 us less); a 0-d shape goes as the empty tuple.
nb::object torch_empty(nb::handle like, nb::handle shape, DType dtype) {
  const Torch& T = *g_torch;
  Ref device(PyObject_GetAttr(like.ptr(), T.s_device));
  if (!device.p) throw nb::python_error();
  const Py_ssize_t ndim = PyTuple_GET_SIZE(shape.ptr());
  PyObject* args[kMaxDims + 2];
  Py_ssize_t n = 0;
  if (ndim == 0) args[n++] = shape.ptr();
  for (Py_ssize_t d = 0; d < ndim; ++d) args[n++] = PyTuple_GET_ITEM(shape.ptr(), d);
  args[n] = T.dtypes[int(dtype)];
  args[n + 1] = device.p;
  PyObject* out = PyObject_Vectorcall(T.empty, args, size_t(n), T.empty_kwnames);
  if (!out) throw nb::python_error();
  return nb::steal(out);
}

}  // namespace

void register_torch(nb::handle tensor, nb::handle parameter, nb::tuple dtypes, nb::handle strided,
                    nb::handle empty, nb::handle fallback) {
  if (g_torch) return;
  if (!PyType_Check(tensor.ptr()) || !PyType_Check(parameter.ptr()) || dtypes.size() != kNumDTypes)
    throw nb::type_error("register_torch: torch.Tensor, torch.nn.Parameter, 3 dtypes, ...");
  auto keep = [](nb::handle h) { return h.inc_ref().ptr(); };
  auto name = [](const char* s) { return PyUnicode_InternFromString(s); };
  Torch* T = new Torch;
  T->tensor = reinterpret_cast<PyTypeObject*>(keep(tensor));
  T->parameter = reinterpret_cast<PyTypeObject*>(keep(parameter));
  for (int k = 0; k < kNumDTypes; ++k) T->dtypes[k] = keep(dtypes[size_t(k)]);
  T->strided = keep(strided);
  T->empty = keep(empty);
  T->fallback = keep(fallback);
  T->empty_kwnames = nb::make_tuple("dtype", "device").release().ptr();
  T->s_dtype = name("dtype");
  T->s_layout = name("layout");
  T->s_is_neg = name("is_neg");
  T->s_is_cuda = name("is_cuda");
  T->s_is_cpu = name("is_cpu");
  T->s_get_device = name("get_device");
  T->s_data_ptr = name("data_ptr");
  T->s_shape = name("shape");
  T->s_stride = name("stride");
  T->s_device = name("device");
  g_torch = T;
}

void type_error(const char* op, const char* arg, const char* what, nb::handle obj) {
  throw Error(ErrorKind::Type, op, arg, what, python_type_name(obj));
}

Call::Call(const char* op, nb::handle impl, nb::handle alloc, uintptr_t stream, nb::handle bf16)
    : op_(op), alloc_(alloc), bf16_(bf16) {
  if (!nb::isinstance<nb::str>(impl)) type_error(op, "impl", "a str", impl);
  try {
    exec_.impl = parse_impl(nb::borrow<nb::str>(impl).c_str());
  } catch (const Error& e) {  // the core names no op here; this call knows it
    throw Error(e.kind(), op, e.argument(), e.expected(), e.got());
  }
  exec_.stream = reinterpret_cast<void*>(stream);
}

bool Call::is_bf16_arg(const char* arg) const {
  if (!bf16_.is_valid() || bf16_.is_none()) return false;
  for (nb::handle name : bf16_)
    if (nb::isinstance<nb::str>(name) && std::string_view(nb::borrow<nb::str>(name).c_str()) == arg)
      return true;
  return false;
}

Tensor Call::to_tensor(const char* arg, nb::handle obj, bool writable, bool bf16) {
  nb::object exported;  // a torch tensor's DLPack capsule, from the fallback
  if (!writable && is_torch_tensor(obj)) {
    Tensor t;
    if (torch_view(obj, &t)) return t;
    exported = nb::steal(PyObject_CallFunction(g_torch->fallback, "ssO", op_, arg, obj.ptr()));
    if (!exported.is_valid()) throw nb::python_error();
    obj = exported;
  }
  dl::dltensor dt;
  if (writable) {
    nb::ndarray<> a;
    if (!nb::try_cast(obj, a, false) || !a.is_valid()) {
      PyErr_Clear();
      throw Error(ErrorKind::Runtime, op_, arg, "the allocator to return a DLPack tensor",
                  python_type_name(obj));
    }
    dt = {a.data(), {a.device_type(), a.device_id()}, int32_t(a.ndim()), a.dtype(),
          const_cast<int64_t*>(a.shape_ptr()), const_cast<int64_t*>(a.stride_ptr()), 0};
    keep_out_.push_back(std::move(a));
  } else {
    nb::ndarray<nb::ro> a;
    if (!nb::try_cast(obj, a, false) || !a.is_valid()) {
      // A failed buffer-protocol fallback inside the import can leave its error set.
      PyErr_Clear();
      // Arrays whose dtype DLPack cannot carry (object arrays, ml_dtypes' float8, ...) end up
      // here too; say it is the dtype, not the kind of object, that is wrong.
      if (!obj.is_none() && nb::hasattr(obj, "dtype") && nb::hasattr(obj, "shape")) {
        nb::object dtype = obj.attr("dtype");
        std::string got = nb::str(nb::handle(dtype)).c_str();  // str(dtype), not a cast
        if (got.rfind("torch.", 0) == 0) got.erase(0, 6);
        bool supported = false;
        for (int i = 0; i < kNumDTypes; ++i) supported = supported || got == dtype_name(DType(i));
        if (!supported) throw Error(ErrorKind::Type, op_, arg, kDTypeWhat, got);
        // A dtype we take, so the object itself would not export (a device DLPack cannot name,
        // a framework-specific flag, ...).
        throw Error(ErrorKind::Type, op_, arg, kTensorWhat,
                    python_type_name(obj) + " of dtype " + got + " that DLPack could not export");
      }
      type_error(op_, arg, kTensorWhat, obj);
    }
    dt = {const_cast<void*>(a.data()), {a.device_type(), a.device_id()}, int32_t(a.ndim()),
          a.dtype(), const_cast<int64_t*>(a.shape_ptr()), const_cast<int64_t*>(a.stride_ptr()), 0};
    keep_in_.push_back(std::move(a));
  }

  Tensor t;
  if (!to_dtype(dt.dtype, bf16, &t.dtype))
    throw Error(ErrorKind::Type, op_, arg, kDTypeWhat, dlpack_dtype_name(dt.dtype));
  switch (dt.device.device_type) {
    case 1:  // kDLCPU
    case 3:  // kDLCUDAHost: pinned host memory, read by the CPU backend like any host memory
      t.device = {DeviceType::CPU, 0};
      break;
    case 2:   // kDLCUDA
    case 13:  // kDLCUDAManaged
      t.device = {DeviceType::CUDA, dt.device.device_id};
      break;
    default:
      throw Error(ErrorKind::Value, op_, arg, "a cpu or cuda tensor",
                  std::string("a tensor on device type ") + dlpack_device_name(dt.device.device_type));
  }
  if (dt.ndim > kMaxDims)
    throw Error(ErrorKind::Value, op_, arg, "rank 0.." + std::to_string(kMaxDims),
                "rank " + std::to_string(dt.ndim));
  t.data = dt.data;
  t.ndim = dt.ndim;
  for (int d = 0; d < dt.ndim; ++d) {
    t.shape[size_t(d)] = dt.shape[d];
    t.strides[size_t(d)] = dt.strides[d];  // nanobind fills strides in (elements) when absent
  }
  return t;
}

Tensor Call::input(const char* arg, nb::handle obj) {
  return to_tensor(arg, obj, false, is_bf16_arg(arg));
}

bool Call::optional_input(const char* arg, nb::handle obj, Tensor* out) {
  if (obj.is_none()) return false;
  *out = input(arg, obj);
  return true;
}

nb::object Call::output(const char* arg, const Shape& shape, const Tensor& like, Tensor* t) {
  nb::object dims = nb::steal(PyTuple_New(shape.ndim));
  if (!dims.is_valid()) throw nb::python_error();
  for (int d = 0; d < shape.ndim; ++d) {
    PyObject* n = PyLong_FromLongLong(shape.dims[size_t(d)]);
    if (!n) throw nb::python_error();
    PyTuple_SET_ITEM(dims.ptr(), d, n);
  }
  if (is_torch_tensor(alloc_)) {  // torch outputs: made here, with no call back into Python
    nb::object obj = torch_empty(alloc_, dims, like.dtype);
    if (!torch_view(obj, t))
      throw Error(ErrorKind::Runtime, op_, arg, "torch.empty to return a plain tensor",
                  python_type_name(obj));
    return obj;
  }
  nb::object obj = alloc_(dims, dtype_name(like.dtype));
  // An allocator without a bfloat16 of its own (numpy) hands back a uint16 view of its
  // bfloat16 array; that is what we asked for, so read it as such.
  *t = to_tensor(arg, obj, true, like.dtype == DType::BFloat16);
  return obj;
}

Activation activation_arg(nb::handle kind) {
  if (!nb::isinstance<nb::str>(kind)) type_error("activation", "kind", "a str", kind);
  return parse_activation(nb::borrow<nb::str>(kind).c_str());
}

}  // namespace loraops::py
