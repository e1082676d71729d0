// STUB: to be implemented.
#include "cpu/kernels.hpp"
#include "loraops/error.hpp"

namespace loraops::cpu {

void softmax_custom(const RowParams&, void*) {
  throw Error(ErrorKind::Unsupported, "softmax_custom", "impl", "an implementation", "a stub");
}

void rms_norm_custom(const RowParams&, void*) {
  throw Error(ErrorKind::Unsupported, "rms_norm_custom", "impl", "an implementation", "a stub");
}

void layer_norm_custom(const RowParams&, void*) {
  throw Error(ErrorKind::Unsupported, "layer_norm_custom", "impl", "an implementation", "a stub");
}

void activation_custom(const RowParams&, void*) {
  throw Error(ErrorKind::Unsupported, "activation_custom", "impl", "an implementation", "a stub");
}

}  // namespace loraops::cpu
