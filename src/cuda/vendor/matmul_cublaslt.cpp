// STUB: to be implemented.
#include "cuda/kernels.hpp"
#include "loraops/error.hpp"

namespace loraops::cuda {

void matmul_vendor(const detail::MatmulParams&, void*) {
  throw Error(ErrorKind::Unsupported, "matmul_vendor", "impl", "an implementation", "a stub");
}

}  // namespace loraops::cuda
