// Names, parsing and introspection shared by all ops.
#include <string>

#include "core/registry.hpp"
#include "loraops/ops.hpp"

namespace loraops {

const char* impl_name(Impl impl) {
  switch (impl) {
    case Impl::Auto: return "auto";
    case Impl::Vendor: return "vendor";
    case Impl::Custom: return "custom";
    case Impl::Reference: return "reference";
  }
  return "?";
}

Impl parse_impl(std::string_view name) {
  for (int i = 0; i < kNumImpls; ++i)
    if (name == impl_name(Impl(i))) return Impl(i);
  throw Error(ErrorKind::Value, "loraops", "impl", "one of auto, vendor, custom, reference",
              "'" + std::string(name) + "'");
}

const char* activation_name(Activation kind) {
  static constexpr const char* names[kNumActivations] = {"relu", "sigmoid",   "tanh",
                                                         "gelu", "gelu_tanh", "silu"};
  return unsigned(kind) < unsigned(kNumActivations) ? names[size_t(kind)] : "?";
}

Activation parse_activation(std::string_view name) {
  for (int i = 0; i < kNumActivations; ++i)
    if (name == activation_name(Activation(i))) return Activation(i);
  throw Error(ErrorKind::Value, "activation", "kind",
              "one of relu, sigmoid, tanh, gelu, gelu_tanh, silu", "'" + std::string(name) + "'");
}

bool has_impl(std::string_view op, DeviceType device, Impl impl, DType dtype, std::string* why) {
  const auto& reg = detail::Registry::get();
  for (int o = 0; o < detail::kNumOps; ++o) {
    if (op != detail::op_name(detail::OpId(o))) continue;
    for (int i = 1; i < kNumImpls; ++i) {
      if (impl != Impl::Auto && Impl(i) != impl) continue;
      const auto& e = reg.find(detail::OpId(o), device, Impl(i));
      if (e.fn && (e.dtypes & detail::dtype_bit(dtype))) return true;
      if (why) *why = e.fn ? std::string("no ") + dtype_name(dtype) + " kernel"
                           : (e.absent ? e.absent : "not implemented");
    }
    return false;
  }
  if (why) *why = "unknown op '" + std::string(op) + "'";
  return false;
}

bool built_with_cuda() { return LORAOPS_WITH_CUDA != 0; }
bool built_with_blas() { return LORAOPS_WITH_BLAS != 0; }

}  // namespace loraops
