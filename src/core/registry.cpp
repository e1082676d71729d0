#include "core/registry.hpp"

#include <string>

#include "core/backends.hpp"

namespace loraops::detail {

const char* op_name(OpId op) {
  static constexpr const char* names[kNumOps] = {"matmul",     "softmax",      "rms_norm",
                                                 "layer_norm", "activation",   "lora_forward",
                                                 "lora_backward", "attention"};
  return names[size_t(op)];
}

Registry& Registry::get() {
  // Function-local static: thread-safe one-time fill, no static-initialisation-order games and no
  // registration objects that a static link could drop.
  static Registry reg = [] {
    Registry r;
    cpu::register_kernels(r);
#if LORAOPS_WITH_CUDA
    cuda::register_kernels(r);
#else
    for (int op = 0; op < kNumOps; ++op)
      for (int i = 1; i < kNumImpls; ++i)
        r.absent(OpId(op), DeviceType::CUDA, Impl(i), "this build of loraops has no CUDA backend");
#endif
    return r;
  }();
  return reg;
}

void throw_unsupported(OpId op, Device device, DType dtype, Impl impl, const Entry& entry) {
  std::string got = std::string(impl_name(impl)) + " on " + device_type_name(device.type);
  if (entry.fn) {
    got += " for " + std::string(dtype_name(dtype)) + " (that implementation has no " +
           dtype_name(dtype) + " kernel)";
  } else {
    got += std::string(": ") + (entry.absent ? entry.absent : "not implemented");
  }
  throw Error(ErrorKind::Unsupported, op_name(op), "impl", "an implementation that exists", got);
}

}  // namespace loraops::detail
