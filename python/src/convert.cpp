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

}  // namespace

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
  nb::list dims;
  for (int d = 0; d < shape.ndim; ++d) dims.append(shape.dims[size_t(d)]);
  nb::object obj = alloc_(nb::tuple(dims), dtype_name(like.dtype));
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
