// STUB: to be implemented.
#include "cpu/kernels.hpp"
#include "loraops/error.hpp"

namespace loraops::cpu {

void softmax_reference(const RowParams&, void*) {
  throw Error(ErrorKind::Unsupported, "softmax_reference", "impl", "an implementation", "a stub");
}

void rms_norm_reference(const RowParams&, void*) {
  throw Error(ErrorKind::Unsupported, "rms_norm_reference", "impl", "an implementation", "a stub");
}

void layer_norm_reference(const RowParams&, void*) {
  throw Error(ErrorKind::Unsupported, "layer_norm_reference", "impl", "an implementation", "a stub");
}

void activation_reference(const RowParams&, void*) {
  throw Error(ErrorKind::Unsupported, "activation_reference", "impl", "an implementation", "a stub");
}

}  // namespace loraops::cpu
