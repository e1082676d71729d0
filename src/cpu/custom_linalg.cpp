// STUB: to be implemented.
#include "cpu/kernels.hpp"
#include "loraops/error.hpp"

namespace loraops::cpu {

void matmul_custom(const MatmulParams&, void*) {
  throw Error(ErrorKind::Unsupported, "matmul_custom", "impl", "an implementation", "a stub");
}

void lora_forward_custom(const LoraForwardParams&, void*) {
  throw Error(ErrorKind::Unsupported, "lora_forward_custom", "impl", "an implementation", "a stub");
}

void lora_backward_custom(const LoraBackwardParams&, void*) {
  throw Error(ErrorKind::Unsupported, "lora_backward_custom", "impl", "an implementation", "a stub");
}

}  // namespace loraops::cpu
