// The CUDA backend's launchers, one per (op, implementation); registered in register.cpp.
// Each takes the op's params and the caller's stream (cudaStream_t as void*), never synchronises,
// and throws loraops::Error(Runtime) when a launch fails.
#pragma once

#include "core/params.hpp"

namespace loraops::cuda {

// kernels/activation.cu
void activation_custom(const detail::RowParams& p, void* stream);
// kernels/softmax.cu, kernels/rms_norm.cu, kernels/layer_norm.cu
void softmax_custom(const detail::RowParams& p, void* stream);
void rms_norm_custom(const detail::RowParams& p, void* stream);
void layer_norm_custom(const detail::RowParams& p, void* stream);
// row_launch_switches.cu
// Whether the row ops and activations launch as programmatic dependents of the previous kernel
// (on by default; common.cuh). For loraops_latency, which times both.
void set_dependent_launch(bool on);
// At most `blocks` blocks for the row ops' kernels, register-resident and looped (0: a block per
// row group, the default), so that each block walks several row groups or rows: the grid-stride
// path that only rows past 2^31 - 1 groups take otherwise. For the tests.
void set_row_grid_limit(unsigned blocks);

// vendor/matmul_cublaslt.cpp
void matmul_vendor(const detail::MatmulParams& p, void* stream);

// vendor/lora_cublaslt.cpp: shrink, expand (+bias), base GEMM accumulating (any m).
void lora_forward_vendor(const detail::LoraForwardParams& p, void* stream);
// vendor/lora_backward_cublaslt.cpp: five GEMMs, nothing larger than m x r materialised.
void lora_backward_vendor(const detail::LoraBackwardParams& p, void* stream);
// The same, with grad_x as one folded GEMM (lora_fold.cu) where `fold` and it applies: custom.
void lora_backward_composition(const detail::LoraBackwardParams& p, void* stream, bool fold);
// kernels/lora_decode.cu: one pass over W (m <= kLoraDecodeMaxM).
constexpr int64_t kLoraDecodeMaxM = 64;
void lora_forward_decode(const detail::LoraForwardParams& p, void* stream);
// Whether the decode kernels take their 16-byte-vector paths for these operands (else they fall
// back to element loads: correct, slower).
bool lora_decode_vectorised(const detail::LoraForwardParams& p);
// kernels/fold_shrink.cu: out[m, r] (rows of r, the input dtype) = scale * x[m, k] @ a[r, k].T
// for r <= 64 on tensor cores, and the same unscaled into out_unscaled when set (both rounded
// from one fp32 sum): the fold's shrinks (x@A.T forward, g@B backward). Halves, k % 8 == 0,
// 16-byte-aligned rows (fold_shrink_supported; the caller checks that both have a unit column
// stride).
constexpr int64_t kFoldShrinkMaxR = 64;
struct FoldShrinkArgs {
  const void* x;
  int64_t x_rs, m, k;
  const void* a;
  int64_t a_rs, r;
  void* out;
  float scale = 1.f;
  void* out_unscaled = nullptr;
};
bool fold_shrink_supported(DType t, const void* x, int64_t x_rs, int64_t k, const void* a, int64_t a_rs, int64_t r);
void fold_shrink_product(DType t, const FoldShrinkArgs& s, void* stream);
// kernels/fold_g_pass.cu: the backward's one pass over g [m, n] (m, n > 0, r <= 16): gB = g @ B
// unscaled (rows of ld_gb) and scaled (scale * gB, rows of r), and grad_b = scale * g.T @ t
// ([n, r], rows of r), from B ([n, r], rows of b_rs) and t = x @ A.T ([m, r], rows of t_rs).
// Halves, r and n multiples of 8, 16-byte-aligned rows (fold_g_pass_supported; B's and t's:
// fold_g_pass_reads); scratch: at least fold_g_pass_scratch(m, n) bytes, 256-byte aligned (fp32
// partials). fold_g_pass leaves gB and scale * gB, and grad_b's partials; fold_g_pass_grad_b,
// enqueued after it (on any stream that waits for it, on the same device), adds those into
// grad_b: it reads m, n, r, scale, grad_b and the scratch of the same arguments.
constexpr int64_t kFoldGPassMaxR = 16;
struct FoldGPassArgs {
  const void* g;
  int64_t g_rs, m, n;
  const void* b;
  int64_t b_rs;
  const void* t;
  int64_t t_rs, r;
  float scale;
  void* gb;
  int64_t ld_gb;
  void* sgb;
  void* grad_b;
  void* scratch;
};
bool fold_g_pass_supported(DType t, const void* g, int64_t g_rs, int64_t m, int64_t n, const void* tp, int64_t t_rs,
                           int64_t r);
// Whether rows of r elements at p, rs apart (unit column stride: t, or B) suit the pass as they
// are (else pack them).
bool fold_g_pass_reads(const void* p, int64_t rs, int64_t r);
size_t fold_g_pass_scratch(int64_t m, int64_t n);
void fold_g_pass(DType t, const FoldGPassArgs& a, void* stream);
void fold_g_pass_grad_b(DType t, const FoldGPassArgs& a, void* stream);
// Which kernel computes the fold's shrinks: Auto is the rule in lora_fold.cu (ours or
// cuBLASLt's); the others force one where it applies, for loraops_latency, which times both
// (one process-wide switch, as set_fold_tile). The backward's g@B by the pass over g
// (fold_g_pass, below) does not follow it: set_fold_g_pass(false) turns that off.
enum class FoldShrinkBy { Auto, Ours, CublasLt };
void set_fold_shrink(FoldShrinkBy s);
// kernels/lora_fold.cu: above the decode sizes, the low-rank term folded into the GEMM's K loop
// (CUTLASS; builds without its headers never take it: the *_supported answer false).
bool lora_fold_supported(const detail::LoraForwardParams& p);
// auto takes the fold (forward and backward) from kLoraFoldAutoMinM rows up to rank
// kLoraFoldAutoMaxR (the backward's up to kLoraBackwardFoldAutoMaxR, the rank it was measured
// at). H200, bf16 K = N = 4096 r = 16, interleaved graph replay (NOTES.md, session 16): the fold
// 30.0-31.4 / 111.6 / 451.2 µs at m = 512 / 2048 / 8192 against the composition's 34.9-35.2 /
// 121.0 / 491.7; fwd+bwd at m = 512 / 2048 / 8192 71.8-73.0 / 233.5-242.9 / 900.7-917.2 against
// 79.0-79.8 / 258.4-267.6 / 1030.0-1063.5 (ranges: machines of different calls); session 17, with
// grad_a on the side stream: 66.2 / 235.1 / 901.3 against vendor's 84.3 / 272.6 / 1081.4.
constexpr int64_t kLoraFoldAutoMinM = 512, kLoraFoldAutoMaxR = 64, kLoraBackwardFoldAutoMaxR = 16;
void lora_forward_fold(const detail::LoraForwardParams& p, void* stream);
// The backward's custom steps, in lora_backward_fold_scratch(p) bytes of 256-byte-aligned scratch
// (g: m rows of n, unit column stride, 16-byte rows; gB: [m, r] unscaled, rows of ld_gb):
//   lora_backward_fold_gb      gB = g @ B and scale*gB (in the scratch): with grad_b's partials
//                              from the same pass over g by fold_g_pass (given t = x @ A.T, rows
//                              of t_rs, or null: GbAndGradB), else by fold_shrink_product (Gb;
//                              None: neither applies, gB is the caller's to compute)
//   lora_backward_fold_grad_b  after GbAndGradB: adds grad_b's partials into grad_b (on any
//                              stream that waits for lora_backward_fold_gb's work)
//   lora_backward_fold_grad_x  grad_x = [g | scale*gB] @ [W ; A] (scaled_gb: after
//                              lora_backward_fold_gb) or [g | gB] @ [W ; scale*A], one GEMM
// _supported checks everything but g and t.
enum class FoldGb { None, Gb, GbAndGradB };
bool lora_backward_fold_supported(const detail::LoraBackwardParams& p);
int64_t lora_backward_fold_scratch(const detail::LoraBackwardParams& p);
FoldGb lora_backward_fold_gb(const detail::LoraBackwardParams& p, const void* g, int64_t g_rs, void* gb,
                             int64_t ld_gb, const void* t, int64_t t_rs, void* scratch, void* stream);
void lora_backward_fold_grad_b(const detail::LoraBackwardParams& p, void* scratch, void* stream);
// Whether lora_backward_fold_gb may take fold_g_pass (default on; loraops_latency times both).
void set_fold_g_pass(bool on);
void lora_backward_fold_grad_x(const detail::LoraBackwardParams& p, const void* g, int64_t g_rs, const void* gb,
                               int64_t ld_gb, bool scaled_gb, void* scratch, void* stream);

// kernels/attention.cu: one query row goes to the decode kernels below
// (attention_decode_eligible); else a flash forward on tensor cores (warpgroup MMAs at D = 128
// with Sq > 64, mma.sync otherwise) for float16/bfloat16 with D = 64 or 128, 16-byte-aligned unit-stride rows
// and a positive scale (attention_flash_eligible); a warp per query row (fp32 math) for
// everything else.
void attention_custom(const detail::AttentionParams& p, void* stream);
bool attention_flash_eligible(const detail::AttentionParams& p);
// The flash kernels: on mma.sync with 64-row blocks (one 16-row tile a warp) or 128-row blocks
// (two), or on warpgroup MMAs (wgmma) with 128-row blocks; Auto: attention_custom's choice.
enum class FlashKernel { Auto, Mma64, Mma128, Wgmma };
// One flash kernel, whatever attention_custom would pick: for the tests and loraops_latency, which
// compare them. head_group (causal): at most how many (head, batch) pairs go heaviest first
// together (0: the kernel's choice). Throws UnsupportedError where attention_flash_eligible is false.
void attention_flash_with(const detail::AttentionParams& p, void* stream, FlashKernel kernel, int64_t head_group = 0);
// kernels/attention_decode.cu: one query row (Sq = 1), D = 64 or 128, unit-stride rows: the
// split-K decode kernels (taken before the flash kernel) — on tensor cores for float16/bfloat16
// with 16-byte-aligned rows, any group size; else the SIMT kernel (at most 8 query heads per
// key/value head). attention_decode_eligible: one of them takes p.
enum class DecodeKernel { Auto, TensorCore, Simt };
// How the tensor-core kernel's splits are merged: Auto, by the grid's last block of each head
// group where there are at most 16 splits and counters are free for it (arrival_slots.hpp), else
// by the combine kernel launched after it; Kernel, always by the combine kernel (the SIMT kernel
// always uses it).
enum class DecodeMerge { Auto, Kernel };
bool attention_decode_eligible(const detail::AttentionParams& p);
bool attention_decode_takes(const detail::AttentionParams& p, DecodeKernel kernel);
// The given decode kernel (Auto: what attention_custom picks), for the tests and loraops_latency;
// tiles_per_split > 0 sets the tensor-core kernel's split length in 64-key tiles (0: its own
// choice). Throws UnsupportedError where attention_decode_takes is false.
void attention_decode_with(const detail::AttentionParams& p, void* stream, DecodeKernel kernel,
                           int tiles_per_split = 0, DecodeMerge merge = DecodeMerge::Auto);

}  // namespace loraops::cuda
