// The CPU backend's kernels, one function per (op, implementation). Registered in register.cpp.
//   reference: plain loops, fp64 accumulation, any strides: the oracle every test compares to.
//   custom:    our own vectorisable, OpenMP-parallel kernels, fp32 accumulation.
//   vendor:    the matrix work through a BLAS (sgemm); only built with a BLAS.
// float16/bfloat16 are converted per element to float (fp64 in the reference).
#pragma once

#include "core/params.hpp"

namespace loraops::cpu {

using detail::AttentionParams;
using detail::LoraBackwardParams;
using detail::LoraForwardParams;
using detail::MatmulParams;
using detail::RowParams;

// reference_rows.cpp
void softmax_reference(const RowParams& p, void* stream);
void rms_norm_reference(const RowParams& p, void* stream);
void layer_norm_reference(const RowParams& p, void* stream);
void activation_reference(const RowParams& p, void* stream);
// custom_rows.cpp
void softmax_custom(const RowParams& p, void* stream);
void rms_norm_custom(const RowParams& p, void* stream);
void layer_norm_custom(const RowParams& p, void* stream);
void activation_custom(const RowParams& p, void* stream);

// reference_linalg.cpp
void matmul_reference(const MatmulParams& p, void* stream);
void lora_forward_reference(const LoraForwardParams& p, void* stream);
void lora_backward_reference(const LoraBackwardParams& p, void* stream);
void attention_reference(const AttentionParams& p, void* stream);
// custom_linalg.cpp (matmul, LoRA) and custom_attention.cpp
void matmul_custom(const MatmulParams& p, void* stream);
void lora_forward_custom(const LoraForwardParams& p, void* stream);
void lora_backward_custom(const LoraBackwardParams& p, void* stream);
void attention_custom(const AttentionParams& p, void* stream);
#if LORAOPS_WITH_BLAS
// vendor_blas.cpp
void matmul_vendor(const MatmulParams& p, void* stream);
void lora_forward_vendor(const LoraForwardParams& p, void* stream);
void lora_backward_vendor(const LoraBackwardParams& p, void* stream);
void attention_vendor(const AttentionParams& p, void* stream);
#endif

}  // namespace loraops::cpu
