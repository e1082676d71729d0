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

// auto on the CPU, from `loraops bench --suite all --device cpu` (2-core EPYC VM, OpenBLAS 0.3.21
// OpenMP build, 2026-11-29; NOTES.md has the table):
// - matmul and LoRA forward, float32, from 16 rows up: the BLAS (OpenBLAS's packed sgemm beat our
//   kernel by 1.2-1.5x at 16 and 256 rows). Below 16 rows (decode) our kernel, which streams the
//   weight once without packing it (1.4x faster at 1 row). Half dtypes: our kernel, since the BLAS
//   path first converts every operand to fp32 (3-10x slower).
// - LoRA backward and attention: our kernels everywhere (1.3x and 2.5x faster than the sgemm
//   compositions, which materialise more and run serial softmax between BLAS calls).
// - row ops: our kernels (a BLAS has none).
bool blas_wins(DType t, int64_t rows) {
  return LORAOPS_WITH_BLAS && t == DType::Float32 && rows >= 16;
}
Impl choose_matmul(const MatmulParams& p) {
  return blas_wins(p.dtype, p.m) ? Impl::Vendor : Impl::Custom;
}
Impl choose_lora_forward(const LoraForwardParams& p) {
  return blas_wins(p.dtype, p.m) ? Impl::Vendor : Impl::Custom;
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

  // No chooser: custom (LoRA backward, attention, row ops).
  reg.set_chooser<MatmulParams>(OpId::Matmul, kCPU, choose_matmul);
  reg.set_chooser<LoraForwardParams>(OpId::LoraForward, kCPU, choose_lora_forward);
}

}  // namespace loraops::cpu
