// STUB: to be implemented.
#include "cpu/kernels.hpp"
#include "loraops/error.hpp"

namespace loraops::cpu {

void attention_custom(const AttentionParams&, void*) {
  throw Error(ErrorKind::Unsupported, "attention_custom", "impl", "an implementation", "a stub");
}

}  // namespace loraops::cpu
