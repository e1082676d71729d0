// STUB: to be implemented.
#include "cpu/kernels.hpp"
#include "loraops/error.hpp"

namespace loraops::cpu {

void matmul_reference(const MatmulParams&, void*) {
  throw Error(ErrorKind::Unsupported, "matmul_reference", "impl", "an implementation", "a stub");
}

void lora_forward_reference(const LoraForwardParams&, void*) {
  throw Error(ErrorKind::Unsupported, "lora_forward_reference", "impl", "an implementation", "a stub");
}

void lora_backward_reference(const LoraBackwardParams&, void*) {
  throw Error(ErrorKind::Unsupported, "lora_backward_reference", "impl", "an implementation", "a stub");
}

void attention_reference(const AttentionParams&, void*) {
  throw Error(ErrorKind::Unsupported, "attention_reference", "impl", "an implementation", "a stub");
}

}  // namespace loraops::cpu
