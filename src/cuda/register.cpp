// The CUDA backend's table: what exists on CUDA, and what `auto` runs there. Entries not added
// here are registered absences ("not implemented on CUDA yet") until their issue lands.
#include "core/backends.hpp"
#include "cuda/kernels.hpp"
#include "cuda/vendor/attention_cudnn.hpp"
#include "cuda/vendor/rows_cudnn.hpp"

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
  // vendor row ops: cuDNN's graph API where it has the operation (auto stays on ours); softmax it
  // has only inside its fused attention.
  reg.absent(OpId::Softmax, kCUDA, Impl::Vendor,
             "the graph API of the cuDNN this build uses has no softmax operation (only inside its fused attention)");
#if LORAOPS_WITH_CUDNN
  reg.add<detail::RowParams>(OpId::RmsNorm, kCUDA, Impl::Vendor, rms_norm_vendor);
  reg.add<detail::RowParams>(OpId::LayerNorm, kCUDA, Impl::Vendor, layer_norm_vendor);
  reg.add<detail::RowParams>(OpId::Activation, kCUDA, Impl::Vendor, activation_vendor);
#else
  for (OpId op : {OpId::RmsNorm, OpId::LayerNorm, OpId::Activation})
    reg.absent(op, kCUDA, Impl::Vendor, "this build of loraops has no cuDNN (or no cuDNN frontend headers)");
#endif
  reg.add<detail::MatmulParams>(OpId::Matmul, kCUDA, Impl::Vendor, matmul_vendor);
  reg.add<detail::LoraForwardParams>(OpId::LoraForward, kCUDA, Impl::Vendor, lora_forward_vendor);
  reg.add<detail::LoraBackwardParams>(OpId::LoraBackward, kCUDA, Impl::Vendor,
                                      lora_backward_vendor);
  // attention: our kernels; cuDNN's fused attention as the vendor path when the build has it.
  // auto: cuDNN where it takes the shape (on the H200, 2.3-3.1x our prefill kernel; NOTES.md),
  // except one query row (our split-K decode kernel; a cuDNN plan per new key count would cost a
  // build per decode step), else ours.
  reg.add<detail::AttentionParams>(OpId::Attention, kCUDA, Impl::Custom, attention_custom);
#if LORAOPS_WITH_CUDNN
  reg.add<detail::AttentionParams>(OpId::Attention, kCUDA, Impl::Vendor, attention_vendor,
                                   uint8_t(detail::dtype_bit(DType::Float16) |
                                           detail::dtype_bit(DType::BFloat16)));
  reg.set_chooser<detail::AttentionParams>(OpId::Attention, kCUDA, [](const detail::AttentionParams& p) {
    return p.sq > 1 && attention_cudnn_supports(p) ? Impl::Vendor : Impl::Custom;
  });
#else
  reg.absent(OpId::Attention, kCUDA, Impl::Vendor,
             "this build of loraops has no cuDNN (or no cuDNN frontend headers)");
#endif
  // custom: our decode kernels where y is bound by one read of W; above that the low-rank term
  // folded into the GEMM's K loop where lora_fold_supported, else the cuBLASLt composition.
  reg.add<detail::LoraForwardParams>(
      OpId::LoraForward, kCUDA, Impl::Custom, [](const detail::LoraForwardParams& p, void* s) {
        if (p.m <= kLoraDecodeMaxM) lora_forward_decode(p, s);
        else if (lora_fold_supported(p)) lora_forward_fold(p, s);
        else lora_forward_vendor(p, s);
      });
  // auto: cuBLASLt for matmul (no custom GEMM on CUDA); row ops default to custom.
  reg.set_chooser<detail::MatmulParams>(OpId::Matmul, kCUDA,
                                        [](const detail::MatmulParams&) { return Impl::Vendor; });
  // lora_backward, custom: the composition with grad_x as one folded GEMM where it applies.
  reg.add<detail::LoraBackwardParams>(
      OpId::LoraBackward, kCUDA, Impl::Custom,
      [](const detail::LoraBackwardParams& p, void* s) { lora_backward_composition(p, s, true); });
  // auto: the fold where it measured faster (kernels.hpp: kLoraFoldAutoMinM, kLoraFoldAutoMaxR).
  reg.set_chooser<detail::LoraBackwardParams>(
      OpId::LoraBackward, kCUDA, [](const detail::LoraBackwardParams& p) {
        return p.m >= kLoraFoldAutoMinM && p.r <= kLoraBackwardFoldAutoMaxR && lora_backward_fold_supported(p)
                   ? Impl::Custom
                   : Impl::Vendor;
      });
  // LoRA forward: the decode kernels up to 16 rows in half precision (tensor cores from 2 rows;
  // one row on CUDA cores in every dtype) and up to 4 in float32 (CUDA cores, true fp32), for
  // operands they read as 16-byte vectors; the fold where it measured faster (kernels.hpp);
  // cuBLASLt beyond and for other layouts (the decode kernels' element-load path is not
  // measured). H200, bf16 4096x4096 r16, graph replay with weights rotating past L2: custom 12.1 /
  // 17.2 us at m = 1 / 16 against the composition's 20.8 / 21.1, but 22.5 / 41.8 against 22.0 /
  // 20.2 at m = 32 / 64 (NOTES.md). Above rank 16 only up to 4 rows: at r = 64 (2026-11-30)
  // custom 38.1 against 42.6 us at m = 1 (35.0 on the one-token kernel of 2026-12-01), K = N =
  // 8192, but 64.0 against 42.5 at m = 16 (30.7 against 21.6 at K = N = 4096).
  reg.set_chooser<detail::LoraForwardParams>(
      OpId::LoraForward, kCUDA, [](const detail::LoraForwardParams& p) {
        const int64_t max_m = p.dtype == DType::Float32 ? 4 : p.r <= 16 ? 16 : 4;
        if (p.m <= max_m) return lora_decode_vectorised(p) ? Impl::Custom : Impl::Vendor;
        return p.m >= kLoraFoldAutoMinM && p.r <= kLoraFoldAutoMaxR && lora_fold_supported(p) ? Impl::Custom
                                                                                              : Impl::Vendor;
      });
}

}  // namespace loraops::cuda
