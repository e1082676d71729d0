// The CUDA backend's table. Today: the custom activation kernel (the path from the API to a
// launch on the caller's stream); every other entry is a registered absence until its issue lands.
#include "core/backends.hpp"
#include "cuda/kernels.hpp"

namespace loraops::cuda {

using detail::OpId;

void register_kernels(detail::Registry& reg) {
  constexpr auto kCUDA = DeviceType::CUDA;
  constexpr const char* kNotYet = "not implemented on CUDA yet";
  for (int op = 0; op < detail::kNumOps; ++op)
    for (int i = 1; i < kNumImpls; ++i) reg.absent(OpId(op), kCUDA, Impl(i), kNotYet);
  reg.add<detail::RowParams>(OpId::Activation, kCUDA, Impl::Custom, activation_custom);
}

}  // namespace loraops::cuda
