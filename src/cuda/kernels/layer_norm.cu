// STUB: to be implemented.
#include "cuda/kernels.hpp"
#include "loraops/error.hpp"

namespace loraops::cuda {

void layer_norm_custom(const detail::RowParams&, void*) {
  throw Error(ErrorKind::Unsupported, "layer_norm_custom", "impl", "an implementation", "a stub");
}

}  // namespace loraops::cuda
