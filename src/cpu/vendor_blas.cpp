// STUB: to be implemented.
#include "cpu/kernels.hpp"
#include "loraops/error.hpp"

#if LORAOPS_WITH_BLAS
namespace loraops::cpu {

void matmul_vendor(const MatmulParams&, void*) {
  throw Error(ErrorKind::Unsupported, "matmul_vendor", "impl", "an implementation", "a stub");
}

void lora_forward_vendor(const LoraForwardParams&, void*) {
  throw Error(ErrorKind::Unsupported, "lora_forward_vendor", "impl", "an implementation", "a stub");
}

void lora_backward_vendor(const LoraBackwardParams&, void*) {
  throw Error(ErrorKind::Unsupported, "lora_backward_vendor", "impl", "an implementation", "a stub");
}

void attention_vendor(const AttentionParams&, void*) {
  throw Error(ErrorKind::Unsupported, "attention_vendor", "impl", "an implementation", "a stub");
}

}  // namespace loraops::cpu
#endif
