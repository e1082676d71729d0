// The CPU backend's table: which implementation of each op exists, and what `auto` runs.
#include "core/backends.hpp"
#include "cpu/kernels.hpp"

namespace loraops::cpu {

using detail::OpId;
using detail::Registry;

namespace {

constexpr auto kCPU = DeviceType::CPU;
constexpr const char* kNoVendorRowOp =
    "a BLAS has no such operation (the CPU vendor path covers matmul, LoRA and attention only)";
constexpr const char* kNoBlas = "this build of loraops found no BLAS (see README: Building)";

// auto on the CPU:
// - matmul and attention: the BLAS when built with one (OpenBLAS's packed, hand-written sgemm
//   beats our blocked loops at every size we measured), else our kernel.
// - LoRA: the BLAS composition once there are enough rows for a GEMM to pay (>= 16); below that
//   (decode) our kernel, which reads x once and streams the weight once per row block.
// - row ops: our kernels (the only fast path there is).
Impl choose_matmul(const MatmulParams&) { return LORAOPS_WITH_BLAS ? Impl::Vendor : Impl::Custom; }
Impl choose_attention(const AttentionParams&) {
  return LORAOPS_WITH_BLAS ? Impl::Vendor : Impl::Custom;
}
Impl choose_lora_forward(const LoraForwardParams& p) {
  return LORAOPS_WITH_BLAS && p.m >= 16 ? Impl::Vendor : Impl::Custom;
}
Impl choose_lora_backward(const LoraBackwardParams& p) {
  return LORAOPS_WITH_BLAS && p.m >= 16 ? Impl::Vendor : Impl::Custom;
}

}  // namespace

void register_kernels(Registry& reg) {
  reg.add<RowParams>(OpId::Softmax, kCPU, Impl::Reference, softmax_reference);
  reg.add<RowParams>(OpId::Softmax, kCPU, Impl::Custom, softmax_custom);
  reg.absent(OpId::Softmax, kCPU, Impl::Vendor, kNoVendorRowOp);
  reg.add<RowParams>(OpId::RmsNorm, kCPU, Impl::Reference, rms_norm_reference);
  reg.add<RowParams>(OpId::RmsNorm, kCPU, Impl::Custom, rms_norm_custom);
  reg.absent(OpId::RmsNorm, kCPU, Impl::Vendor, kNoVendorRowOp);
  reg.add<RowParams>(OpId::LayerNorm, kCPU, Impl::Reference, layer_norm_reference);
  reg.add<RowParams>(OpId::LayerNorm, kCPU, Impl::Custom, layer_norm_custom);
  reg.absent(OpId::LayerNorm, kCPU, Impl::Vendor, kNoVendorRowOp);
  reg.add<RowParams>(OpId::Activation, kCPU, Impl::Reference, activation_reference);
  reg.add<RowParams>(OpId::Activation, kCPU, Impl::Custom, activation_custom);
  reg.absent(OpId::Activation, kCPU, Impl::Vendor, kNoVendorRowOp);

  reg.add<MatmulParams>(OpId::Matmul, kCPU, Impl::Reference, matmul_reference);
  reg.add<MatmulParams>(OpId::Matmul, kCPU, Impl::Custom, matmul_custom);
  reg.add<LoraForwardParams>(OpId::LoraForward, kCPU, Impl::Reference, lora_forward_reference);
  reg.add<LoraForwardParams>(OpId::LoraForward, kCPU, Impl::Custom, lora_forward_custom);
  reg.add<LoraBackwardParams>(OpId::LoraBackward, kCPU, Impl::Reference, lora_backward_reference);
  reg.add<LoraBackwardParams>(OpId::LoraBackward, kCPU, Impl::Custom, lora_backward_custom);
  reg.add<AttentionParams>(OpId::Attention, kCPU, Impl::Reference, attention_reference);
  reg.add<AttentionParams>(OpId::Attention, kCPU, Impl::Custom, attention_custom);
#if LORAOPS_WITH_BLAS
  reg.add<MatmulParams>(OpId::Matmul, kCPU, Impl::Vendor, matmul_vendor);
  reg.add<LoraForwardParams>(OpId::LoraForward, kCPU, Impl::Vendor, lora_forward_vendor);
  reg.add<LoraBackwardParams>(OpId::LoraBackward, kCPU, Impl::Vendor, lora_backward_vendor);
  reg.add<AttentionParams>(OpId::Attention, kCPU, Impl::Vendor, attention_vendor);
#else
  for (OpId op : {OpId::Matmul, OpId::LoraForward, OpId::LoraBackward, OpId::Attention})
    reg.absent(op, kCPU, Impl::Vendor, kNoBlas);
#endif

  reg.set_chooser<MatmulParams>(OpId::Matmul, kCPU, choose_matmul);
  reg.set_chooser<AttentionParams>(OpId::Attention, kCPU, choose_attention);
  reg.set_chooser<LoraForwardParams>(OpId::LoraForward, kCPU, choose_lora_forward);
  reg.set_chooser<LoraBackwardParams>(OpId::LoraBackward, kCPU, choose_lora_backward);
}

}  // namespace loraops::cpu
