// The CUDA backend's table: what exists on CUDA, and what `auto` runs there. Entries not added
// here are registered absences ("not implemented on CUDA yet") until their issue lands.
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
  reg.add<detail::RowParams>(OpId::Softmax, kCUDA, Impl::Custom, softmax_custom);
  reg.add<detail::RowParams>(OpId::RmsNorm, kCUDA, Impl::Custom, rms_norm_custom);
  reg.add<detail::RowParams>(OpId::LayerNorm, kCUDA, Impl::Custom, layer_norm_custom);
  reg.add<detail::MatmulParams>(OpId::Matmul, kCUDA, Impl::Vendor, matmul_vendor);
  // auto: cuBLASLt for matmul (no custom GEMM on CUDA); row ops default to custom.
  reg.set_chooser<detail::MatmulParams>(OpId::Matmul, kCUDA,
                                        [](const detail::MatmulParams&) { return Impl::Vendor; });
}

}  // namespace loraops::cuda
